# A zone served by an RFC 2136 server (your own BIND, roles/bind, or a
# provider's): Terraform cannot sign dynamic updates with its built-in
# provider, so it publishes nothing. It keeps the records in its state
# (a change shows in the plan) and writes the update that publishes them,
# which the operator sends with the zone's TSIG key (nsupdate -k KEY).
locals {
  fqdn = { for record in var.records : "${record.name} ${record.type}" => record.name == "@" ? "${var.zone}." : "${record.name}.${var.zone}." }
  nsupdate = join("\n", concat(
    ["zone ${var.zone}."],
    flatten([
      for record in var.records : concat(
        ["update delete ${local.fqdn["${record.name} ${record.type}"]} ${record.type}"],
        [for value in record.values : "update add ${local.fqdn["${record.name} ${record.type}"]} ${var.ttl} ${record.type} ${value}"],
      )
    ]),
    ["send", ""],
  ))
}

resource "terraform_data" "records" {
  input = { for record in var.records : "${record.name} ${record.type}" => sort(record.values) }
}
