# The private network the relays and the load balancer share: VRRP goes
# unicast over it (Hetzner's networks route layer 3, no multicast), the
# load balancer reaches its targets and their health agents on it.
resource "hcloud_network" "this" {
  name     = var.name
  ip_range = var.ip_range
  labels   = var.labels
}

resource "hcloud_network_subnet" "this" {
  network_id   = hcloud_network.this.id
  type         = "cloud"
  network_zone = var.network_zone
  ip_range     = var.subnet_cidr
}
