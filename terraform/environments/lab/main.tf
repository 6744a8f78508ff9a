# The lab: every server of a production pair, as podman containers of the
# project's image on an internal network of their own.
locals {
  podman_script = abspath("${path.module}/../../../scripts/lab-podman.sh")

  # Host number inside network_cidr of each lab host.
  host_numbers = {
    ns   = 10
    mx1  = 11
    mx2  = 12
    lb   = 20
    sink = 30
  }
  floating_ip_number = 100

  groups = {
    ns   = ["dns"]
    mx1  = ["mail"]
    mx2  = ["mail"]
    lb   = ["loadbalancer"]
    sink = ["recipient"]
  }

  addresses   = { for host, number in local.host_numbers : host => cidrhost(var.network_cidr, number) }
  nameserver  = local.addresses["ns"]
  floating_ip = cidrhost(var.network_cidr, local.floating_ip_number)
  standby     = var.primary == "mx1" ? "mx2" : "mx1"

  vrrp = {
    (var.primary)   = { priority = 150, state = "MASTER" }
    (local.standby) = { priority = 100, state = "BACKUP" }
  }

  # keepalived moves the floating IP and sends gratuitous ARP; Postfix binds
  # its outbound connections to the floating IP even where it is not held.
  mail_capabilities = ["NET_ADMIN", "NET_RAW", "NET_BROADCAST"]
  mail_sysctls      = { "net.ipv4.ip_nonlocal_bind" = "1" }
  # Every other host loads its own host firewall (nftables) and nothing more.
  host_capabilities = ["NET_ADMIN"]

  # Ansible and mailha reach every host over SSH as on rented servers; the
  # known_hosts file holds the keys the hosts made on their first boot.
  secrets_dir = abspath(startswith(var.secrets_dir, "/") ? var.secrets_dir : "${path.module}/${var.secrets_dir}")
  ssh = {
    user             = var.ssh_user
    port             = 22
    private_key_file = "${local.secrets_dir}/id_ed25519"
    known_hosts_file = "${local.secrets_dir}/known_hosts"
  }
}

module "network" {
  source        = "../../modules/podman_network"
  name          = "${var.name_prefix}-lab"
  cidr          = var.network_cidr
  podman_script = local.podman_script
}

module "host" {
  source   = "../../modules/podman_host"
  for_each = local.host_numbers

  name          = "${var.name_prefix}-${each.key}"
  hostname      = "${each.key}.${var.domain}"
  image         = var.image
  network       = module.network.name
  address       = local.addresses[each.key]
  dns           = each.key == "ns" ? null : local.nameserver
  capabilities  = contains(local.groups[each.key], "mail") ? local.mail_capabilities : local.host_capabilities
  sysctls       = contains(local.groups[each.key], "mail") ? local.mail_sysctls : {}
  podman_script = local.podman_script
  login = {
    user        = var.ssh_user
    public_key  = var.ssh_public_key
    known_hosts = local.ssh.known_hosts_file
  }
}

module "contract" {
  source = "../../modules/mailha_contract"

  environment = "lab"
  connection  = "ssh"
  ssh         = local.ssh
  network = {
    cidr    = var.network_cidr
    gateway = module.network.gateway
  }
  floating_ip = local.floating_ip
  dns = {
    zone            = var.domain
    nameserver      = local.nameserver
    sending_host    = "mta.${var.domain}"
    submission_host = "smtp.${var.domain}"
  }
  load_balancer = {
    host    = "lb"
    address = local.addresses["lb"]
    ports   = [25, 587]
  }
  hosts = {
    for host, address in local.addresses : host => {
      address       = address
      fqdn          = "${host}.${var.domain}"
      target        = address
      groups        = local.groups[host]
      vrrp_priority = try(local.vrrp[host].priority, null)
      vrrp_state    = try(local.vrrp[host].state, null)
    }
  }
}
