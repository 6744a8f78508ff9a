output "records" {
  description = "The record sets: name relative to the zone (\"@\" its apex), type, values as zone-file rdata."
  value       = local.records
}
