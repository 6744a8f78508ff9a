output "mailha" {
  description = "The mailha output contract (docs/design.md); mailha inventory turns it into inventories/existing/hosts.yml."
  value       = module.contract.contract
}
