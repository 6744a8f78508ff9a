output "contract" {
  description = "The mailha output contract (docs/design.md), the input of the inventory generator."
  value       = local.contract
}

output "primary" {
  description = "Short name of the mail host that starts as VRRP MASTER."
  value       = local.master
}
