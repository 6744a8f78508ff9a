# Offline tests of the lab environment: plans only, so no container is made.

variables {
  image = "localhost/mailha-lab:test"
}

run "default_lab_follows_the_contract" {
  command = plan

  assert {
    condition     = output.mailha.environment == "lab" && output.mailha.connection == "podman"
    error_message = "the lab must announce itself as environment lab with the podman connection"
  }

  assert {
    condition     = output.mailha.floating_ip == "10.213.0.100"
    error_message = "the floating IP must be host 100 of the lab network"
  }

  assert {
    condition     = output.mailha.hosts["mx1"].vrrp_state == "MASTER" && output.mailha.hosts["mx2"].vrrp_state == "BACKUP"
    error_message = "mx1 must start as MASTER and mx2 as BACKUP by default"
  }

  assert {
    condition     = output.mailha.hosts["mx1"].vrrp_priority > output.mailha.hosts["mx2"].vrrp_priority
    error_message = "the primary must have the higher VRRP priority"
  }

  assert {
    condition     = output.mailha.hosts["lb"].vrrp_priority == null && contains(output.mailha.hosts["lb"].groups, "loadbalancer")
    error_message = "the load balancer is no VRRP member"
  }

  assert {
    condition     = output.mailha.dns.nameserver == output.mailha.hosts["ns"].address
    error_message = "the contract's nameserver must be the ns host"
  }

  assert {
    condition     = output.mailha.load_balancer.address == output.mailha.hosts["lb"].address
    error_message = "the contract's load balancer must be the lb host"
  }
}

run "primary_can_be_mx2" {
  command = plan

  variables {
    primary      = "mx2"
    network_cidr = "10.214.0.0/24"
  }

  assert {
    condition     = output.mailha.hosts["mx2"].vrrp_state == "MASTER" && output.mailha.hosts["mx1"].vrrp_state == "BACKUP"
    error_message = "primary = mx2 must make mx2 the MASTER"
  }

  assert {
    condition     = output.mailha.hosts["mx1"].address == "10.214.0.11" && output.mailha.floating_ip == "10.214.0.100"
    error_message = "addresses must follow network_cidr"
  }
}

run "rejects_a_malformed_cidr" {
  command = plan

  variables {
    network_cidr = "10.213.0.0"
  }

  expect_failures = [var.network_cidr]
}

run "rejects_an_unknown_primary" {
  command = plan

  variables {
    primary = "mx3"
  }

  expect_failures = [var.primary]
}

run "rejects_a_missing_image" {
  command = plan

  variables {
    image = ""
  }

  expect_failures = [var.image]
}
