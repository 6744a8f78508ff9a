# The sending domain's records, computed once for every DNS implementation
# (dns_hcloud, dns_rfc2136): names relative to the zone ("@" its apex),
# values as zone-file rdata (TXT as quoted strings of at most 255 characters).
locals {
  # The sender domain relative to the zone: "" at the apex, else its labels.
  sender_label = var.sender_domain == var.zone ? "" : trimsuffix(var.sender_domain, ".${var.zone}")

  dkim = var.dkim_public_key == null ? "" : "v=DKIM1; k=${var.dkim_key_type}; p=${var.dkim_public_key}"
  dmarc = join("; ", compact([
    "v=DMARC1", "p=${var.dmarc_policy}", "adkim=s", "aspf=s",
    var.dmarc_report_address == null ? "" : "rua=mailto:${var.dmarc_report_address}",
  ]))

  records = concat(
    [
      { name = var.sending_name, type = "A", values = [var.floating_ip] },
      { name = var.submission_name, type = "A", values = [var.load_balancer_ip] },
      { name = local.sender_label == "" ? "@" : local.sender_label, type = "TXT", values = [local.txt["spf"]] },
      { name = join(".", compact(["_dmarc", local.sender_label])), type = "TXT", values = [local.txt["dmarc"]] },
    ],
    var.dkim_public_key == null ? [] : [
      { name = join(".", compact(["${var.dkim_selector}._domainkey", local.sender_label])), type = "TXT", values = [local.txt["dkim"]] },
    ],
  )

  # A TXT string holds at most 255 characters: longer texts (a 2048-bit
  # DKIM key) are split into several strings, which receivers join.
  texts = { spf = "v=spf1 ip4:${var.floating_ip} -all", dmarc = local.dmarc, dkim = local.dkim }
  txt = {
    for key, text in local.texts : key => join(" ", [
      for start in range(0, max(length(text), 1), 255) : "\"${substr(text, start, 255)}\""
    ])
  }
}
