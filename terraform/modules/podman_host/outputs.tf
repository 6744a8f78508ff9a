output "name" {
  description = "Container name, which Ansible's podman connection uses as its target."
  value       = terraform_data.host.output.name
}

output "address" {
  description = "The host's address."
  value       = var.address
}
