# An internal podman network: no NAT and no route out of the machine; the
# host reaches the lab through the bridge's gateway address.
locals {
  gateway = cidrhost(var.cidr, 1)
}

resource "terraform_data" "network" {
  triggers_replace = [var.name, var.cidr]

  input = {
    name   = var.name
    script = var.podman_script
  }

  provisioner "local-exec" {
    command = "${var.podman_script} network-create ${var.name} ${var.cidr} ${local.gateway}"
  }

  provisioner "local-exec" {
    when    = destroy
    command = "${self.input.script} network-remove ${self.input.name}"
  }
}
