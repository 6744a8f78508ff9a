variable "name" {
  description = "Name of the podman network."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_.-]*$", var.name))
    error_message = "name must be lower-case letters, digits, '.', '_' or '-'."
  }
}

variable "cidr" {
  description = "Subnet of the network, in CIDR notation."
  type        = string

  validation {
    condition     = can(cidrhost(var.cidr, 1))
    error_message = "cidr must be an IPv4 subnet in CIDR notation, for example 10.213.0.0/24."
  }
}

variable "podman_script" {
  description = "Path of scripts/lab-podman.sh, which performs the podman calls."
  type        = string
}
