# The relays' cloud firewall: the public side of the host firewall's table
# (roles/firewall, README "What is exposed to whom"). Hetzner's firewalls
# filter the public interfaces; what the relays exchange with each other
# and with the load balancer on the private network (VRRP, the PROXY
# listeners, the hand-over, the agent) is left to the host firewall.
locals {
  # One rule per port and source list; a list left empty opens nothing.
  rules = [
    for rule in [
      { port = "22", sources = var.operator_networks, description = "SSH from the operators' networks" },
      { port = "25", sources = var.submission_networks, description = "SMTP from the submission networks (the floating IP)" },
      { port = "587", sources = var.submission_networks, description = "Submission from the submission networks (the floating IP)" },
      { port = tostring(var.agent_port), sources = var.controller_networks, description = "Health agent from the controller (mailha status)" },
    ] : rule if length(rule.sources) > 0
  ]
}

resource "hcloud_firewall" "relays" {
  name   = var.name
  labels = var.labels

  dynamic "rule" {
    for_each = local.rules

    content {
      direction   = "in"
      protocol    = "tcp"
      port        = rule.value.port
      source_ips  = rule.value.sources
      description = rule.value.description
    }
  }
}
