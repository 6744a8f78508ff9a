# One lab host: a container booting systemd from the lab image.
locals {
  caps    = length(var.capabilities) > 0 ? join(",", var.capabilities) : "-"
  sysctls = length(var.sysctls) > 0 ? join(",", [for k, v in var.sysctls : "${k}=${v}"]) : "-"
  dns     = var.dns == null ? "-" : var.dns
}

resource "terraform_data" "host" {
  triggers_replace = [var.name, var.image, var.network, var.address, var.hostname, local.dns, local.caps, local.sysctls]

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

  provisioner "local-exec" {
    when    = destroy
    command = "${self.input.script} host-remove ${self.input.name}"
  }
}
