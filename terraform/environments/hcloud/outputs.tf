output "mailha" {
  description = "The mailha output contract (docs/design.md); mailha inventory turns it into inventories/hcloud/hosts.yml."
  value       = module.contract.contract
}

output "known_hosts" {
  description = "known_hosts lines for the relays' public addresses with the host keys cloud-init installed; make provision writes them to ssh_known_hosts_file."
  value       = module.pair.known_hosts
}

output "hcloud" {
  description = "Hetzner's ids and addresses of what was made (the mover's ids are also in the contract)."
  value = {
    servers       = module.pair.servers
    floating_ip   = module.pair.floating_ip
    ptr           = module.pair.ptr
    load_balancer = { id = module.load_balancer.id, ipv4 = module.load_balancer.ipv4, private_ip = module.load_balancer.private_ip }
    network       = { id = module.network.network_id, subnet_id = module.network.subnet_id }
    firewall      = { id = module.firewall.id, rules = module.firewall.rules }
  }
}

output "dns" {
  description = "The sending domain's records, whether Terraform published them (dns_provider hcloud) and otherwise the RFC 2136 update that does."
  value = {
    provider  = var.dns_provider
    published = local.dns.published
    records   = local.dns.records
    nsupdate  = local.dns.nsupdate
  }
}
