# The DNS interface: dns_hcloud and dns_rfc2136 take the same inputs and
# give the same outputs; the environment picks one with dns_provider.

variable "zone" {
  description = "The DNS zone the records belong to, e.g. example.com."
  type        = string
}

variable "records" {
  description = "Record sets (modules/dns_records): name relative to the zone (\"@\" its apex), type, values as zone-file rdata."
  type = list(object({
    name   = string
    type   = string
    values = list(string)
  }))
}

variable "ttl" {
  description = "TTL of every record set, in seconds."
  type        = number
}
