variable "name" {
  description = "Name of the load balancer."
  type        = string
}

variable "load_balancer_type" {
  description = "Hetzner load balancer type."
  type        = string
  default     = "lb11"
}

variable "location" {
  description = "Hetzner location of the load balancer (the relays')."
  type        = string
}

variable "subnet_id" {
  description = "Id of the private subnet the load balancer joins."
  type        = string
}

variable "private_ip" {
  description = "The load balancer's address on the private subnet, the source the relays admit."
  type        = string
}

variable "targets" {
  description = "The relays' server ids by name, reached at their private addresses."
  type        = map(string)
}

variable "services" {
  description = "TCP services: the port clients connect to and the relays' PROXY listener behind it."
  type = list(object({
    listen_port      = number
    destination_port = number
  }))
}

variable "health_check" {
  description = "The HTTP health check of each relay's agent: port, path, interval, timeout (seconds) and retries."
  type = object({
    port     = number
    path     = string
    interval = number
    timeout  = number
    retries  = number
  })
}

variable "protection" {
  description = "Hetzner's delete protection."
  type        = bool
}

variable "labels" {
  description = "Labels of the load balancer."
  type        = map(string)
  default     = {}
}
