"""The simulated cloud's pieces that need no lab: the plan, the inventory, the ARP frame, usage."""

import json
import socket
import struct

import pytest
import yaml

from mailha import lab_cloud
from mailha.errors import MailhaError

BASE = {
    "all": {
        "vars": {
            "mailha_floating_ip": "10.213.0.100",
            "mailha_controller_address": "10.213.0.1",
            "mailha_environment": "existing",
            "mailha_load_balancer_host": "lb",
            "mailha_load_balancer_address": "10.213.0.20",
        },
        "children": {
            "mail": {
                "hosts": {
                    "mx2": {"mailha_address": "10.213.0.12", "mailha_vrrp_state": "BACKUP"},
                    "mx1": {"mailha_address": "10.213.0.11", "mailha_vrrp_state": "MASTER"},
                }
            },
            "loadbalancer": {"hosts": {"lb": {"mailha_address": "10.213.0.20"}}},
        },
    }
}


def test_the_plan_gives_each_relay_a_server_id_in_name_order():
    settings = lab_cloud.plan(BASE, "https://10.213.0.1:8443/v1", "/x/ca.pem", "/x/token")
    assert settings["servers"] == {
        "mx1": {"id": lab_cloud.FIRST_SERVER_ID, "address": "10.213.0.11"},
        "mx2": {"id": lab_cloud.FIRST_SERVER_ID + 1, "address": "10.213.0.12"},
    }
    assert settings["floating_ip"] == "10.213.0.100"
    assert settings["floating_ip_id"] == lab_cloud.FLOATING_IP_ID


def test_the_cloud_inventory_adds_the_mover_hetzner_dns_and_a_managed_balancer_and_nothing_else():
    settings = lab_cloud.plan(BASE, "https://10.213.0.1:8443/v1", "/x/ca.pem", "/x/token")
    data = lab_cloud.cloud_inventory(BASE, settings)
    mover = data["all"]["vars"]["mailha_floating_ip_mover"]
    assert mover == {
        "kind": "hcloud",
        "floating_ip_id": lab_cloud.FLOATING_IP_ID,
        "server_ids": {"mx1": 101, "mx2": 102},
        "api_endpoint": "https://10.213.0.1:8443/v1",
        "api_ca_file": "/x/ca.pem",
    }
    del data["all"]["vars"]["mailha_floating_ip_mover"]
    # The lab's HAProxy plays a managed load balancer: no host to configure.
    assert "loadbalancer" not in data["all"]["children"]
    assert data["all"]["vars"].pop("mailha_load_balancer_kind") == "hcloud"
    assert data["all"]["vars"].pop("mailha_load_balancer_source_address") == "10.213.0.20"
    # The zone is Hetzner's: a switch changes the record through the (fake) API.
    assert data["all"]["vars"].pop("mailha_dns_updates") == "hcloud"
    assert data["all"]["vars"].pop("mailha_hcloud_api_endpoint") == "https://10.213.0.1:8443/v1"
    assert data["all"]["vars"].pop("mailha_hcloud_api_ca_file") == "/x/ca.pem"
    assert data["all"]["vars"].pop("mailha_hcloud_token_file") == "/x/token"
    data["all"]["children"]["loadbalancer"] = BASE["all"]["children"]["loadbalancer"]
    assert data == BASE
    # The base is left as it was, and the result is plain YAML.
    assert "mailha_floating_ip_mover" not in BASE["all"]["vars"]
    data = lab_cloud.cloud_inventory(BASE, settings)
    assert yaml.safe_load(yaml.safe_dump(data)) == data


def test_the_fence_keeps_every_way_of_the_address_off_the_link():
    rules = lab_cloud.fence_rules("10.213.0.100")
    drops = [line.strip() for line in rules.splitlines() if line.strip().endswith('"') and " drop " in line]
    assert [d.split(" counter")[0] for d in drops] == [
        "arp saddr ip 10.213.0.100",
        "ip saddr 10.213.0.100",
        "arp daddr ip 10.213.0.100",
        "ip daddr 10.213.0.100",
    ]
    assert 'hook egress device "eth0"' in rules and 'hook ingress device "eth0"' in rules
    # Replaces a fence already there, in one transaction; the opening removes it.
    assert rules.startswith(lab_cloud.OPEN_RULES)


def test_a_gratuitous_arp_names_the_address_as_sender_and_target():
    frame = lab_cloud.garp_frame("0a:58:0a:d5:00:0c", "10.213.0.100")
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == bytes.fromhex("0a580ad5000c") and frame[12:14] == b"\x08\x06"
    hardware, protocol, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    assert (hardware, protocol, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert frame[22:28] == frame[6:12]
    assert frame[28:32] == frame[38:42] == socket.inet_aton("10.213.0.100")
    with pytest.raises(ValueError):
        lab_cloud.garp_frame("0a:58", "10.213.0.100")


def test_route_refuses_a_server_that_is_no_relay():
    settings = lab_cloud.plan(BASE, "https://10.213.0.1:8443/v1", "/x/ca.pem", "/x/token")
    with pytest.raises(MailhaError, match="server 999 is none of the lab's relays"):
        lab_cloud.route(settings, 999)


def test_without_start_every_command_says_to_run_make_lab_as_cloud(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lab_cloud, "cloud_dir", lambda: tmp_path)
    assert lab_cloud.main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run 'make lab-as-cloud'" in err
    assert lab_cloud.main(["stop"]) == 0
    assert "no fake API was running" in capsys.readouterr().out


def test_a_latency_beyond_the_notify_bound_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        lab_cloud.main(
            ["start", "--inventory", str(tmp_path / "x.yml"), "--out", str(tmp_path / "y.yml"), "--latency", "45"]
        )
    assert exited.value.code == 2
    assert "latency: seconds from 0 to 30" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        lab_cloud.main(["latency", "-1"])
    assert exited.value.code == 2


def test_an_unreadable_base_inventory_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lab_cloud, "cloud_dir", lambda: tmp_path / "cloud")
    (tmp_path / "hosts.yml").write_text(json.dumps({"all": {"vars": {}}}))
    code = lab_cloud.main(["start", "--inventory", str(tmp_path / "hosts.yml"), "--out", str(tmp_path / "o.yml")])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot read the inventory" in err and "make provision" in err and err.count("\n") == 1
    assert not (tmp_path / "o.yml").exists()


@pytest.fixture
def sent_updates(tmp_path, monkeypatch):
    """The RFC 2136 updates mirror() sends, answered NOERROR, and its settings."""
    import dns.message
    import dns.query

    key = tmp_path / "tsig.key"
    key.write_text("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0\n")
    sent = []

    def tcp(update, where, timeout):
        sent.append((update, where))
        return dns.message.make_response(update)

    monkeypatch.setattr(dns.query, "tcp", tcp)
    settings = {
        "zone": "mailha.test",
        "nameserver": "10.213.0.53",
        "key_name": lab_cloud.TSIG_KEY_NAME,
        "algorithm": lab_cloud.TSIG_ALGORITHM,
        "key_file": str(key),
    }
    return sent, settings


def test_mirror_replaces_a_txt_rrset_and_deletes_one_with_no_values(sent_updates):
    sent, settings = sent_updates
    text = '"v=DKIM1; k=rsa; p=' + "A" * 200 + '" "BBBB"'
    lab_cloud.mirror(settings, "mailha.test", "sel._domainkey.news", "TXT", 300, [text])
    lab_cloud.mirror(settings, "mailha.test.", "old._domainkey.news", "TXT", 300, [])
    (replace, where), (delete, _) = sent
    assert where == "10.213.0.53" and lab_cloud.TSIG_KEY_NAME == "mailha-zone"
    # A replace: delete the rrset, add the new one; the TXT strings as given.
    changes = [(str(rrset.name), rrset.deleting, [rr.to_text() for rr in rrset]) for rrset in replace.update]
    assert changes[-1] == ("sel._domainkey.news", None, [text])
    assert [(str(rrset.name), rrset.rdtype.name, len(rrset)) for rrset in delete.update] == [
        ("old._domainkey.news", "TXT", 0)
    ]


def test_mirror_refuses_another_zone(sent_updates):
    sent, settings = sent_updates
    with pytest.raises(MailhaError, match="is not the lab's"):
        lab_cloud.mirror(settings, "example.com", "relay", "A", 60, ["10.0.0.1"])
    assert sent == []
