# Offline tests of the output contract module (modules/mailha_contract):
# plans only, with the built-in provider. The names it carries become
# directories, command-line arguments and Ansible names, so each is checked
# against the same patterns as mailha/names.py; every run below must fail.

variables {
  environment = "lab"
  connection  = "podman"
  network = {
    cidr    = "10.213.0.0/24"
    gateway = "10.213.0.1"
  }
  floating_ip = "10.213.0.100"
  dns = {
    zone            = "mailha.test"
    nameserver      = "10.213.0.10"
    sending_host    = "mta.mailha.test"
    submission_host = "smtp.mailha.test"
  }
  load_balancer = {
    host    = "lb"
    address = "10.213.0.20"
    ports   = [25, 587]
  }
  hosts = {
    mx1 = {
      address       = "10.213.0.11"
      fqdn          = "mx1.mailha.test"
      target        = "mailha-mx1"
      groups        = ["mail"]
      vrrp_priority = 150
      vrrp_state    = "MASTER"
    }
    mx2 = {
      address       = "10.213.0.12"
      fqdn          = "mx2.mailha.test"
      target        = "mailha-mx2"
      groups        = ["mail"]
      vrrp_priority = 100
      vrrp_state    = "BACKUP"
    }
    lb = {
      address = "10.213.0.20"
      fqdn    = "lb.mailha.test"
      target  = "mailha-lb"
      groups  = ["loadbalancer"]
    }
    ns = {
      address = "10.213.0.10"
      fqdn    = "ns.mailha.test"
      target  = "mailha-ns"
      groups  = ["dns"]
    }
  }
}

run "the_contract_module_accepts_the_lab" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  assert {
    condition     = output.contract.environment == "lab" && output.primary == "mx1"
    error_message = "a valid contract must pass through unchanged"
  }

  assert {
    condition     = output.contract.ssh == null
    error_message = "the podman connection carries no ssh settings"
  }
}

run "rejects_an_environment_that_leaves_its_directory" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    environment = "../../tmp/x"
  }

  expect_failures = [var.environment]
}

run "rejects_an_upper_case_environment" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    environment = "Lab"
  }

  expect_failures = [var.environment]
}

run "rejects_a_host_name_with_a_space" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    hosts = {
      mx1 = {
        address       = "10.213.0.11"
        fqdn          = "mx1.mailha.test"
        target        = "mailha-mx1"
        groups        = ["mail"]
        vrrp_priority = 150
        vrrp_state    = "MASTER"
      }
      mx2 = {
        address       = "10.213.0.12"
        fqdn          = "mx2.mailha.test"
        target        = "mailha-mx2"
        groups        = ["mail"]
        vrrp_priority = 100
        vrrp_state    = "BACKUP"
      }
      lb = {
        address = "10.213.0.20"
        fqdn    = "lb.mailha.test"
        target  = "mailha-lb"
        groups  = ["loadbalancer"]
      }
      "n s" = {
        address = "10.213.0.10"
        fqdn    = "ns.mailha.test"
        target  = "mailha-ns"
        groups  = ["dns"]
      }
    }
  }

  expect_failures = [var.hosts]
}

run "rejects_a_host_name_with_a_semicolon" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    hosts = {
      mx1 = {
        address       = "10.213.0.11"
        fqdn          = "mx1.mailha.test"
        target        = "mailha-mx1"
        groups        = ["mail"]
        vrrp_priority = 150
        vrrp_state    = "MASTER"
      }
      mx2 = {
        address       = "10.213.0.12"
        fqdn          = "mx2.mailha.test"
        target        = "mailha-mx2"
        groups        = ["mail"]
        vrrp_priority = 100
        vrrp_state    = "BACKUP"
      }
      lb = {
        address = "10.213.0.20"
        fqdn    = "lb.mailha.test"
        target  = "mailha-lb"
        groups  = ["loadbalancer"]
      }
      "ns;id" = {
        address = "10.213.0.10"
        fqdn    = "ns.mailha.test"
        target  = "mailha-ns"
        groups  = ["dns"]
      }
    }
  }

  expect_failures = [var.hosts]
}

run "rejects_a_target_with_shell_characters" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    hosts = {
      mx1 = {
        address       = "10.213.0.11"
        fqdn          = "mx1.mailha.test"
        target        = "mailha-mx1; rm -rf /"
        groups        = ["mail"]
        vrrp_priority = 150
        vrrp_state    = "MASTER"
      }
      mx2 = {
        address       = "10.213.0.12"
        fqdn          = "mx2.mailha.test"
        target        = "mailha-mx2"
        groups        = ["mail"]
        vrrp_priority = 100
        vrrp_state    = "BACKUP"
      }
      lb = {
        address = "10.213.0.20"
        fqdn    = "lb.mailha.test"
        target  = "mailha-lb"
        groups  = ["loadbalancer"]
      }
      ns = {
        address = "10.213.0.10"
        fqdn    = "ns.mailha.test"
        target  = "mailha-ns"
        groups  = ["dns"]
      }
    }
  }

  expect_failures = [var.hosts]
}

run "rejects_a_target_that_is_an_option" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    hosts = {
      mx1 = {
        address       = "10.213.0.11"
        fqdn          = "mx1.mailha.test"
        target        = "--privileged"
        groups        = ["mail"]
        vrrp_priority = 150
        vrrp_state    = "MASTER"
      }
      mx2 = {
        address       = "10.213.0.12"
        fqdn          = "mx2.mailha.test"
        target        = "mailha-mx2"
        groups        = ["mail"]
        vrrp_priority = 100
        vrrp_state    = "BACKUP"
      }
      lb = {
        address = "10.213.0.20"
        fqdn    = "lb.mailha.test"
        target  = "mailha-lb"
        groups  = ["loadbalancer"]
      }
      ns = {
        address = "10.213.0.10"
        fqdn    = "ns.mailha.test"
        target  = "mailha-ns"
        groups  = ["dns"]
      }
    }
  }

  expect_failures = [var.hosts]
}

run "rejects_an_fqdn_that_is_no_dns_name" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    hosts = {
      mx1 = {
        address       = "10.213.0.11"
        fqdn          = "mx1.mailha.test;id"
        target        = "mailha-mx1"
        groups        = ["mail"]
        vrrp_priority = 150
        vrrp_state    = "MASTER"
      }
      mx2 = {
        address       = "10.213.0.12"
        fqdn          = "mx2.mailha.test"
        target        = "mailha-mx2"
        groups        = ["mail"]
        vrrp_priority = 100
        vrrp_state    = "BACKUP"
      }
      lb = {
        address = "10.213.0.20"
        fqdn    = "lb.mailha.test"
        target  = "mailha-lb"
        groups  = ["loadbalancer"]
      }
      ns = {
        address = "10.213.0.10"
        fqdn    = "ns.mailha.test"
        target  = "mailha-ns"
        groups  = ["dns"]
      }
    }
  }

  expect_failures = [var.hosts]
}

run "rejects_a_host_address_that_is_no_ip" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    hosts = {
      mx1 = {
        address       = "10.213.0.11 ; id"
        fqdn          = "mx1.mailha.test"
        target        = "mailha-mx1"
        groups        = ["mail"]
        vrrp_priority = 150
        vrrp_state    = "MASTER"
      }
      mx2 = {
        address       = "10.213.0.12"
        fqdn          = "mx2.mailha.test"
        target        = "mailha-mx2"
        groups        = ["mail"]
        vrrp_priority = 100
        vrrp_state    = "BACKUP"
      }
      lb = {
        address = "10.213.0.20"
        fqdn    = "lb.mailha.test"
        target  = "mailha-lb"
        groups  = ["loadbalancer"]
      }
      ns = {
        address = "10.213.0.10"
        fqdn    = "ns.mailha.test"
        target  = "mailha-ns"
        groups  = ["dns"]
      }
    }
  }

  expect_failures = [var.hosts]
}

run "rejects_an_unknown_group" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    hosts = {
      mx1 = {
        address       = "10.213.0.11"
        fqdn          = "mx1.mailha.test"
        target        = "mailha-mx1"
        groups        = ["mail"]
        vrrp_priority = 150
        vrrp_state    = "MASTER"
      }
      mx2 = {
        address       = "10.213.0.12"
        fqdn          = "mx2.mailha.test"
        target        = "mailha-mx2"
        groups        = ["mail"]
        vrrp_priority = 100
        vrrp_state    = "BACKUP"
      }
      lb = {
        address = "10.213.0.20"
        fqdn    = "lb.mailha.test"
        target  = "mailha-lb"
        groups  = ["loadbalancer"]
      }
      ns = {
        address = "10.213.0.10"
        fqdn    = "ns.mailha.test"
        target  = "mailha-ns"
        groups  = ["mailha_switch_target"]
      }
    }
  }

  expect_failures = [var.hosts]
}

run "rejects_a_zone_with_a_trailing_dot" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    dns = {
      zone            = "mailha.test."
      nameserver      = "10.213.0.10"
      sending_host    = "mta.mailha.test"
      submission_host = "smtp.mailha.test"
    }
  }

  expect_failures = [var.dns]
}

run "rejects_a_sending_host_outside_the_zone" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    dns = {
      zone            = "mailha.test"
      nameserver      = "10.213.0.10"
      sending_host    = "mta.example.net"
      submission_host = "smtp.mailha.test"
    }
  }

  expect_failures = [var.dns]
}

run "rejects_a_nameserver_that_is_no_ip" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    dns = {
      zone            = "mailha.test"
      nameserver      = "ns.mailha.test"
      sending_host    = "mta.mailha.test"
      submission_host = "smtp.mailha.test"
    }
  }

  expect_failures = [var.dns]
}

run "rejects_a_port_out_of_range" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    load_balancer = {
      host    = "lb"
      address = "10.213.0.20"
      ports   = [25, 70000]
    }
  }

  expect_failures = [var.load_balancer]
}

run "rejects_a_load_balancer_name_with_a_space" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    load_balancer = {
      host    = "l b"
      address = "10.213.0.20"
      ports   = [25, 587]
    }
  }

  expect_failures = [var.load_balancer]
}

run "rejects_a_gateway_that_is_no_ip" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    network = {
      cidr    = "10.213.0.0/24"
      gateway = "gateway"
    }
  }

  expect_failures = [var.network]
}

run "rejects_a_host_outside_the_zone" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    hosts = {
      mx1 = {
        address       = "10.213.0.11"
        fqdn          = "mx1.example.net"
        target        = "mailha-mx1"
        groups        = ["mail"]
        vrrp_priority = 150
        vrrp_state    = "MASTER"
      }
      mx2 = {
        address       = "10.213.0.12"
        fqdn          = "mx2.mailha.test"
        target        = "mailha-mx2"
        groups        = ["mail"]
        vrrp_priority = 100
        vrrp_state    = "BACKUP"
      }
      lb = {
        address = "10.213.0.20"
        fqdn    = "lb.mailha.test"
        target  = "mailha-lb"
        groups  = ["loadbalancer"]
      }
      ns = {
        address = "10.213.0.10"
        fqdn    = "ns.mailha.test"
        target  = "mailha-ns"
        groups  = ["dns"]
      }
    }
  }

  expect_failures = [output.contract]
}

run "rejects_a_load_balancer_that_is_no_host" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    load_balancer = {
      host    = "haproxy"
      address = "10.213.0.20"
      ports   = [25, 587]
    }
  }

  expect_failures = [output.contract]
}

run "rejects_a_floating_ip_that_is_a_host_address" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    floating_ip = "10.213.0.11"
  }

  expect_failures = [output.contract]
}

run "accepts_ssh_with_its_user_and_port" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    connection = "ssh"
    ssh = {
      user = "admin"
      port = 2222
    }
  }

  assert {
    condition     = output.contract.ssh.user == "admin" && output.contract.ssh.port == 2222
    error_message = "the ssh settings must pass through to the contract"
  }
}

run "rejects_ssh_without_its_settings" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    connection = "ssh"
  }

  expect_failures = [output.contract]
}

run "rejects_ssh_settings_with_podman" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    ssh = {
      user = "root"
      port = 22
    }
  }

  expect_failures = [output.contract]
}

run "rejects_an_ssh_user_with_shell_characters" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    connection = "ssh"
    ssh = {
      user = "admin;id"
      port = 22
    }
  }

  expect_failures = [var.ssh]
}

run "rejects_an_ssh_port_out_of_range" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    connection = "ssh"
    ssh = {
      user = "admin"
      port = 0
    }
  }

  expect_failures = [var.ssh]
}

run "the_optional_cloud_fields_default_to_a_haproxy_host_and_no_mover" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  assert {
    condition = (
      output.contract.load_balancer.kind == "haproxy" && output.contract.load_balancer.source_address == null &&
      output.contract.dns.updates == "rfc2136" && output.contract.mover == null
    )
    error_message = "without the optional fields the contract must describe a HAProxy host, RFC 2136 updates and no mover"
  }
}

run "accepts_a_managed_load_balancer_that_is_no_host_with_a_mover" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    load_balancer = {
      host           = "mailha-lb"
      address        = "198.51.100.20"
      source_address = "10.213.0.20"
      ports          = [25, 587]
      kind           = "hcloud"
    }
    mover = {
      kind           = "hcloud"
      floating_ip_id = "4711"
      server_ids     = { mx1 = "101", mx2 = "102" }
    }
  }

  assert {
    condition     = output.contract.load_balancer.source_address == "10.213.0.20" && output.contract.mover.server_ids["mx2"] == "102"
    error_message = "the managed load balancer and the mover must pass through to the contract"
  }
}

run "rejects_a_managed_load_balancer_named_like_a_host" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    load_balancer = {
      host    = "lb"
      address = "198.51.100.20"
      ports   = [25, 587]
      kind    = "hcloud"
    }
  }

  expect_failures = [output.contract]
}

run "rejects_an_unknown_load_balancer_kind" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    load_balancer = {
      host    = "lb"
      address = "10.213.0.20"
      ports   = [25, 587]
      kind    = "nginx"
    }
  }

  expect_failures = [var.load_balancer]
}

run "rejects_a_mover_without_every_mail_host" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    mover = {
      kind           = "hcloud"
      floating_ip_id = "4711"
      server_ids     = { mx1 = "101" }
    }
  }

  expect_failures = [output.contract]
}

run "rejects_a_mover_id_that_is_no_number" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    mover = {
      kind           = "hcloud"
      floating_ip_id = "fip-1"
      server_ids     = { mx1 = "101", mx2 = "102" }
    }
  }

  expect_failures = [var.mover]
}

run "rejects_unknown_dns_updates" {
  command = plan

  module {
    source = "../../modules/mailha_contract"
  }

  variables {
    dns = {
      zone            = "mailha.test"
      nameserver      = "10.213.0.10"
      sending_host    = "mta.mailha.test"
      submission_host = "smtp.mailha.test"
      updates         = "route53"
    }
  }

  expect_failures = [var.dns]
}
