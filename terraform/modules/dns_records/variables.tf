variable "zone" {
  description = "The DNS zone, e.g. example.com."
  type        = string
}

variable "sending_name" {
  description = "First label of the sending host (<sending_name>.<zone>, the floating IP)."
  type        = string
}

variable "submission_name" {
  description = "First label of the submission host (<submission_name>.<zone>, the load balancer)."
  type        = string
}

variable "floating_ip" {
  description = "The floating IPv4 address: the sending host's A record and the SPF record's only address."
  type        = string
}

variable "load_balancer_ip" {
  description = "The load balancer's public IPv4 address."
  type        = string
}

variable "sender_domain" {
  description = "The campaign sender domain (SPF, DKIM, DMARC): the zone or a name inside it."
  type        = string

  validation {
    condition     = var.sender_domain == var.zone || endswith(var.sender_domain, ".${var.zone}")
    error_message = "sender_domain must be the zone or a name inside it."
  }
}

variable "dkim_selector" {
  description = "The DKIM selector (<selector>._domainkey.<sender_domain>)."
  type        = string
}

variable "dkim_key_type" {
  description = "The DKIM key's algorithm (k=)."
  type        = string
  default     = "rsa"
}

variable "dkim_public_key" {
  description = "The DKIM public key, base64 (the p= value); null: no DKIM record yet."
  type        = string
  default     = null
}

variable "dmarc_policy" {
  description = "The DMARC policy (p=)."
  type        = string
}

variable "dmarc_report_address" {
  description = "Where DMARC aggregate reports go (rua=mailto:); null: none."
  type        = string
  default     = null
}
