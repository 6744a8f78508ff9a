output "network_id" {
  description = "Id of the network."
  value       = hcloud_network.this.id
}

output "subnet_id" {
  description = "Id of the subnet (<network id>-<range>); servers and the load balancer attach to it."
  value       = hcloud_network_subnet.this.id
}

output "subnet_cidr" {
  description = "The subnet's range."
  value       = hcloud_network_subnet.this.ip_range
}
