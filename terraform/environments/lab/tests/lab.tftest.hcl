# Offline tests of the lab environment: plans only, so no container is made.

variables {
  image          = "localhost/mailha-lab:test"
  ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA test@lab"
}

run "default_lab_follows_the_contract" {
  command = plan

  assert {
    condition     = output.mailha.environment == "lab" && output.mailha.connection == "ssh"
    error_message = "the lab must announce itself as environment lab, reached over ssh"
  }

  assert {
    condition = (
      output.mailha.ssh.user == "mailha" && output.mailha.ssh.port == 22
      && endswith(output.mailha.ssh.private_key_file, "/.lab/secrets/lab/id_ed25519")
      && endswith(output.mailha.ssh.known_hosts_file, "/.lab/secrets/lab/known_hosts")
      && startswith(output.mailha.ssh.known_hosts_file, "/")
    )
    error_message = "the lab's login must be the sudo user mailha with the operator key and the lab's known_hosts, as absolute paths"
  }

  assert {
    condition     = alltrue([for name, host in output.mailha.hosts : host.target == host.address])
    error_message = "ssh must reach every lab host at its address"
  }

  assert {
    condition     = contains(keys(output.containers), "mx1") && length(output.containers) == 5
    error_message = "the containers output must name every lab host's container"
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

run "root_cannot_be_the_login" {
  command = plan

  variables {
    ssh_user = "root"
  }

  expect_failures = [var.ssh_user]
}

run "a_public_key_is_required_in_openssh_form" {
  command = plan

  variables {
    ssh_public_key = "-----BEGIN PUBLIC KEY-----"
  }

  expect_failures = [var.ssh_public_key]
}
