# Hetzner Cloud: the relay pair, its private network, the floating IP with
# its PTR, the managed load balancer, the cloud firewall and the sending
# domain's records, emitted through the same output contract as the lab.
locals {
  relay_names = sort(var.relays)
  primary     = coalesce(var.primary, local.relay_names[0])

  # Fixed addresses on the subnet, as in the lab: relays from host 11 on,
  # the load balancer at host 20 (Hetzner keeps host 1 for its gateway).
  relays           = { for i, name in local.relay_names : name => { private_ip = cidrhost(var.subnet_cidr, 11 + i) } }
  load_balancer_ip = cidrhost(var.subnet_cidr, 20)

  network_zone = local.network_zones[var.location]
  network_zones = {
    fsn1 = "eu-central"
    nbg1 = "eu-central"
    hel1 = "eu-central"
    ash  = "us-east"
    hil  = "us-west"
    sin  = "ap-southeast"
  }

  sending_host    = "${var.sending_name}.${var.dns_zone}"
  submission_host = "${var.submission_name}.${var.dns_zone}"
  labels          = merge(var.labels, { "mailha" = var.name_prefix })

  # The relays' PROXY listeners behind the public ports (docs/design.md).
  services = [
    { listen_port = 25, destination_port = 10025 },
    { listen_port = 587, destination_port = 10587 },
  ]

  vrrp = {
    for name in local.relay_names : name => (
      name == local.primary ? { priority = 150, state = "MASTER" } : { priority = 100, state = "BACKUP" }
    )
  }
}

module "network" {
  source = "../../modules/hcloud_network"

  name         = "${var.name_prefix}-private"
  ip_range     = var.network_cidr
  subnet_cidr  = var.subnet_cidr
  network_zone = local.network_zone
  labels       = local.labels
}

module "firewall" {
  source = "../../modules/hcloud_firewall"

  name                = "${var.name_prefix}-relays"
  operator_networks   = length(var.operator_networks) > 0 ? var.operator_networks : ["${var.controller_address}/32"]
  submission_networks = var.submission_networks
  controller_networks = ["${var.controller_address}/32"]
  agent_port          = var.agent_port
  labels              = local.labels
}

module "pair" {
  source = "../../modules/hcloud_pair"

  name_prefix       = var.name_prefix
  relays            = local.relays
  primary           = local.primary
  server_type       = var.server_type
  image             = var.image
  location          = var.location
  subnet_id         = module.network.subnet_id
  firewall_ids      = [module.firewall.id]
  ssh_user          = var.ssh_user
  ssh_public_key    = var.ssh_public_key
  host_public_keys  = var.host_public_keys
  host_private_keys = var.host_private_keys
  domain            = var.dns_zone
  sending_host      = local.sending_host
  protection        = var.protection
  labels            = local.labels
}

module "load_balancer" {
  source = "../../modules/hcloud_load_balancer"

  name               = "${var.name_prefix}-${var.load_balancer_name}"
  load_balancer_type = var.load_balancer_type
  location           = var.location
  subnet_id          = module.network.subnet_id
  private_ip         = local.load_balancer_ip
  targets            = { for name, server in module.pair.servers : name => server.id }
  services           = local.services
  health_check       = merge(var.health_check, { port = var.agent_port, path = "/active" })
  protection         = var.protection
  labels             = local.labels
}

module "dns_records" {
  source = "../../modules/dns_records"

  zone                 = var.dns_zone
  sending_name         = var.sending_name
  submission_name      = var.submission_name
  floating_ip          = module.pair.floating_ip.address
  load_balancer_ip     = module.load_balancer.ipv4
  sender_domain        = coalesce(var.sender_domain, var.dns_zone)
  dkim_selector        = var.dkim_selector
  dkim_public_key      = var.dkim_public_key
  dmarc_policy         = var.dmarc_policy
  dmarc_report_address = var.dmarc_report_address
}

# One DNS implementation of the two (same inputs, same outputs).
module "dns_hcloud" {
  source = "../../modules/dns_hcloud"
  count  = var.dns_provider == "hcloud" ? 1 : 0

  zone    = var.dns_zone
  records = module.dns_records.records
  ttl     = var.dns_ttl
}

module "dns_rfc2136" {
  source = "../../modules/dns_rfc2136"
  count  = var.dns_provider == "rfc2136" ? 1 : 0

  zone    = var.dns_zone
  records = module.dns_records.records
  ttl     = var.dns_ttl
}

locals {
  dns = one(concat(module.dns_hcloud, module.dns_rfc2136))
}

module "contract" {
  source = "../../modules/mailha_contract"

  environment = "hcloud"
  connection  = "ssh"
  ssh = {
    user             = var.ssh_user
    port             = 22
    private_key_file = var.ssh_private_key_file
    known_hosts_file = var.ssh_known_hosts_file
  }
  network = {
    cidr    = var.subnet_cidr
    gateway = var.controller_address
  }
  floating_ip = module.pair.floating_ip.address
  dns = {
    zone            = var.dns_zone
    nameserver      = var.dns_server
    sending_host    = local.sending_host
    submission_host = local.submission_host
    updates         = var.dns_provider
  }
  load_balancer = {
    host           = var.load_balancer_name
    address        = module.load_balancer.ipv4
    source_address = module.load_balancer.private_ip
    ports          = [for service in local.services : service.listen_port]
    kind           = "hcloud"
  }
  # Ansible connects to each relay's public address; everything between
  # the relays and the load balancer (VRRP, PROXY, the agent) uses the
  # private one, the host's address in the contract.
  hosts = {
    for name, server in module.pair.servers : name => {
      address       = server.private_ip
      fqdn          = "${name}.${var.dns_zone}"
      target        = server.ipv4_address
      groups        = ["mail"]
      vrrp_priority = local.vrrp[name].priority
      vrrp_state    = local.vrrp[name].state
    }
  }
  mover = {
    kind           = "hcloud"
    floating_ip_id = module.pair.floating_ip.id
    server_ids     = { for name, server in module.pair.servers : name => server.id }
  }
}
