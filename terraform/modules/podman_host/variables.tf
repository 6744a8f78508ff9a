variable "name" {
  description = "Container name."
  type        = string
}

variable "hostname" {
  description = "Fully qualified host name inside the container."
  type        = string
}

variable "image" {
  description = "Lab image reference (scripts/build-image.sh prints it)."
  type        = string

  validation {
    condition     = length(trimspace(var.image)) > 0
    error_message = "image must name the lab image; run scripts/build-image.sh and pass what it prints."
  }
}

variable "network" {
  description = "Podman network to attach to."
  type        = string
}

variable "address" {
  description = "Static IPv4 address on the network."
  type        = string

  validation {
    condition     = can(cidrhost("${var.address}/32", 0))
    error_message = "address must be an IPv4 address."
  }
}

variable "dns" {
  description = "Resolver for the container, or null for podman's default."
  type        = string
  default     = null
}

variable "capabilities" {
  description = "Linux capabilities to add (keepalived needs NET_ADMIN, NET_RAW, NET_BROADCAST)."
  type        = list(string)
  default     = []
}

variable "sysctls" {
  description = "Namespaced sysctls to set at start (read-only inside the container)."
  type        = map(string)
  default     = {}
}

variable "podman_script" {
  description = "Path of scripts/lab-podman.sh, which performs the podman calls."
  type        = string
}

variable "login" {
  description = "The SSH login the host is made with, as cloud-init makes it on a VPS: user (sudo, no password), the operator's public key, and the known_hosts file that receives the host's key."
  type = object({
    user        = string
    public_key  = string
    known_hosts = string
  })

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.login.user)) && var.login.user != "root"
    error_message = "login.user must be a login name other than root (1 to 32 of a-z, 0-9, '_' and '-')."
  }

  validation {
    condition     = can(regex("^ssh-[a-z0-9-]+ [A-Za-z0-9+/=]+", var.login.public_key))
    error_message = "login.public_key must be an OpenSSH public key (ssh-ed25519 AAAA...)."
  }
}
