output "mailha" {
  description = "The mailha output contract (docs/design.md); scripts turn it into inventories/lab/hosts.yml."
  value       = module.contract.contract
}

output "network_name" {
  description = "The lab's podman network."
  value       = module.network.name
}

output "containers" {
  description = "The podman container of each lab host (the contract's targets are addresses, reached over SSH)."
  value       = { for host, container in module.host : host => container.name }
}
