# Offline tests of the existing-servers environment: the values of
# terraform.tfvars.example produce the output contract, and each rule of
# variables.tf refuses what breaks it. Every variable is set here, so a real
# terraform.tfvars in the directory cannot change what is tested.

variables {
  relays = {
    mx1 = { address = "192.0.2.11" }
    mx2 = { address = "192.0.2.12" }
  }
  primary            = "mx1"
  load_balancer      = { name = "lb", address = "192.0.2.20" }
  network_cidr       = "192.0.2.0/24"
  floating_ip        = "192.0.2.100"
  controller_address = "198.51.100.5"
  ssh_user           = "root"
  ssh_port           = 22
  dns_zone           = "example.com"
  dns_server         = "192.0.2.10"
  sending_name       = "mta"
  submission_name    = "smtp"
  dns_host           = { name = "ns", address = "192.0.2.10" }
  sink               = { name = "sink", address = "198.51.100.30" }
}

run "the_example_values_produce_the_contract" {
  command = apply

  assert {
    condition     = output.mailha.environment == "existing" && output.mailha.connection == "ssh"
    error_message = "the environment must announce itself as existing with the ssh connection"
  }

  assert {
    condition     = output.mailha.ssh.user == "root" && output.mailha.ssh.port == 22
    error_message = "the contract must carry the ssh login"
  }

  assert {
    condition     = output.mailha.floating_ip == "192.0.2.100" && output.mailha.network.cidr == "192.0.2.0/24"
    error_message = "the floating IP and the network must come from the settings"
  }

  assert {
    condition     = output.mailha.network.gateway == "198.51.100.5"
    error_message = "the controller's address is the contract's network.gateway"
  }

  assert {
    condition     = output.mailha.hosts["mx1"].vrrp_state == "MASTER" && output.mailha.hosts["mx2"].vrrp_state == "BACKUP"
    error_message = "primary = mx1 must make mx1 the MASTER and mx2 the BACKUP"
  }

  assert {
    condition     = output.mailha.hosts["mx1"].vrrp_priority > output.mailha.hosts["mx2"].vrrp_priority
    error_message = "the primary must have the higher VRRP priority"
  }

  assert {
    condition     = output.mailha.hosts["mx1"].target == "192.0.2.11" && output.mailha.hosts["mx1"].fqdn == "mx1.example.com"
    error_message = "without ssh_host, Ansible connects to the server's address; its name is <name>.<dns_zone>"
  }

  assert {
    condition     = output.mailha.load_balancer.host == "lb" && output.mailha.load_balancer.address == output.mailha.hosts["lb"].address
    error_message = "the contract's load balancer must be the lb host"
  }

  assert {
    condition = (
      output.mailha.hosts["lb"].groups == tolist(["loadbalancer"]) && output.mailha.hosts["ns"].groups == tolist(["dns"]) &&
      output.mailha.hosts["sink"].groups == tolist(["recipient"]) && output.mailha.hosts["lb"].vrrp_priority == null
    )
    error_message = "lb, ns and sink must be in their groups, with no VRRP role"
  }

  assert {
    condition = (
      output.mailha.dns.zone == "example.com" && output.mailha.dns.nameserver == "192.0.2.10" &&
      output.mailha.dns.sending_host == "mta.example.com" && output.mailha.dns.submission_host == "smtp.example.com"
    )
    error_message = "the DNS part of the contract must come from dns_zone, dns_server and the names"
  }
}

run "optional_servers_may_be_left_out" {
  command = plan

  variables {
    primary    = null
    dns_host   = null
    sink       = null
    ssh_user   = "deploy"
    ssh_port   = 2222
    dns_server = "203.0.113.53"
    relays = {
      relay-b = { address = "192.0.2.12", ssh_host = "relay-b.example.net" }
      relay-a = { address = "192.0.2.11" }
    }
  }

  assert {
    condition     = keys(output.mailha.hosts) == tolist(["lb", "relay-a", "relay-b"])
    error_message = "without dns_host and sink the contract holds the relays and the load balancer only"
  }

  assert {
    condition     = output.mailha.hosts["relay-a"].vrrp_state == "MASTER" && output.mailha.hosts["relay-b"].vrrp_state == "BACKUP"
    error_message = "without primary, the first relay by name starts as MASTER"
  }

  assert {
    condition     = output.mailha.hosts["relay-b"].target == "relay-b.example.net" && output.mailha.hosts["relay-b"].address == "192.0.2.12"
    error_message = "ssh_host is where Ansible connects; address stays the server's address"
  }

  assert {
    condition     = output.mailha.dns.nameserver == "203.0.113.53" && output.mailha.ssh.user == "deploy" && output.mailha.ssh.port == 2222
    error_message = "dns_server and the ssh login must pass through"
  }
}

run "dns_server_defaults_to_the_dns_host" {
  command = plan

  variables {
    dns_server = null
    dns_host   = { address = "192.0.2.53" }
  }

  assert {
    condition     = output.mailha.dns.nameserver == "192.0.2.53" && output.mailha.hosts["ns"].address == "192.0.2.53"
    error_message = "without dns_server the nameserver is dns_host's address, and dns_host is named ns"
  }
}

run "rejects_one_relay" {
  command = plan

  variables {
    relays = { mx1 = { address = "192.0.2.11" } }
  }

  expect_failures = [var.relays]
}

run "rejects_two_relays_with_the_same_address" {
  command = plan

  variables {
    relays = {
      mx1 = { address = "192.0.2.11" }
      mx2 = { address = "192.0.2.11" }
    }
  }

  expect_failures = [var.relays]
}

run "rejects_a_relay_name_that_is_no_dns_label" {
  command = plan

  variables {
    relays = {
      mx1    = { address = "192.0.2.11" }
      "mx 2" = { address = "192.0.2.12" }
    }
    primary = "mx1"
  }

  expect_failures = [var.relays]
}

run "rejects_a_relay_address_that_is_no_ipv4_address" {
  command = plan

  variables {
    relays = {
      mx1 = { address = "192.0.2.11" }
      mx2 = { address = "mx2.example.com" }
    }
  }

  expect_failures = [var.relays]
}

run "rejects_a_relay_outside_the_network" {
  command = plan

  variables {
    relays = {
      mx1 = { address = "192.0.2.11" }
      mx2 = { address = "198.51.100.12" }
    }
  }

  expect_failures = [var.relays]
}

run "rejects_an_ssh_host_with_shell_characters" {
  command = plan

  variables {
    relays = {
      mx1 = { address = "192.0.2.11", ssh_host = "mx1.example.net;id" }
      mx2 = { address = "192.0.2.12" }
    }
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

run "rejects_a_load_balancer_on_a_relay_address" {
  command = plan

  variables {
    load_balancer = { address = "192.0.2.12" }
  }

  expect_failures = [var.load_balancer]
}

run "rejects_a_load_balancer_address_that_is_no_ipv4_address" {
  command = plan

  variables {
    load_balancer = { address = "2001:db8::20" }
  }

  expect_failures = [var.load_balancer]
}

run "rejects_a_dns_host_named_like_a_relay" {
  command = plan

  variables {
    dns_host = { name = "mx1", address = "192.0.2.10" }
  }

  expect_failures = [var.dns_host]
}

run "rejects_a_sink_on_the_load_balancer_address" {
  command = plan

  variables {
    sink = { address = "192.0.2.20" }
  }

  expect_failures = [var.sink]
}

run "rejects_a_floating_ip_equal_to_a_relay_address" {
  command = plan

  variables {
    floating_ip = "192.0.2.11"
  }

  expect_failures = [var.floating_ip]
}

run "rejects_a_floating_ip_equal_to_the_sink_address" {
  command = plan

  variables {
    sink        = { address = "192.0.2.30" }
    floating_ip = "192.0.2.30"
  }

  expect_failures = [var.floating_ip]
}

run "rejects_a_floating_ip_outside_the_network" {
  command = plan

  variables {
    floating_ip = "198.51.100.100"
  }

  expect_failures = [var.floating_ip]
}

run "rejects_the_broadcast_address_as_floating_ip" {
  command = plan

  variables {
    floating_ip = "192.0.2.255"
  }

  expect_failures = [var.floating_ip]
}

run "rejects_a_floating_ip_that_is_no_address" {
  command = plan

  variables {
    floating_ip = "192.0.2.300"
  }

  expect_failures = [var.floating_ip]
}

run "rejects_a_network_written_with_a_host_address" {
  command = plan

  variables {
    network_cidr = "192.0.2.5/24"
  }

  expect_failures = [var.network_cidr]
}

run "rejects_a_network_without_a_prefix" {
  command = plan

  variables {
    network_cidr = "192.0.2.0"
  }

  expect_failures = [var.network_cidr]
}

run "rejects_a_network_too_small_for_the_pair" {
  command = plan

  variables {
    network_cidr = "192.0.2.0/30"
  }

  expect_failures = [var.network_cidr]
}

run "rejects_a_controller_address_that_is_no_address" {
  command = plan

  variables {
    controller_address = "my-laptop"
  }

  expect_failures = [var.controller_address]
}

run "rejects_an_ssh_port_out_of_range" {
  command = plan

  variables {
    ssh_port = 65536
  }

  expect_failures = [var.ssh_port]
}

run "rejects_a_fractional_ssh_port" {
  command = plan

  variables {
    ssh_port = 22.5
  }

  expect_failures = [var.ssh_port]
}

run "rejects_an_invalid_ssh_user" {
  command = plan

  variables {
    ssh_user = "Admin User"
  }

  expect_failures = [var.ssh_user]
}

run "rejects_a_zone_with_a_trailing_dot" {
  command = plan

  variables {
    dns_zone = "example.com."
  }

  expect_failures = [var.dns_zone]
}

run "rejects_a_dns_server_that_is_no_address" {
  command = plan

  variables {
    dns_server = "ns.example.com"
  }

  expect_failures = [var.dns_server]
}

run "rejects_no_dns_server_without_a_dns_host" {
  command = plan

  variables {
    dns_server = null
    dns_host   = null
  }

  expect_failures = [var.dns_server]
}

run "rejects_a_sending_name_that_is_a_server_name" {
  command = plan

  variables {
    sending_name = "mx1"
  }

  expect_failures = [var.sending_name]
}

run "rejects_a_submission_name_that_is_a_server_name" {
  command = plan

  variables {
    submission_name = "lb"
  }

  expect_failures = [var.submission_name]
}
