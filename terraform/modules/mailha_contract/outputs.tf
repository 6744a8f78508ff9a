output "contract" {
  description = "The mailha output contract (docs/design.md), the input of the inventory generator."
  value       = local.contract

  # Rules that span several variables; mailha.inventory.validate checks them again.
  precondition {
    condition     = alltrue([for h in var.hosts : h.fqdn == var.dns.zone || endswith(h.fqdn, ".${var.dns.zone}")])
    error_message = "every host's fqdn must be inside dns.zone ${var.dns.zone}: the zone holds their A records."
  }

  precondition {
    condition     = (var.connection == "ssh") == (var.ssh != null)
    error_message = "ssh (user and port) must be set with connection \"ssh\" and null with \"podman\"."
  }

  precondition {
    condition     = var.load_balancer.kind != "haproxy" || contains(keys(var.hosts), var.load_balancer.host)
    error_message = "load_balancer.host ${var.load_balancer.host} must be one of the hosts (kind haproxy: mailha configures it)."
  }

  precondition {
    condition     = var.load_balancer.kind != "hcloud" || !contains(keys(var.hosts), var.load_balancer.host)
    error_message = "load_balancer.host ${var.load_balancer.host} names a host, but a load balancer of kind hcloud is a cloud service, not a host mailha configures."
  }

  precondition {
    condition     = var.mover == null ? true : sort(keys(var.mover.server_ids)) == sort(keys(local.mail_hosts))
    error_message = "mover.server_ids must hold exactly the mail hosts (${join(", ", sort(keys(local.mail_hosts)))}): the mover assigns the floating IP to them."
  }

  precondition {
    condition     = !contains([for h in var.hosts : h.address], var.floating_ip)
    error_message = "The floating IP ${var.floating_ip} is also a host's address."
  }
}

output "primary" {
  description = "Short name of the mail host that starts as VRRP MASTER."
  value       = local.master
}
