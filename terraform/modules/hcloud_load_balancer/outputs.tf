output "id" {
  description = "Id of the load balancer."
  value       = hcloud_load_balancer.this.id
}

output "ipv4" {
  description = "The public IPv4 address campaign clients submit to."
  value       = hcloud_load_balancer.this.ipv4
}

output "private_ip" {
  description = "The load balancer's address on the private subnet."
  value       = hcloud_load_balancer_network.this.ip
}

output "services" {
  description = "Each service by listen port: destination port, PROXY protocol and health check."
  value = {
    for port, service in hcloud_load_balancer_service.smtp : port => {
      destination_port = service.destination_port
      proxyprotocol    = service.proxyprotocol
      health_check     = service.health_check[0]
    }
  }
}

output "targets" {
  description = "The servers behind the load balancer and whether they are reached privately."
  value       = { for name, target in hcloud_load_balancer_target.relay : name => { server_id = target.server_id, use_private_ip = target.use_private_ip } }
}
