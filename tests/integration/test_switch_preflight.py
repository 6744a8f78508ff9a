"""failover's preflight on the lab: the standby listed on the lab's test
blocklist for real (a record added to bl.mailha.test by RFC 2136 with the
zone key, as the bind role applies its records) refuses the failover with
nothing changed; --skip-preflight switches anyway and the history says so;
the failback, with the listing gone, runs the preflight of the primary and
records its counts."""

from __future__ import annotations

import json
import time

import dns.query
import dns.rcode
import dns.resolver
import dns.tsigkeyring
import dns.update
import pytest

from mailha import pair as pair_mod
from mailha.preflight.dns_checks import blocklist_name
from tests.integration.labtools import INVENTORY, REPO, wait_for

pytestmark = pytest.mark.lab

HOLD_DOWN = 30  # inventories/lab/group_vars/all/mailha.yml
EXIT_PREFLIGHT_REFUSED = 4  # mailha.errors


def blocklist_update(lab, change) -> None:
    """Change the lab's test blocklist zone with the key the roles apply every record with."""
    settings = pair_mod.load(INVENTORY).settings
    key_name = settings["mailha_zone_tsig_key_name"]
    secret = (REPO / ".lab" / "secrets" / lab.vars["mailha_environment"] / f"tsig-{key_name}.key").read_text().strip()
    keyring = dns.tsigkeyring.from_text({key_name: (settings["mailha_tsig_algorithm"], secret)})
    update = dns.update.UpdateMessage(settings["mailha_preflight_dnsbl_zones"][0], keyring=keyring, keyname=key_name)
    change(update)
    response = dns.query.tcp(update, lab.vars["mailha_nameserver"], timeout=5)
    assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())


def listed(lab, name: str) -> bool:
    try:
        return any(r.address == "127.0.0.2" for r in lab.resolver().resolve(name, "A"))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return False


@pytest.fixture
def standby_listed(lab, on_primary):
    """mx2's address listed on the test blocklist for the test, delisted after it."""
    zone = pair_mod.load(INVENTORY).settings["mailha_preflight_dnsbl_zones"][0]
    address = lab.hosts["mx2"]["mailha_address"]
    name = blocklist_name(address, zone) + "."
    blocklist_update(lab, lambda u: u.replace(name, 60, "A", "127.0.0.2"))
    blocklist_update(lab, lambda u: u.replace(name, 60, "TXT", '"mailha preflight test: the standby is listed"'))
    wait_for(lambda: listed(lab, name), 10, what=f"{name} listed")
    try:
        yield address, zone
    finally:
        blocklist_update(lab, lambda u: u.delete(name))
        wait_for(lambda: not listed(lab, name), 10, what=f"{name} delisted")


def history(cli) -> list[dict]:
    result = cli("history", "--output", "json", "--limit", "50")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_listed_standby_refuses_the_failover_until_skip_preflight(lab, cli, on_primary, standby_listed):
    address, zone = standby_listed
    before = history(cli)

    refused = cli("failover", "--yes", "--reason", "preflight test")
    assert refused.returncode == EXIT_PREFLIGHT_REFUSED, refused.stdout + refused.stderr
    error = refused.stderr.strip().splitlines()
    assert len(error) == 1, refused.stderr
    assert error[0].startswith(
        f"Error: refusing failover to mx2: preflight failed: blocklist mx2: {address} is listed on {zone}"
    ), error[0]
    assert "the standby is listed" in error[0]  # the blocklist's TXT reason
    assert error[0].endswith("rerun with --skip-preflight to switch anyway; nothing was changed")
    assert "Preflight of mx2 and the floating IP:" in refused.stdout
    assert lab.active() == "mx1"
    assert history(cli) == before, "a refused failover left an audit record"

    dry = cli("failover", "--dry-run")
    assert dry.returncode == EXIT_PREFLIGHT_REFUSED, dry.stdout + dry.stderr
    assert "dry run: failover to mx2 would be refused" in dry.stderr
    assert lab.active() == "mx1"

    forced = cli("failover", "--yes", "--skip-preflight", "--reason", "preflight test, skipped")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "Preflight of mx2: skipped (--skip-preflight)" in forced.stdout
    assert lab.active() == "mx2"
    latest = history(cli)[0]
    assert (latest["command"], latest["result"], latest["reason"]) == ("failover", "ok", "preflight test, skipped")
    assert latest["details"]["preflight"] == {"status": "skipped", "why": "--skip-preflight"}
    shown = cli("history", "--limit", "1")
    assert "    preflight: skipped (--skip-preflight)" in shown.stdout, shown.stdout


def test_the_failback_runs_the_primarys_preflight_and_records_it(lab, cli):
    # After the test above (mx2 active, the listing of mx2 removed): mx2's
    # listing would not concern a failback to mx1 anyway.
    if lab.active() != "mx2":
        pytest.skip("the failover of the test above did not happen")
    time.sleep(HOLD_DOWN)
    back = cli("failback", "--yes", "--reason", "preflight test done")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "Preflight of mx1 and the floating IP:" in back.stdout
    assert lab.active() == "mx1"
    preflight = history(cli)[0]["details"]["preflight"]
    assert (preflight["status"], preflight["relay"]) == ("ran", "mx1")
    assert preflight["summary"]["fail"] == 0, preflight["findings"]
    # The floating IP's and mx1's own checks, without mx2's or the comparisons.
    assert preflight["summary"]["pass"] + preflight["summary"]["warn"] >= 12
    assert not [f for f in preflight["findings"] if " mx2: " in f or " relays: " in f]
