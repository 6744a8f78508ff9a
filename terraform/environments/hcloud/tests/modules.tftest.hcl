# Offline tests of the hcloud modules' resources (what a root module's test
# cannot reach): each run plans one module with a mocked provider.

mock_provider "hcloud" {
  mock_resource "hcloud_server" {
    defaults = { id = "1001", ipv4_address = "203.0.113.11" }
  }
  mock_resource "hcloud_floating_ip" {
    defaults = { id = "4711", ip_address = "203.0.113.100" }
  }
  mock_resource "hcloud_placement_group" {
    defaults = { id = "66" }
  }
  mock_resource "hcloud_ssh_key" {
    defaults = { id = "88" }
  }
  mock_resource "hcloud_load_balancer" {
    defaults = { id = "77", ipv4 = "203.0.113.20" }
  }
  mock_resource "hcloud_zone" {
    defaults = { id = 99 }
  }
}

run "the_relays_boot_reachable_spread_and_protected" {
  command = apply

  module {
    source = "../../modules/hcloud_pair"
  }

  variables {
    name_prefix       = "mailha"
    relays            = { mx1 = { private_ip = "10.213.0.11" }, mx2 = { private_ip = "10.213.0.12" } }
    primary           = "mx2"
    server_type       = "cx23"
    image             = "debian-12"
    location          = "hel1"
    subnet_id         = "31-10.213.0.0/24"
    firewall_ids      = ["55"]
    ssh_user          = "mailha"
    ssh_public_key    = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyForTestsOnly operator@test"
    host_public_keys  = { mx1 = "ssh-ed25519 AAAAHostKeyMx1 mx1", mx2 = "ssh-ed25519 AAAAHostKeyMx2 mx2" }
    host_private_keys = { mx1 = "-----BEGIN OPENSSH PRIVATE KEY-----\nmx1\n-----END OPENSSH PRIVATE KEY-----\n", mx2 = "-----BEGIN OPENSSH PRIVATE KEY-----\nmx2\n-----END OPENSSH PRIVATE KEY-----\n" }
    domain            = "example.com"
    sending_host      = "mta.example.com"
    protection        = true
  }

  override_resource {
    target = hcloud_server.relay["mx2"]
    values = { id = "1002", ipv4_address = "203.0.113.12" }
  }

  assert {
    condition = alltrue([for s in hcloud_server.relay : (
      s.image == "debian-12" && s.location == "hel1" && s.server_type == "cx23" && s.delete_protection && s.rebuild_protection &&
      s.placement_group_id == 66 && s.ssh_keys == tolist(["88"]) && s.firewall_ids == toset([55])
    )])
    error_message = "both relays must run Debian 12 in the location, protected, in the placement group, with the operator key and the firewall from boot"
  }

  assert {
    condition     = hcloud_placement_group.relays.type == "spread"
    error_message = "the placement group must spread the relays over different hosts"
  }

  assert {
    condition = (
      one(hcloud_server.relay["mx1"].network).ip == "10.213.0.11" && one(hcloud_server.relay["mx2"].network).ip == "10.213.0.12" &&
      alltrue([for s in hcloud_server.relay : one(s.network).subnet_id == "31-10.213.0.0/24" && length(one(s.network).alias_ips) == 0])
    )
    error_message = "each relay must join the private subnet at its fixed address"
  }

  assert {
    condition = alltrue([for name, text in nonsensitive(output.user_data) : (
      startswith(text, "#cloud-config\n") &&
      yamldecode(text).users[0].name == "mailha" && yamldecode(text).users[0].sudo == "ALL=(ALL) NOPASSWD:ALL" &&
      yamldecode(text).users[0].lock_passwd && yamldecode(text).users[0].ssh_authorized_keys == [var.ssh_public_key] &&
      yamldecode(text).disable_root && !yamldecode(text).ssh_pwauth && yamldecode(text).ssh_genkeytypes == [] &&
      yamldecode(text).ssh_keys.ed25519_public == var.host_public_keys[name] &&
      yamldecode(text).ssh_keys.ed25519_private == nonsensitive(var.host_private_keys[name]) &&
      yamldecode(text).fqdn == "${name}.example.com" &&
      strcontains(yamldecode(text).write_files[0].content, "PermitRootLogin no")
    )])
    error_message = "cloud-init must make the sudo user with the operator key, refuse root and passwords, and install the relay's own host key"
  }

  assert {
    condition     = alltrue([for text in nonsensitive(output.user_data) : !strcontains(lower(text), "hcloud") && !strcontains(lower(text), "token")])
    error_message = "no token may reach a server's user_data"
  }

  assert {
    condition     = hcloud_floating_ip.sending.type == "ipv4" && hcloud_floating_ip.sending.server_id == 1002 && hcloud_floating_ip.sending.delete_protection
    error_message = "the floating IPv4 must be given to the primary (mx2) when it is made, protected"
  }

  assert {
    condition = (
      hcloud_rdns.sending.dns_ptr == "mta.example.com" && hcloud_rdns.sending.floating_ip_id == 4711 &&
      hcloud_rdns.sending.ip_address == "203.0.113.100"
    )
    error_message = "the floating IP's PTR must be the sending host name"
  }
}

run "the_network_is_a_cloud_subnet_in_the_zone" {
  command = plan

  module {
    source = "../../modules/hcloud_network"
  }

  variables {
    name         = "mailha-private"
    ip_range     = "10.213.0.0/16"
    subnet_cidr  = "10.213.0.0/24"
    network_zone = "eu-central"
  }

  assert {
    condition = (
      hcloud_network.this.ip_range == "10.213.0.0/16" && hcloud_network_subnet.this.type == "cloud" &&
      hcloud_network_subnet.this.network_zone == "eu-central" && hcloud_network_subnet.this.ip_range == "10.213.0.0/24"
    )
    error_message = "the subnet must be a cloud subnet of the network in the zone"
  }
}

run "the_firewall_rules_are_inbound_tcp_and_never_open_to_the_world" {
  command = plan

  module {
    source = "../../modules/hcloud_firewall"
  }

  variables {
    name                = "mailha-relays"
    operator_networks   = ["198.51.100.5/32"]
    submission_networks = ["203.0.113.128/25"]
    controller_networks = ["198.51.100.5/32"]
  }

  assert {
    condition = (
      length(hcloud_firewall.relays.rule) == 4 &&
      alltrue([for r in hcloud_firewall.relays.rule : r.direction == "in" && r.protocol == "tcp"]) &&
      toset([for r in hcloud_firewall.relays.rule : r.port]) == toset(["22", "25", "587", "8025"])
    )
    error_message = "the firewall must hold exactly the four inbound TCP rules"
  }

  assert {
    condition = alltrue([for r in hcloud_firewall.relays.rule : (
      !contains(r.source_ips, "0.0.0.0/0") && !contains(r.source_ips, "::/0") &&
      r.source_ips == (contains(["25", "587"], r.port) ? toset(["203.0.113.128/25"]) : toset(["198.51.100.5/32"]))
    )])
    error_message = "each port only from who needs it, none from the world"
  }
}

run "the_load_balancer_is_an_lb11_on_the_private_subnet" {
  command = apply

  module {
    source = "../../modules/hcloud_load_balancer"
  }

  variables {
    name         = "mailha-lb"
    location     = "fsn1"
    subnet_id    = "31-10.213.0.0/24"
    private_ip   = "10.213.0.20"
    targets      = { mx1 = "1001", mx2 = "1002" }
    services     = [{ listen_port = 25, destination_port = 10025 }, { listen_port = 587, destination_port = 10587 }]
    health_check = { port = 8025, path = "/active", interval = 3, timeout = 2, retries = 1 }
    protection   = true
  }

  assert {
    condition = (
      hcloud_load_balancer.this.load_balancer_type == "lb11" && hcloud_load_balancer.this.location == "fsn1" &&
      hcloud_load_balancer.this.delete_protection &&
      hcloud_load_balancer_network.this.ip == "10.213.0.20" && hcloud_load_balancer_network.this.subnet_id == "31-10.213.0.0/24"
    )
    error_message = "an lb11 in the location, protected, on the private subnet at its fixed address"
  }

  assert {
    condition     = alltrue([for t in hcloud_load_balancer_target.relay : t.type == "server" && t.use_private_ip && t.load_balancer_id == 77])
    error_message = "the relays must be server targets reached at their private addresses"
  }

  assert {
    condition = alltrue([for s in hcloud_load_balancer_service.smtp : (
      s.protocol == "tcp" && s.proxyprotocol && s.load_balancer_id == "77" &&
      s.health_check[0].protocol == "http" && s.health_check[0].http[0].path == "/active"
    )])
    error_message = "TCP services with the PROXY protocol and the HTTP check of /active"
  }
}

run "hetzner_dns_gets_a_primary_zone_and_one_rrset_per_record" {
  command = apply

  module {
    source = "../../modules/dns_hcloud"
  }

  variables {
    zone = "example.com"
    ttl  = 600
    records = [
      { name = "mta", type = "A", values = ["203.0.113.100"] },
      { name = "@", type = "TXT", values = ["\"v=spf1 ip4:203.0.113.100 -all\""] },
    ]
  }

  assert {
    condition     = hcloud_zone.this.name == "example.com" && hcloud_zone.this.mode == "primary"
    error_message = "the zone must be a primary zone at Hetzner"
  }

  assert {
    condition = (
      length(hcloud_zone_rrset.record) == 2 &&
      alltrue([for r in hcloud_zone_rrset.record : r.ttl == 600 && r.zone == "example.com"]) &&
      hcloud_zone_rrset.record["@ TXT"].name == "@" && hcloud_zone_rrset.record["mta A"].records == toset([{ value = "203.0.113.100" }])
    )
    error_message = "one record set per record, in the zone, with the TTL"
  }
}
