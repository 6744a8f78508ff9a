# The output contract every environment emits, checked in one place so that
# the inventory generator can trust its shape whatever built the hosts.
locals {
  mail_hosts = { for k, h in var.hosts : k => h if contains(h.groups, "mail") }
  master     = one([for k, h in local.mail_hosts : k if h.vrrp_state == "MASTER"])

  contract = {
    environment   = var.environment
    connection    = var.connection
    ssh           = var.ssh
    network       = var.network
    floating_ip   = var.floating_ip
    dns           = var.dns
    load_balancer = var.load_balancer
    hosts         = var.hosts
    mover         = var.mover
  }
}
