variable "name_prefix" {
  description = "Prefix of every name in the project (servers are <prefix>-<relay>)."
  type        = string
}

variable "relays" {
  description = "The two relays by short name, each with its address on the private subnet."
  type = map(object({
    private_ip = string
  }))

  validation {
    condition     = length(var.relays) == 2
    error_message = "relays must hold exactly two relays, the primary and the standby."
  }
}

variable "primary" {
  description = "The relay the floating IP is assigned to when it is made (a key of relays)."
  type        = string

  validation {
    condition     = contains(keys(var.relays), var.primary)
    error_message = "primary must be one of the relays."
  }
}

variable "server_type" {
  description = "Hetzner server type of both relays."
  type        = string
}

variable "image" {
  description = "Image both relays boot (Debian 12: the roles' platform)."
  type        = string
}

variable "location" {
  description = "Hetzner location of the relays and the floating IP."
  type        = string
}

variable "subnet_id" {
  description = "Id of the private subnet the relays' addresses are on."
  type        = string
}

variable "firewall_ids" {
  description = "Cloud firewalls applied to the relays from their first boot."
  type        = list(string)
}

variable "ssh_user" {
  description = "The sudo user cloud-init makes for Ansible and mailha."
  type        = string
}

variable "ssh_public_key" {
  description = "The operator's OpenSSH public key."
  type        = string
}

variable "host_public_keys" {
  description = "Each relay's ed25519 SSH host public key (made on the controller)."
  type        = map(string)

  validation {
    condition     = alltrue([for key in values(var.host_public_keys) : can(regex("^ssh-ed25519 [A-Za-z0-9+/=]+( .*)?$", key))])
    error_message = "host_public_keys must hold ed25519 public keys (ssh-ed25519 AAAA...)."
  }
}

variable "host_private_keys" {
  description = "Each relay's ed25519 SSH host private key, OpenSSH format (made on the controller)."
  type        = map(string)
  sensitive   = true
}

variable "domain" {
  description = "The zone of the relays' names (<relay>.<domain>)."
  type        = string
}

variable "sending_host" {
  description = "The sending host name: the floating IP's PTR (and its A record, the relays' HELO)."
  type        = string
}

variable "protection" {
  description = "Hetzner's delete (and rebuild) protection on the relays and the floating IP."
  type        = bool
}

variable "labels" {
  description = "Labels on every resource."
  type        = map(string)
  default     = {}
}
