output "servers" {
  description = "Each relay: server id, public IPv4 (where Ansible connects) and private address (VRRP, the load balancer)."
  value = {
    for name, server in hcloud_server.relay : name => {
      id           = server.id
      ipv4_address = server.ipv4_address
      private_ip   = var.relays[name].private_ip
    }
  }
}

output "floating_ip" {
  description = "The floating IP: its id (the mover assigns it through the API) and address."
  value = {
    id      = hcloud_floating_ip.sending.id
    address = hcloud_floating_ip.sending.ip_address
  }
}

output "ptr" {
  description = "The floating IP's reverse DNS name."
  value       = hcloud_rdns.sending.dns_ptr
}

output "known_hosts" {
  description = "known_hosts lines of the relays' public addresses and the host keys cloud-init installs."
  value       = join("", [for name, server in hcloud_server.relay : "${server.ipv4_address} ${join(" ", slice(split(" ", var.host_public_keys[name]), 0, 2))}\n"])
}

output "user_data" {
  description = "The cloud-init text of each relay (it holds the host private key)."
  value       = local.user_data
  sensitive   = true
}
