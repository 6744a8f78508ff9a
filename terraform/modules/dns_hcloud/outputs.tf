output "records" {
  description = "The record sets by \"<name> <type>\": their values."
  value       = { for key, rrset in hcloud_zone_rrset.record : key => sort([for record in rrset.records : record.value]) }
}

output "published" {
  description = "Whether Terraform publishes the records (true: through Hetzner's DNS API)."
  value       = true
}

output "nsupdate" {
  description = "The RFC 2136 update that publishes the records, for a zone served elsewhere; null: Terraform publishes them."
  value       = null
}
