# Offline tests of the Hetzner Cloud environment with a mocked provider:
# nothing is made and no token is needed. The ids and addresses the API
# would give are the mock's defaults below; each run checks what the
# environment builds from them. Every variable is set here, so a real
# terraform.tfvars in the directory cannot change what is tested.

mock_provider "hcloud" {
  mock_resource "hcloud_server" {
    defaults = {
      id           = "1001"
      ipv4_address = "203.0.113.11"
    }
  }
  mock_resource "hcloud_floating_ip" {
    defaults = {
      id         = "4711"
      ip_address = "203.0.113.100"
    }
  }
  mock_resource "hcloud_load_balancer" {
    defaults = {
      id   = "77"
      ipv4 = "203.0.113.20"
    }
  }
  mock_resource "hcloud_network" {
    defaults = { id = "31" }
  }
  mock_resource "hcloud_network_subnet" {
    defaults = { id = "31-10.213.0.0/24" }
  }
  mock_resource "hcloud_firewall" {
    defaults = { id = "55" }
  }
  mock_resource "hcloud_placement_group" {
    defaults = { id = "66" }
  }
  mock_resource "hcloud_ssh_key" {
    defaults = { id = "88" }
  }
  mock_resource "hcloud_zone" {
    defaults = { id = 99 }
  }
}

variables {
  name_prefix          = "mailha"
  location             = "fsn1"
  relays               = ["mx1", "mx2"]
  primary              = "mx1"
  controller_address   = "198.51.100.5"
  operator_networks    = []
  submission_networks  = ["203.0.113.128/25"]
  ssh_user             = "mailha"
  ssh_public_key       = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyForTestsOnly operator@test"
  ssh_private_key_file = "/home/operator/.ssh/id_ed25519"
  ssh_known_hosts_file = "/srv/mailha/.lab/secrets/hcloud/known_hosts"
  host_public_keys = {
    mx1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfMx1ForTestsOnly mx1"
    mx2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfMx2ForTestsOnly mx2"
  }
  host_private_keys = {
    mx1 = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-key-mx1\n-----END OPENSSH PRIVATE KEY-----\n"
    mx2 = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-key-mx2\n-----END OPENSSH PRIVATE KEY-----\n"
  }
  dns_zone             = "example.com"
  dns_provider         = "hcloud"
  dns_server           = "192.0.2.53"
  sending_name         = "mta"
  submission_name      = "smtp"
  sender_domain        = "news.example.com"
  dkim_selector        = "mailha"
  dkim_public_key      = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijkl"
  dmarc_policy         = "reject"
  dmarc_report_address = "dmarc@example.com"
  protection           = true
}

run "the_contract_describes_the_pair_for_the_inventory" {
  command = apply

  # Distinct server ids, as the API gives them: the mover needs each.
  override_resource {
    target = module.pair.hcloud_server.relay["mx2"]
    values = { id = "1002", ipv4_address = "203.0.113.12" }
  }

  assert {
    condition     = output.mailha.environment == "hcloud" && output.mailha.connection == "ssh"
    error_message = "the environment must announce itself as hcloud, reached over ssh"
  }

  assert {
    condition = (
      output.mailha.ssh.user == "mailha" && output.mailha.ssh.port == 22 &&
      output.mailha.ssh.known_hosts_file == "/srv/mailha/.lab/secrets/hcloud/known_hosts" &&
      output.mailha.ssh.private_key_file == "/home/operator/.ssh/id_ed25519"
    )
    error_message = "the contract must carry the sudo login, the key and the known_hosts file"
  }

  assert {
    condition = (
      output.mailha.hosts["mx1"].address == "10.213.0.11" && output.mailha.hosts["mx2"].address == "10.213.0.12" &&
      output.mailha.hosts["mx1"].target == "203.0.113.11" && output.mailha.hosts["mx2"].target == "203.0.113.12"
    )
    error_message = "each relay's address must be its private one (VRRP, the load balancer) and its target the public one (Ansible)"
  }

  assert {
    condition     = output.mailha.network.cidr == "10.213.0.0/24" && output.mailha.network.gateway == "198.51.100.5"
    error_message = "the contract's network is the private subnet and its gateway the controller's address"
  }

  assert {
    condition = (
      output.mailha.hosts["mx1"].vrrp_state == "MASTER" && output.mailha.hosts["mx2"].vrrp_state == "BACKUP" &&
      output.mailha.hosts["mx1"].vrrp_priority > output.mailha.hosts["mx2"].vrrp_priority
    )
    error_message = "primary = mx1 must make mx1 the MASTER with the higher priority"
  }

  assert {
    condition     = keys(output.mailha.hosts) == tolist(["mx1", "mx2"]) && alltrue([for h in output.mailha.hosts : h.groups == tolist(["mail"])])
    error_message = "the relays are the only hosts: the load balancer and the DNS are Hetzner's services"
  }

  assert {
    condition = (
      output.mailha.load_balancer.kind == "hcloud" && output.mailha.load_balancer.host == "lb" &&
      output.mailha.load_balancer.address == "203.0.113.20" && output.mailha.load_balancer.source_address == "10.213.0.20" &&
      output.mailha.load_balancer.ports == tolist([25, 587])
    )
    error_message = "the load balancer must be the managed one: public address for clients, private address as the relays' source"
  }

  assert {
    condition     = output.mailha.floating_ip == "203.0.113.100"
    error_message = "the contract's floating IP must be Hetzner's floating IP"
  }

  assert {
    condition = (
      output.mailha.mover.kind == "hcloud" && output.mailha.mover.floating_ip_id == "4711" &&
      output.mailha.mover.server_ids == tomap({ mx1 = "1001", mx2 = "1002" })
    )
    error_message = "the mover needs the floating IP's id and each relay's server id"
  }

  assert {
    condition = (
      output.mailha.dns.zone == "example.com" && output.mailha.dns.nameserver == "192.0.2.53" &&
      output.mailha.dns.sending_host == "mta.example.com" && output.mailha.dns.submission_host == "smtp.example.com" &&
      output.mailha.dns.updates == "hcloud"
    )
    error_message = "the DNS part of the contract must come from the zone, dns_server, the names and dns_provider"
  }

  assert {
    condition     = output.known_hosts == "203.0.113.11 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfMx1ForTestsOnly\n203.0.113.12 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfMx2ForTestsOnly\n"
    error_message = "known_hosts must pair each relay's public address with the host key cloud-init installs"
  }
}

run "the_load_balancer_follows_the_active_relay" {
  command = apply

  override_resource {
    target = module.pair.hcloud_server.relay["mx2"]
    values = { id = "1002", ipv4_address = "203.0.113.12" }
  }

  assert {
    condition     = module.load_balancer.private_ip == "10.213.0.20" && module.load_balancer.ipv4 == "203.0.113.20"
    error_message = "the load balancer must join the private subnet at host 20"
  }

  assert {
    condition = (
      sort(keys(module.load_balancer.targets)) == sort(["mx1", "mx2"]) &&
      module.load_balancer.targets["mx1"].server_id == 1001 && module.load_balancer.targets["mx2"].server_id == 1002 &&
      alltrue([for t in module.load_balancer.targets : t.use_private_ip])
    )
    error_message = "both relays must be targets, reached at their private addresses"
  }

  assert {
    condition = (
      sort(keys(module.load_balancer.services)) == sort(["25", "587"]) &&
      module.load_balancer.services["25"].destination_port == 10025 &&
      module.load_balancer.services["587"].destination_port == 10587 &&
      alltrue([for s in module.load_balancer.services : s.proxyprotocol])
    )
    error_message = "25 and 587 must go with the PROXY protocol to the relays' PROXY listeners 10025 and 10587"
  }

  assert {
    condition = alltrue([for s in module.load_balancer.services : (
      s.health_check.protocol == "http" && s.health_check.port == 8025 &&
      s.health_check.http[0].path == "/active" && s.health_check.http[0].status_codes == tolist(["200"]) &&
      s.health_check.interval == 3 && s.health_check.timeout == 2 && s.health_check.retries == 1
    )])
    error_message = "the health check must ask the agent's /active on 8025 and count only 200 as healthy"
  }

  assert {
    condition     = output.hcloud.ptr == "mta.example.com" && output.hcloud.floating_ip.address == "203.0.113.100" && output.hcloud.floating_ip.id == "4711"
    error_message = "the floating IP's PTR must be the sending host name"
  }
}

run "the_cloud_firewall_admits_each_port_from_who_needs_it_only" {
  command = plan

  assert {
    condition = (
      jsonencode(module.firewall.rules) == jsonencode({
        "22"   = ["198.51.100.5/32"]
        "25"   = ["203.0.113.128/25"]
        "587"  = ["203.0.113.128/25"]
        "8025" = ["198.51.100.5/32"]
      })
    )
    error_message = "exactly four ports: SSH and the agent from the controller only, 25 and 587 from the submission networks only"
  }
}

run "without_submission_networks_only_ssh_and_the_agent_are_open" {
  command = plan

  variables {
    submission_networks = []
    operator_networks   = ["198.51.100.0/24", "192.0.2.0/28"]
  }

  assert {
    condition = jsonencode(module.firewall.rules) == jsonencode({
      "22"   = ["198.51.100.0/24", "192.0.2.0/28"]
      "8025" = ["198.51.100.5/32"]
    })
    error_message = "with no direct submitters 25 and 587 stay closed; operator_networks replace the controller for SSH"
  }
}

run "the_sending_domain_is_published_on_hetzner_dns" {
  command = apply

  assert {
    condition = (
      output.dns.published && output.dns.nsupdate == null &&
      output.dns.records["mta A"] == tolist(["203.0.113.100"]) &&
      output.dns.records["smtp A"] == tolist(["203.0.113.20"]) &&
      output.dns.records["news TXT"] == tolist(["\"v=spf1 ip4:203.0.113.100 -all\""]) &&
      output.dns.records["_dmarc.news TXT"] == tolist(["\"v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:dmarc@example.com\""])
    )
    error_message = "mta -> floating IP, smtp -> load balancer, SPF with the floating IP alone and DMARC for the sender domain"
  }

  assert {
    condition = (
      startswith(output.dns.records["mailha._domainkey.news TXT"][0], "\"v=DKIM1; k=rsa; p=MIIBIjAN") &&
      length(regexall("\"[^\"]{1,255}\"", output.dns.records["mailha._domainkey.news TXT"][0])) == 2 &&
      replace(replace(output.dns.records["mailha._domainkey.news TXT"][0], "\" \"", ""), "\"", "") == "v=DKIM1; k=rsa; p=${var.dkim_public_key}"
    )
    error_message = "the DKIM key must be published whole, split into strings of at most 255 characters"
  }

  assert {
    condition     = length(output.dns.records) == 5
    error_message = "five record sets: mta, smtp, SPF, DMARC and DKIM"
  }
}

run "rfc2136_describes_the_records_and_publishes_nothing" {
  command = apply

  variables {
    dns_provider    = "rfc2136"
    sender_domain   = null
    dkim_public_key = null
  }

  assert {
    condition     = length(module.dns_hcloud) == 0 && length(module.dns_rfc2136) == 1 && !output.dns.published
    error_message = "with rfc2136 no Hetzner zone is made and nothing is published"
  }

  assert {
    condition = (
      jsonencode(output.dns.records) == jsonencode({
        "mta A"      = ["203.0.113.100"]
        "smtp A"     = ["203.0.113.20"]
        "@ TXT"      = ["\"v=spf1 ip4:203.0.113.100 -all\""]
        "_dmarc TXT" = ["\"v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:dmarc@example.com\""]
      })
    )
    error_message = "the same records at the zone's apex, and no DKIM record without a key"
  }

  assert {
    condition = output.dns.nsupdate == join("\n", [
      "zone example.com.",
      "update delete mta.example.com. A",
      "update add mta.example.com. 300 A 203.0.113.100",
      "update delete smtp.example.com. A",
      "update add smtp.example.com. 300 A 203.0.113.20",
      "update delete example.com. TXT",
      "update add example.com. 300 TXT \"v=spf1 ip4:203.0.113.100 -all\"",
      "update delete _dmarc.example.com. TXT",
      "update add _dmarc.example.com. 300 TXT \"v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:dmarc@example.com\"",
      "send",
      "",
    ])
    error_message = "the nsupdate script must replace each record set with the described values"
  }

  assert {
    condition     = output.mailha.dns.updates == "rfc2136"
    error_message = "the contract must tell mailha to update the zone by RFC 2136"
  }
}

run "primary_mx2_starts_as_master_and_holds_the_floating_ip" {
  command = apply

  variables {
    primary = "mx2"
  }

  override_resource {
    target = module.pair.hcloud_server.relay["mx2"]
    values = { id = "1002", ipv4_address = "203.0.113.12" }
  }

  assert {
    condition     = output.mailha.hosts["mx2"].vrrp_state == "MASTER" && output.mailha.hosts["mx1"].vrrp_state == "BACKUP"
    error_message = "primary = mx2 must make mx2 the MASTER"
  }
}

run "rejects_one_relay" {
  command = plan

  variables {
    relays            = ["mx1"]
    host_public_keys  = { mx1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfMx1ForTestsOnly mx1" }
    host_private_keys = { mx1 = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-key-mx1\n-----END OPENSSH PRIVATE KEY-----\n" }
  }

  expect_failures = [var.relays]
}

run "rejects_a_relay_name_that_is_no_dns_label" {
  command = plan

  variables {
    relays = ["mx1", "MX_2"]
  }

  expect_failures = [var.relays]
}

run "rejects_a_primary_that_is_no_relay" {
  command = plan

  variables {
    primary = "mx3"
  }

  expect_failures = [var.primary]
}

run "rejects_an_unknown_location" {
  command = plan

  variables {
    location = "fra1"
  }

  expect_failures = [var.location]
}

run "rejects_an_image_other_than_debian_12" {
  command = plan

  variables {
    image = "ubuntu-24.04"
  }

  expect_failures = [var.image]
}

run "rejects_a_public_network" {
  command = plan

  variables {
    network_cidr = "203.0.113.0/24"
    subnet_cidr  = "203.0.113.0/25"
  }

  expect_failures = [var.network_cidr]
}

run "rejects_a_subnet_outside_the_network" {
  command = plan

  variables {
    subnet_cidr = "10.214.0.0/24"
  }

  expect_failures = [var.subnet_cidr]
}

run "rejects_a_controller_address_that_is_no_address" {
  command = plan

  variables {
    controller_address = "my-laptop"
  }

  expect_failures = [var.controller_address]
}

run "rejects_submission_from_the_whole_internet" {
  command = plan

  variables {
    submission_networks = ["0.0.0.0/0"]
  }

  expect_failures = [var.submission_networks]
}

run "rejects_root_as_ssh_user" {
  command = plan

  variables {
    ssh_user = "root"
  }

  expect_failures = [var.ssh_user]
}

run "rejects_a_private_key_as_ssh_public_key" {
  command = plan

  variables {
    ssh_public_key = "-----BEGIN OPENSSH PRIVATE KEY-----"
  }

  expect_failures = [var.ssh_public_key]
}

run "rejects_a_relative_known_hosts_file" {
  command = plan

  variables {
    ssh_known_hosts_file = "known_hosts"
  }

  expect_failures = [var.ssh_known_hosts_file]
}

run "rejects_host_keys_missing_a_relay" {
  command = plan

  variables {
    host_public_keys = {
      mx1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfMx1ForTestsOnly mx1"
    }
  }

  expect_failures = [var.host_public_keys]
}

run "rejects_a_host_private_key_that_is_no_openssh_key" {
  command = plan

  variables {
    host_private_keys = {
      mx1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfMx1ForTestsOnly mx1"
      mx2 = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-key-mx2\n-----END OPENSSH PRIVATE KEY-----\n"
    }
  }

  expect_failures = [var.host_private_keys]
}

run "rejects_a_health_check_timeout_not_shorter_than_its_interval" {
  command = plan

  variables {
    health_check = { interval = 3, timeout = 3, retries = 1 }
  }

  expect_failures = [var.health_check]
}

run "rejects_a_zone_with_a_trailing_dot" {
  command = plan

  variables {
    dns_zone      = "example.com."
    sender_domain = null
  }

  expect_failures = [var.dns_zone]
}

run "rejects_an_unknown_dns_provider" {
  command = plan

  variables {
    dns_provider = "route53"
  }

  expect_failures = [var.dns_provider]
}

run "rejects_a_sender_domain_outside_the_zone" {
  command = plan

  variables {
    sender_domain = "news.example.net"
  }

  expect_failures = [var.sender_domain]
}

run "rejects_a_dkim_key_in_pem_form" {
  command = plan

  variables {
    dkim_public_key = "-----BEGIN PUBLIC KEY-----"
  }

  expect_failures = [var.dkim_public_key]
}

run "rejects_an_unknown_dmarc_policy" {
  command = plan

  variables {
    dmarc_policy = "block"
  }

  expect_failures = [var.dmarc_policy]
}

run "rejects_a_sending_name_that_is_a_relay_name" {
  command = plan

  variables {
    sending_name = "mx1"
  }

  expect_failures = [var.sending_name]
}

run "rejects_a_dns_server_that_is_no_address" {
  command = plan

  variables {
    dns_server = "hydrogen.ns.example"
  }

  expect_failures = [var.dns_server]
}
