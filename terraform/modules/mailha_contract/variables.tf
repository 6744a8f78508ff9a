variable "environment" {
  description = "Name of the environment (lab, cloud, ...)."
  type        = string
}

variable "connection" {
  description = "How Ansible reaches the hosts: podman (lab containers) or ssh."
  type        = string

  validation {
    condition     = contains(["podman", "ssh"], var.connection)
    error_message = "connection must be \"podman\" or \"ssh\"."
  }
}

variable "network" {
  description = "The hosts' network: its CIDR and the controller's gateway address on it."
  type = object({
    cidr    = string
    gateway = string
  })
}

variable "floating_ip" {
  description = "The floating IP: the sending identity that VRRP moves between the mail hosts."
  type        = string

  validation {
    condition     = can(cidrhost("${var.floating_ip}/32", 0))
    error_message = "floating_ip must be an IPv4 address."
  }
}

variable "dns" {
  description = "DNS names: zone, authoritative nameserver address, sending host, submission host."
  type = object({
    zone            = string
    nameserver      = string
    sending_host    = string
    submission_host = string
  })
}

variable "load_balancer" {
  description = "The load balancer: its host key, address and the ports it serves."
  type = object({
    host    = string
    address = string
    ports   = list(number)
  })
}

variable "hosts" {
  description = "Every host, keyed by short name. Mail hosts carry their VRRP priority and initial state; others null."
  type = map(object({
    address       = string
    fqdn          = string
    target        = string
    groups        = list(string)
    vrrp_priority = optional(number)
    vrrp_state    = optional(string)
  }))

  validation {
    condition     = length([for h in var.hosts : h if contains(h.groups, "mail")]) == 2
    error_message = "hosts must hold exactly two hosts in the group \"mail\" (a primary and a standby)."
  }

  validation {
    condition     = length([for h in var.hosts : h if contains(h.groups, "mail") && h.vrrp_state == "MASTER"]) == 1
    error_message = "exactly one mail host must have vrrp_state = \"MASTER\"; the other is \"BACKUP\"."
  }

  validation {
    condition     = alltrue([for h in var.hosts : !contains(h.groups, "mail") || (coalesce(h.vrrp_priority, 0) >= 1 && coalesce(h.vrrp_priority, 0) <= 254)])
    error_message = "every mail host needs vrrp_priority between 1 and 254."
  }

  validation {
    condition     = length(distinct([for h in var.hosts : h.address])) == length(var.hosts)
    error_message = "every host needs an address of its own; two hosts share one."
  }
}
