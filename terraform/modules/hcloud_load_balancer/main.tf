# Hetzner's managed load balancer in front of the relays, in the role
# HAProxy has in the lab: TCP, the PROXY protocol to the relays' PROXY
# listeners, and the relays' health agents deciding which one is active.
resource "hcloud_load_balancer" "this" {
  name               = var.name
  load_balancer_type = var.load_balancer_type
  location           = var.location
  labels             = var.labels
  delete_protection  = var.protection
}

# The relays see the load balancer's connections and health checks come
# from this fixed address: their host firewalls admit it to the PROXY
# listeners, and nothing else.
resource "hcloud_load_balancer_network" "this" {
  load_balancer_id = hcloud_load_balancer.this.id
  subnet_id        = var.subnet_id
  ip               = var.private_ip
}

resource "hcloud_load_balancer_target" "relay" {
  for_each = var.targets

  type             = "server"
  load_balancer_id = hcloud_load_balancer.this.id
  server_id        = each.value
  use_private_ip   = true

  depends_on = [hcloud_load_balancer_network.this]
}

resource "hcloud_load_balancer_service" "smtp" {
  for_each = { for service in var.services : tostring(service.listen_port) => service }

  load_balancer_id = hcloud_load_balancer.this.id
  protocol         = "tcp"
  listen_port      = each.value.listen_port
  destination_port = each.value.destination_port
  # The relays' PROXY listeners take the client's address from the header:
  # relaying is decided on it, as behind HAProxy's send-proxy.
  proxyprotocol = true

  # Only the relay that holds the floating IP and passes its SMTP check
  # answers 200 on /active, so the load balancer follows VRRP.
  health_check {
    protocol = "http"
    port     = var.health_check.port
    interval = var.health_check.interval
    timeout  = var.health_check.timeout
    retries  = var.health_check.retries

    http {
      path         = var.health_check.path
      status_codes = ["200"]
    }
  }
}
