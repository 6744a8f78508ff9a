output "id" {
  description = "Id of the firewall."
  value       = hcloud_firewall.relays.id
}

output "rules" {
  description = "The inbound rules: TCP port and the networks it admits."
  value       = { for rule in local.rules : rule.port => rule.sources }
}
