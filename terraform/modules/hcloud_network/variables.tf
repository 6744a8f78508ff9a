variable "name" {
  description = "Name of the network."
  type        = string
}

variable "ip_range" {
  description = "The network's range (RFC 1918), e.g. 10.213.0.0/16."
  type        = string

  validation {
    condition     = can(cidrnetmask(var.ip_range)) && cidrsubnet(var.ip_range, 0, 0) == var.ip_range
    error_message = "ip_range must be an IPv4 network written with its first address, e.g. 10.213.0.0/16."
  }
}

variable "subnet_cidr" {
  description = "The subnet the servers and the load balancer take their addresses from, inside ip_range."
  type        = string

  validation {
    condition     = can(cidrnetmask(var.subnet_cidr)) && cidrsubnet(var.subnet_cidr, 0, 0) == var.subnet_cidr
    error_message = "subnet_cidr must be an IPv4 network written with its first address, e.g. 10.213.0.0/24."
  }
}

variable "network_zone" {
  description = "Hetzner network zone of the subnet (eu-central, us-east, us-west, ap-southeast); it must hold the servers' location."
  type        = string
}

variable "labels" {
  description = "Labels of the network."
  type        = map(string)
  default     = {}
}
