variable "image" {
  description = "Lab image reference printed by scripts/build-image.sh (make provision passes it)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9./_-]+(:[A-Za-z0-9._-]+)?$", var.image))
    error_message = "image must be an image reference such as localhost/mailha-lab:abc123; run scripts/build-image.sh to get it."
  }
}

variable "name_prefix" {
  description = "Prefix of every container and of the network (containers are <prefix>-<host>)."
  type        = string
  default     = "mailha"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,20}$", var.name_prefix))
    error_message = "name_prefix must start with a letter and hold at most 21 lower-case letters, digits or '-'."
  }
}

variable "network_cidr" {
  description = "Subnet of the lab's internal podman network (/16 to /28)."
  type        = string
  default     = "10.213.0.0/24"

  validation {
    condition     = can(cidrhost(var.network_cidr, 0)) && can(regex("/(1[6-9]|2[0-8])$", var.network_cidr))
    error_message = "network_cidr must be an IPv4 subnet between /16 and /28, for example 10.213.0.0/24."
  }
}

variable "domain" {
  description = "DNS zone of the lab; hosts are <host>.<domain>."
  type        = string
  default     = "mailha.test"

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.domain))
    error_message = "domain must be a DNS name such as mailha.test (lower case, no trailing dot)."
  }
}

variable "primary" {
  description = "Which mail host starts as the VRRP MASTER: mx1 or mx2."
  type        = string
  default     = "mx1"

  validation {
    condition     = contains(["mx1", "mx2"], var.primary)
    error_message = "primary must be \"mx1\" or \"mx2\"."
  }
}

variable "ssh_public_key" {
  description = "The operator's OpenSSH public key; every lab host accepts it for ssh_user (make provision passes .lab/secrets/lab/id_ed25519.pub)."
  type        = string

  validation {
    condition     = can(regex("^ssh-[a-z0-9-]+ [A-Za-z0-9+/=]+", var.ssh_public_key))
    error_message = "ssh_public_key must be an OpenSSH public key (ssh-ed25519 AAAA...); make provision makes one in .lab/secrets/lab/."
  }
}

variable "ssh_user" {
  description = "The login user on every lab host, with sudo, as a VPS's default user (root cannot log in)."
  type        = string
  default     = "mailha"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh_user)) && var.ssh_user != "root"
    error_message = "ssh_user must be a login name other than root (1 to 32 of a-z, 0-9, '_' and '-')."
  }
}

variable "secrets_dir" {
  description = "Where the operator key (id_ed25519) and the lab's known_hosts live; mailha reads the lab's secrets there too."
  type        = string
  default     = "../../../.lab/secrets/lab"
}
