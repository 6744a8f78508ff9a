# Servers you rent already: nothing is created. This environment checks the
# settings in terraform.tfvars and turns them into the same output contract
# as the lab, so `mailha inventory` and the playbooks serve both.
locals {
  relay_names = sort(keys(var.relays))
  primary     = coalesce(var.primary, local.relay_names[0])
  nameserver  = var.dns_server != null ? var.dns_server : var.dns_host.address

  # The same starting priorities as the lab: the primary is MASTER.
  vrrp = {
    for name in local.relay_names : name => (
      name == local.primary ? { priority = 150, state = "MASTER" } : { priority = 100, state = "BACKUP" }
    )
  }

  servers = merge(
    { for name, relay in var.relays : name => merge(relay, { groups = ["mail"] }) },
    { (var.load_balancer.name) = { address = var.load_balancer.address, ssh_host = var.load_balancer.ssh_host, groups = ["loadbalancer"] } },
    var.dns_host == null ? {} : { (var.dns_host.name) = { address = var.dns_host.address, ssh_host = var.dns_host.ssh_host, groups = ["dns"] } },
    var.sink == null ? {} : { (var.sink.name) = { address = var.sink.address, ssh_host = var.sink.ssh_host, groups = ["recipient"] } },
  )
}

module "contract" {
  source = "../../modules/mailha_contract"

  environment = "existing"
  connection  = "ssh"
  ssh = {
    user             = var.ssh_user
    port             = var.ssh_port
    private_key_file = var.ssh_private_key_file
    known_hosts_file = var.ssh_known_hosts_file
  }
  network = {
    cidr    = var.network_cidr
    gateway = var.controller_address
  }
  floating_ip = var.floating_ip
  dns = {
    zone            = var.dns_zone
    nameserver      = local.nameserver
    sending_host    = "${var.sending_name}.${var.dns_zone}"
    submission_host = "${var.submission_name}.${var.dns_zone}"
  }
  load_balancer = {
    host    = var.load_balancer.name
    address = var.load_balancer.address
    ports   = [25, 587]
  }
  hosts = {
    for name, server in local.servers : name => {
      address       = server.address
      fqdn          = "${name}.${var.dns_zone}"
      target        = coalesce(server.ssh_host, server.address)
      groups        = server.groups
      vrrp_priority = try(local.vrrp[name].priority, null)
      vrrp_state    = try(local.vrrp[name].state, null)
    }
  }
}
