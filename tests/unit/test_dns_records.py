"""Zone content derived from the inventory."""

import pytest

from mailha import dns_records
from mailha.errors import BadInput

PUBLIC_KEY = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\nhkiG9w0BAQEF\n-----END PUBLIC KEY-----\n"
HOSTS = {
    "mx1": {"mailha_address": "10.213.0.11", "mailha_fqdn": "mx1.mailha.test"},
    "mx2": {"mailha_address": "10.213.0.12", "mailha_fqdn": "mx2.mailha.test"},
    "sink": {"mailha_address": "10.213.0.30", "mailha_fqdn": "sink.mailha.test"},
}
ARGS = {
    "zone": "mailha.test",
    "floating_ip": "10.213.0.100",
    "sending_host": "mta.mailha.test",
    "submission_host": "smtp.mailha.test",
    "load_balancer_address": "10.213.0.20",
    "sender_domain": "news.mailha.test",
    "dkim_selector": "mailha",
    "dkim_public_key": PUBLIC_KEY,
    "recipient_domains": ["inbox.test", "inbox.test"],
    "recipient_mx": "sink.mailha.test",
}


def records(zones, name):
    return {(r["name"], r["type"]): r["value"] for z in zones if z["name"] == name for r in z["records"]}


def test_forward_zone_has_hosts_identity_and_policy_records():
    zones = dns_records.zones(HOSTS, **ARGS)
    forward = records(zones, "mailha.test")
    assert forward[("mx1", "A")] == "10.213.0.11"
    assert forward[("mta", "A")] == "10.213.0.100"
    assert forward[("smtp", "A")] == "10.213.0.20"
    assert forward[("news", "TXT")] == "v=spf1 ip4:10.213.0.100 -all"
    assert forward[("mailha._domainkey.news", "TXT")] == "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEF"
    assert forward[("_dmarc.news", "TXT")].startswith("v=DMARC1; p=reject")
    assert ("news", "MX") not in forward


def test_sender_domain_mx_receives_bounces_when_given():
    forward = records(dns_records.zones(HOSTS, **ARGS, sender_mx="sink.mailha.test"), "mailha.test")
    assert forward[("news", "MX")] == "10 sink.mailha.test."


def test_reverse_zone_maps_the_floating_ip_to_the_sending_host():
    zones = dns_records.zones(HOSTS, **ARGS)
    reverse = records(zones, "0.213.10.in-addr.arpa")
    assert reverse[("100", "PTR")] == "mta.mailha.test."
    assert reverse[("11", "PTR")] == "mx1.mailha.test."


def test_each_recipient_domain_once_with_its_mx():
    zones = dns_records.zones(HOSTS, **ARGS)
    assert [z["name"] for z in zones].count("inbox.test") == 1
    assert records(zones, "inbox.test") == {("@", "MX"): "10 sink.mailha.test."}


def test_names_outside_the_zone_are_refused():
    with pytest.raises(BadInput, match=r"mta\.example\.org is not inside the zone mailha\.test"):
        dns_records.zones(HOSTS, **dict(ARGS, sending_host="mta.example.org"))


def test_empty_dkim_key_is_refused():
    with pytest.raises(BadInput, match="DKIM public key is empty"):
        dns_records.dkim_txt("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")


def test_servers_lists_names_and_addresses():
    assert dns_records.servers(["mx1", "mx2"], HOSTS) == [
        {"name": "mx1", "address": "10.213.0.11"},
        {"name": "mx2", "address": "10.213.0.12"},
    ]


def test_without_a_recipient_side_no_recipient_domain_and_no_bounce_mx():
    """Servers you already have may run no sink: the zones still build, with no
    zone for the (test) recipient domains and no MX for the sender domain."""
    hosts = {name: host for name, host in HOSTS.items() if name != "sink"}
    zones = dns_records.zones(hosts, **dict(ARGS, recipient_mx=None, sender_mx=None))
    assert [z["name"] for z in zones if z["name"] == "inbox.test"] == []
    forward = records(zones, "mailha.test")
    assert ("news", "MX") not in forward
    assert forward[("mta", "A")] == "10.213.0.100"
    with_sink = dns_records.zones(HOSTS, **ARGS)
    assert records(with_sink, "inbox.test") == {("@", "MX"): "10 sink.mailha.test."}
