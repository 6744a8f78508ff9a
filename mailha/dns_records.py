"""The DNS records a mailha pair needs, in the shape the `bind` role takes.

The zone content is derived from the inventory (addresses of every host, the
floating IP, the load balancer) so that the authoritative server always
matches what was built: A and PTR for every host, the sending identity and
its SPF, DKIM and DMARC records, and the MX of every recipient domain.
Ansible calls these functions through the filter plugin in plugins/filter/.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from mailha.errors import BadInput


def _label(fqdn: str, zone: str) -> str:
    """Name of `fqdn` relative to `zone` ('@' for the apex)."""
    fqdn, zone = fqdn.rstrip("."), zone.rstrip(".")
    if fqdn == zone:
        return "@"
    if not fqdn.endswith("." + zone):
        raise BadInput(f"{fqdn} is not inside the zone {zone}; choose names inside it")
    return fqdn[: -len(zone) - 1]


def relative_name(fqdn: str, zone: str) -> str:
    """`fqdn`'s name relative to `zone` ('@' for the apex), as Hetzner's API
    names an rrset; BadInput when it is not inside the zone."""
    return _label(fqdn, zone)


def reverse_zone(address: str) -> str:
    """The /24 reverse zone holding an IPv4 address, e.g. 0.213.10.in-addr.arpa."""
    return ".".join(reversed(str(ipaddress.IPv4Address(address)).split(".")[:3])) + ".in-addr.arpa"


def dkim_txt(public_key_pem: str) -> str:
    """The DKIM TXT value for a PEM public key (SubjectPublicKeyInfo)."""
    lines = public_key_pem.splitlines()
    body = "".join(line.strip() for line in lines if line and not line.startswith("-----"))
    if not body:
        raise BadInput("the DKIM public key is empty; re-run playbooks/secrets.yml to create it")
    return f"v=DKIM1; k=rsa; p={body}"


def zones(
    hosts: Mapping[str, Mapping[str, Any]],
    *,
    zone: str,
    floating_ip: str,
    sending_host: str,
    submission_host: str,
    load_balancer_address: str,
    sender_domain: str,
    dkim_selector: str,
    dkim_public_key: str,
    recipient_domains: Iterable[str],
    recipient_mx: str | None = None,
    sender_mx: str | None = None,
    dmarc_policy: str = "reject",
) -> list[dict[str, Any]]:
    """Every zone of the pair: the forward zone, the recipient domains, the reverse zones.

    `hosts` maps a short name to at least {"mailha_address", "mailha_fqdn"}
    (Ansible's hostvars). `sender_mx` receives the sender domain's bounces
    (the lab: the recipient side); without it the domain has no MX.
    `recipient_mx` (the sink) is the MX of each recipient domain; without a
    sink the pair serves no recipient domain (they are its test domains).
    Records are sorted so the result is stable.
    """
    forward: list[dict[str, str]] = []
    pointers: dict[str, list[dict[str, str]]] = {}

    def add_pointer(address: str, fqdn: str) -> None:
        pointers.setdefault(reverse_zone(address), []).append(
            {"name": address.rsplit(".", 1)[1], "type": "PTR", "value": fqdn.rstrip(".") + "."}
        )

    for name in sorted(hosts):
        address, fqdn = hosts[name]["mailha_address"], hosts[name]["mailha_fqdn"]
        forward.append({"name": _label(fqdn, zone), "type": "A", "value": address})
        add_pointer(address, fqdn)

    sender = _label(sender_domain, zone)
    forward += [
        # The sending identity: HELO name and PTR of the floating IP agree.
        {"name": _label(sending_host, zone), "type": "A", "value": floating_ip},
        {"name": _label(sending_host, zone), "type": "TXT", "value": "v=spf1 a -all"},
        {"name": _label(submission_host, zone), "type": "A", "value": load_balancer_address},
        {"name": sender, "type": "TXT", "value": f"v=spf1 ip4:{floating_ip} -all"},
        {"name": f"{dkim_selector}._domainkey.{sender}", "type": "TXT", "value": dkim_txt(dkim_public_key)},
        {
            "name": f"_dmarc.{sender}",
            "type": "TXT",
            "value": f"v=DMARC1; p={dmarc_policy}; adkim=s; aspf=r",
        },
    ]
    if sender_mx:
        forward.append({"name": sender, "type": "MX", "value": f"10 {sender_mx.rstrip('.')}."})
    add_pointer(floating_ip, sending_host)

    result = [{"name": zone.rstrip("."), "records": forward}]
    for domain in sorted(set(recipient_domains) if recipient_mx else ()):
        mx = {"name": "@", "type": "MX", "value": f"10 {str(recipient_mx).rstrip('.')}."}
        result.append({"name": domain.rstrip("."), "records": [mx]})
    for name in sorted(pointers):
        records = sorted(pointers[name], key=lambda r: int(r["name"]))
        result.append({"name": name, "records": records})
    return result


def servers(names: Iterable[str], hostvars: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    """[{name, address}] of the given hosts, e.g. the load balancer's backends."""
    return [{"name": name, "address": hostvars[name]["mailha_address"]} for name in names]
