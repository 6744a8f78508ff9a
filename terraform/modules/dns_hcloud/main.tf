# The zone on Hetzner's DNS (part of the Cloud API): Terraform publishes
# the records itself. A zone that exists already at Hetzner is imported
# first (terraform import module.dns_hcloud[0].hcloud_zone.this <zone>).
resource "hcloud_zone" "this" {
  name   = var.zone
  mode   = "primary"
  labels = { "mailha-role" = "dns" }
}

resource "hcloud_zone_rrset" "record" {
  for_each = { for record in var.records : "${record.name} ${record.type}" => record }

  zone    = hcloud_zone.this.name
  name    = each.value.name
  type    = each.value.type
  ttl     = var.ttl
  records = [for value in each.value.values : { value = value }]
}
