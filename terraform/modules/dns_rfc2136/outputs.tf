output "records" {
  description = "The record sets by \"<name> <type>\": their values."
  value       = terraform_data.records.output
}

output "published" {
  description = "Whether Terraform publishes the records (false: send the nsupdate output to the zone's server)."
  value       = false
}

output "nsupdate" {
  description = "The RFC 2136 update that publishes the records: nsupdate -k <TSIG key file> < this."
  value       = local.nsupdate
}
