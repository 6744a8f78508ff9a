# The two relays, spread over different hosts of Hetzner's, each on the
# private network at a fixed address, and the floating IP that carries the
# sending identity, with its PTR.
locals {
  # cloud-init does what scripts/lab-podman.sh host-login does in the lab:
  # a sudo user with the operator's key, sshd with keys only and no root,
  # and host keys made on the controller, so known_hosts is written before
  # the first connection instead of trusting whatever answers.
  user_data = {
    for name, relay in var.relays : name => join("\n", ["#cloud-config", yamlencode({
      hostname                  = name
      fqdn                      = "${name}.${var.domain}"
      prefer_fqdn_over_hostname = false
      users = [{
        name                = var.ssh_user
        shell               = "/bin/bash"
        lock_passwd         = true
        sudo                = "ALL=(ALL) NOPASSWD:ALL"
        ssh_authorized_keys = [var.ssh_public_key]
      }]
      disable_root    = true
      ssh_pwauth      = false
      ssh_deletekeys  = true
      ssh_genkeytypes = []
      ssh_keys = {
        ed25519_private = var.host_private_keys[name]
        ed25519_public  = var.host_public_keys[name]
      }
      write_files = [{
        path        = "/etc/ssh/sshd_config.d/50-mailha.conf"
        permissions = "0644"
        content     = "PermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
      }]
    })])
  }
}

# Given to the servers so Hetzner never mails a root password; cloud-init's
# disable_root then refuses root's login with it.
resource "hcloud_ssh_key" "operator" {
  name       = "${var.name_prefix}-operator"
  public_key = var.ssh_public_key
  labels     = var.labels
}

resource "hcloud_placement_group" "relays" {
  name   = "${var.name_prefix}-relays"
  type   = "spread"
  labels = var.labels
}

resource "hcloud_server" "relay" {
  for_each = var.relays

  name               = "${var.name_prefix}-${each.key}"
  server_type        = var.server_type
  image              = var.image
  location           = var.location
  placement_group_id = hcloud_placement_group.relays.id
  ssh_keys           = [hcloud_ssh_key.operator.id]
  # The cloud firewall is there from the first boot: no moment with SSH
  # open to the world.
  firewall_ids       = var.firewall_ids
  user_data          = sensitive(local.user_data[each.key])
  labels             = merge(var.labels, { "mailha-role" = "relay", "mailha-relay" = each.key })
  delete_protection  = var.protection
  rebuild_protection = var.protection

  # By subnet, not network: the server is attached once its subnet exists.
  network {
    subnet_id = var.subnet_id
    ip        = each.value.private_ip
    alias_ips = []
  }

  # A relay is replaced by hand (drain, rebuild, converge), never because
  # the operator's key, the cloud-init text or the image's name changed:
  # each of them forces a new server.
  lifecycle {
    ignore_changes = [ssh_keys, user_data, image]
  }
}

# Assigned to the primary when it is made, never again by Terraform: from
# then on keepalived's mover assigns it to whichever relay is MASTER through
# the API, so the assignment is left out of every later plan. (A separate
# hcloud_floating_ip_assignment would drop out of the state whenever the
# address is briefly unassigned, and the next apply would move it back.)
resource "hcloud_floating_ip" "sending" {
  type              = "ipv4"
  name              = "${var.name_prefix}-sending"
  description       = "mailha sending identity ${var.sending_host}"
  server_id         = hcloud_server.relay[var.primary].id
  labels            = merge(var.labels, { "mailha-role" = "sending" })
  delete_protection = var.protection

  lifecycle {
    ignore_changes = [server_id]
  }
}

resource "hcloud_rdns" "sending" {
  floating_ip_id = hcloud_floating_ip.sending.id
  ip_address     = hcloud_floating_ip.sending.ip_address
  dns_ptr        = var.sending_host
}
