output "name" {
  description = "Name of the network (known once it exists)."
  value       = terraform_data.network.output.name
}

output "gateway" {
  description = "The host's address on the network."
  value       = local.gateway
}
