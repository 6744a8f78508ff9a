"""Real DNS exchanges with the converged server, from inside its container."""

import re
import uuid

import pytest

# podman exec directly: faster than through Ansible.
testinfra_hosts = ["podman://molecule-bind"]

SERVER = "10.213.1.41"
KEY_FILE = "/etc/bind/keys/mailha-ddns.key"
NARROW_KEY_FILE = "/etc/bind/keys/mailha-narrow.key"
LONG_TXT = ("v=DKIM1; k=rsa; p=" + "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" * 10)[:400]


def dig(host, *args):
    return host.check_output("dig +short +norecurse @%s " + " ".join(["%s"] * len(args)), SERVER, *args)


def nsupdate(host, lines, key=True, key_file=KEY_FILE):
    script = "\n".join([f"server {SERVER}", "zone mailha.test.", *lines, "send", ""])
    key_option = f"-k {key_file}" if key else ""
    return host.run(f"nsupdate -v {key_option} <<'EOF'\n{script}EOF")


def test_named_runs_and_listens(host):
    assert host.service("named").is_enabled
    assert host.service("named").is_running
    assert host.socket(f"udp://{SERVER}:53").is_listening
    assert host.socket(f"tcp://{SERVER}:53").is_listening


def test_configuration_and_zones_are_valid(host):
    host.check_output("named-checkconf /etc/bind/named.conf")
    for zone in ("mailha.test", "inbox.test", "1.213.10.in-addr.arpa", "bl.mailha.test"):
        # -j: the zone as named serves it, journal included.
        host.check_output("named-checkzone -j %s /var/lib/bind/%s.db", zone, zone)


def test_rndc_works(host):
    assert "server is up and running" in host.check_output("rndc status")


def test_tsig_key_is_private(host):
    key = host.file(KEY_FILE)
    assert key.user == "root"
    assert key.group == "bind"
    assert key.mode == 0o640


def test_a_record(host):
    assert dig(host, "ns.mailha.test", "A") == SERVER


def test_declared_record_changed_outside_ansible_is_restored(host):
    # side_effect.yml set it to 10.213.1.99; the converge after it put it back.
    assert dig(host, "mx1.mailha.test", "A") == "10.213.1.11"


def test_mx_records(host):
    assert dig(host, "inbox.test", "MX") == "10 sink.mailha.test."
    assert dig(host, "news.mailha.test", "MX") == "10 mta.mailha.test."


def test_relative_target_is_qualified_in_the_zone(host):
    assert dig(host, "smtp.mailha.test", "CNAME") == "mta.mailha.test."


def test_ptr_record(host):
    assert dig(host, "-x", "10.213.1.100") == "mta.mailha.test."


def test_long_txt_comes_back_whole(host):
    answer = dig(host, "mailha._domainkey.news.mailha.test", "TXT")
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', answer)
    assert len(strings) == 2
    assert all(len(s) <= 255 for s in strings)
    assert "".join(strings) == LONG_TXT


def test_test_blocklist_lists_its_test_entry_with_a_reason(host):
    assert dig(host, "2.0.0.127.bl.mailha.test", "A") == "127.0.0.2"
    assert "RFC 5782 test entry" in dig(host, "2.0.0.127.bl.mailha.test", "TXT")


def test_test_blocklist_lists_nothing_else(host):
    out = host.check_output("dig +norecurse @%s 1.0.0.127.bl.mailha.test A", SERVER)
    assert "status: NXDOMAIN" in out
    # Answered from its own zone (its SOA), not from mailha.test it sits in.
    assert out.split("AUTHORITY SECTION:")[1].split()[0] == "bl.mailha.test."


def test_recursion_is_refused(host):
    out = host.check_output("dig @%s www.example.org A", SERVER)
    assert "status: REFUSED" in out


def test_update_made_outside_ansible_survives_converge(host):
    # Added by side_effect.yml before the second idempotence run.
    assert dig(host, "dynamic.mailha.test", "A") == "10.213.1.200"


def test_signed_update_is_applied(host):
    name = f"t{uuid.uuid4().hex[:8]}.mailha.test."
    result = nsupdate(host, [f"update add {name} 60 A 10.213.1.201"])
    assert result.rc == 0, result.stderr
    assert dig(host, name, "A") == "10.213.1.201"


def test_unsigned_update_is_refused(host):
    name = f"t{uuid.uuid4().hex[:8]}.mailha.test."
    result = nsupdate(host, [f"update add {name} 60 A 10.213.1.202"], key=False)
    assert result.rc != 0
    assert "REFUSED" in result.stdout + result.stderr
    assert dig(host, name, "A") == ""


def test_narrow_key_changes_its_granted_record(host):
    result = nsupdate(
        host,
        ["update delete active.mailha.test. A", "update add active.mailha.test. 60 A 10.213.1.203"],
        key_file=NARROW_KEY_FILE,
    )
    assert result.rc == 0, result.stderr
    assert dig(host, "active.mailha.test", "A") == "10.213.1.203"


@pytest.mark.parametrize(
    "update",
    [
        "update add other.mailha.test. 60 A 10.213.1.204",  # another name
        "update add active.mailha.test. 60 TXT other",  # another type
        "update delete mx1.mailha.test. A",  # a record Ansible declares
    ],
)
def test_narrow_key_is_refused_everything_else(host, update):
    before = dig(host, "mx1.mailha.test", "A")
    result = nsupdate(host, [update], key_file=NARROW_KEY_FILE)
    assert result.rc != 0
    assert "REFUSED" in result.stdout + result.stderr
    assert dig(host, "other.mailha.test", "A") == ""
    assert dig(host, "active.mailha.test", "TXT") == ""
    assert dig(host, "mx1.mailha.test", "A") == before
