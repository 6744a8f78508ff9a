"""`mailha failover --isolate` in simulated cloud mode, with the zone at
Hetzner (mailha_dns_updates: hcloud): the DKIM selector rotates through the
API, not RFC 2136, and the floating IP goes to the survivor through the
API. Then the suspect is rebuilt (a fresh host, converged with the cloud
inventory, fenced as the API says), let back and failed back to.

Last in this directory: the rebuild leaves the lab as `make lab-as-cloud`
made it, but costs minutes.
"""

from __future__ import annotations

import json

import dns.resolver
import pytest

from mailha import lab_cloud
from mailha.traffic import Target
from tests.integration.cloud.test_cloud_drills import assigned_to
from tests.integration.labtools import INVENTORY, REPO
from tests.integration.test_isolate import rebuild_and_let_back, selector_of
from tests.integration.test_lab_mail import dkim_verifies, send_one

pytestmark = pytest.mark.lab


def zone_rrsets() -> dict[tuple[str, str], list[str]]:
    """The fake API's rrsets of the lab's zone: {(name, type): [values]}."""
    state = json.loads((lab_cloud.cloud_dir() / "state.json").read_text())
    rrsets = state["zones"][0]["rrsets"]
    return {(r["name"], r["type"]): [record["value"] for record in r["records"]] for r in rrsets}


def test_isolation_rotates_dkim_through_hetzners_api_and_the_rebuilt_relay_comes_back(lab, cli, on_primary):
    suspect, survivor = "mx1", "mx2"
    assert lab.vars.get("mailha_dns_updates") == "hcloud", f"{INVENTORY} is not the simulated cloud's inventory"
    selector_file = REPO / ".lab" / "secrets" / lab.vars["mailha_environment"] / "dkim-selector"
    old_selector = selector_file.read_text().strip() if selector_file.exists() else "mailha"
    sender = "news.mailha.test"  # inventories/lab*/group_vars/all/mailha.yml
    label = sender.removesuffix("." + lab.vars["mailha_dns_zone"])
    assert (f"{old_selector}._domainkey.{label}", "TXT") in zone_rrsets(), "the fake's zone lacks the selector"

    result = cli("failover", "--isolate", "--yes", "--reason", "test: suspected breach in the cloud")
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"\ncloud failover --isolate took {result.seconds:.1f}s")
    for line in ("publish the new DKIM selector through Hetzner's DNS API", "remove the old DKIM selector"):
        assert line in result.stdout, result.stdout

    # Hetzner's zone (the fake API) holds the new selector with the new key
    # and not the old one; its name server (the lab's BIND, which mirrors
    # the API) answers the same.
    new_selector = selector_file.read_text().strip()
    assert new_selector != old_selector
    rrsets = zone_rrsets()
    assert (f"{old_selector}._domainkey.{label}", "TXT") not in rrsets
    (value,) = rrsets[(f"{new_selector}._domainkey.{label}", "TXT")]
    public = (REPO / ".lab" / "secrets" / lab.vars["mailha_environment"] / f"dkim-{new_selector}.pub").read_text()
    key = "".join(line for line in public.splitlines() if line and not line.startswith("-----"))
    assert value.startswith('"v=DKIM1; k=rsa; p=') and "".join(value[1:-1].split('" "')).endswith(key)
    resolver = lab.resolver()
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve(f"{old_selector}._domainkey.{sender}", "TXT")
    assert resolver.resolve(f"{new_selector}._domainkey.{sender}", "TXT")[0].to_text() == value
    assert assigned_to(lab_cloud.load_settings()) == survivor == lab.active()

    # Mail through the load balancer is signed with the new selector, and verifies.
    sent = send_one(Target(lab.balancer, 25))
    lab.wait_delivered([sent], timeout=60)
    (entry,) = [m for m in lab.sink_index() if m["message_id"] == sent]
    raw = lab.raw_message(entry["file"])
    assert selector_of(raw) == new_selector and dkim_verifies(lab, raw)

    # Rebuilt as a rented server is: a fresh host, converged with the cloud
    # inventory ...
    # ... then fenced as the API's assignment says (mailha.lab_cloud apply).
    fence = [str(REPO / ".venv" / "bin" / "python"), "-m", "mailha.lab_cloud", "apply"]
    rebuild_and_let_back(lab, cli, suspect, survivor, then=(fence,))
    assert lab.active() == suspect == assigned_to(lab_cloud.load_settings())
