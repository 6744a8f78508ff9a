variable "name" {
  description = "Name of the firewall."
  type        = string
}

variable "operator_networks" {
  description = "Networks (CIDR) that may reach SSH: the operators' and the controller's."
  type        = list(string)

  validation {
    condition     = length(var.operator_networks) > 0 && alltrue([for n in var.operator_networks : can(cidrhost(n, 0))])
    error_message = "operator_networks must hold at least one network in CIDR notation (the controller needs SSH), e.g. 198.51.100.5/32."
  }
}

variable "submission_networks" {
  description = "Networks (CIDR) of campaign clients that submit to the floating IP directly on 25 and 587; empty: only through the load balancer."
  type        = list(string)

  validation {
    condition     = alltrue([for n in var.submission_networks : can(cidrhost(n, 0))])
    error_message = "submission_networks must be networks in CIDR notation, e.g. 203.0.113.0/24."
  }
}

variable "controller_networks" {
  description = "Networks (CIDR) of the controller, which reads the health agent."
  type        = list(string)

  validation {
    condition     = alltrue([for n in var.controller_networks : can(cidrhost(n, 0))])
    error_message = "controller_networks must be networks in CIDR notation, e.g. 198.51.100.5/32."
  }
}

variable "agent_port" {
  description = "The health agent's port (mailha-health-agent)."
  type        = number
  default     = 8025
}

variable "labels" {
  description = "Labels of the firewall."
  type        = map(string)
  default     = {}
}
