# One lab host: a container booting systemd from the lab image.
locals {
  caps    = length(var.capabilities) > 0 ? join(",", var.capabilities) : "-"
  sysctls = length(var.sysctls) > 0 ? join(",", [for k, v in var.sysctls : "${k}=${v}"]) : "-"
  dns     = var.dns == null ? "-" : var.dns
}

resource "terraform_data" "host" {
  triggers_replace = [
    var.name, var.image, var.network, var.address, var.hostname, local.dns, local.caps, local.sysctls,
    var.login.user, var.login.public_key,
  ]

  input = {
    name   = var.name
    script = var.podman_script
  }

  provisioner "local-exec" {
    command = join(" ", [
      var.podman_script, "host-create", var.name, var.image, var.network,
      var.address, var.hostname, local.dns, local.caps, local.sysctls,
    ])
  }

  # The lab's cloud-init: the login user, the key, sshd and known_hosts.
  provisioner "local-exec" {
    command     = join(" ", [var.podman_script, "host-login", var.name, var.address, var.login.user, var.login.known_hosts])
    environment = { MAILHA_SSH_PUBLIC_KEY = var.login.public_key }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "${self.input.script} host-remove ${self.input.name}"
  }
}
