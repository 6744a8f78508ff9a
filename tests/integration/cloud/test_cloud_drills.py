"""Drills in simulated cloud mode (make lab-as-cloud, mailha/lab_cloud.py).

keepalived adds the floating IP on its MASTER and its notify asks the fake
Hetzner API (mailha-node fip-assign), as in the cloud; the lab's network
delivers the address only to the relay the API assigned it to (the other
is fenced from outside), and the API moves it only after its latency.
Each drill must lose nothing, and the address must have been moved by the
API: an assign the fake carried out for the standby's server, no sooner
after the fault than the API's latency, and back on failback.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import yaml

from mailha import lab_cloud
from tests.integration.conftest import MAILHA
from tests.integration.labtools import INVENTORY, wait_for
from tests.integration.test_cli_switch import HOLD_DOWN, assert_nothing_refused_or_lost, switch_under_traffic

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def cloud(lab):
    mover = lab.vars.get("mailha_floating_ip_mover")
    assert mover, f"{INVENTORY} names no floating IP mover: run these on the inventory 'make lab-as-cloud' writes"
    settings = lab_cloud.load_settings()
    assert lab_cloud.fake_pid() is not None, "the fake API is not running; run 'make lab-as-cloud'"
    return settings


def routes() -> list[str]:
    """The lab's routing hook's log: one 'routed ADDRESS to HOST' line per assign carried out."""
    path = lab_cloud.cloud_dir() / "routes.log"
    return [line for line in path.read_text().splitlines() if " routed " in line] if path.exists() else []


def assigned_to(settings) -> str | None:
    state = json.loads((lab_cloud.cloud_dir() / "state.json").read_text())
    owners = {server["id"]: name for name, server in settings["servers"].items()}
    return owners.get(state["floating_ips"][0]["server"])


def api_record(settings) -> list[str]:
    """The active-relay rrset's values as the fake API holds them."""
    state = json.loads((lab_cloud.cloud_dir() / "state.json").read_text())
    rrsets = state["zones"][0]["rrsets"]
    rrset = next(r for r in rrsets if (r["name"], r["type"]) == (lab_cloud.ACTIVE_RECORD, "A"))
    return [record["value"] for record in rrset["records"]]


def published_record(lab) -> list[str]:
    """What the lab's BIND (the zone's authoritative server) answers for it."""
    answer = lab.resolver().resolve(f"{lab_cloud.ACTIVE_RECORD}.{lab.vars['mailha_dns_zone']}", "A")
    return sorted(rr.address for rr in answer)


def test_only_the_relay_the_api_names_gets_the_address(lab, cli, cloud):
    assigned = assigned_to(cloud)
    for host in lab.mail:
        conf = lab.exec(host, "cat", "/etc/keepalived/keepalived.conf").stdout
        assert 'notify_master "/usr/local/bin/mailha-node fip-assign"' in conf
        assert 'notify_master_rx_lower_pri "/usr/local/bin/mailha-node fip-assign"' in conf
        mover = lab.exec(host, "cat", "/etc/mailha/fip-mover.conf").stdout
        assert f"api_endpoint={cloud['endpoint']}" in mover
        assert "api_ca_file=/etc/mailha/hcloud-api-ca.pem" in mover
        token = lab.exec(host, "stat", "-c", "%a %U", "/etc/mailha/hcloud-token").stdout.split()
        assert token == ["600", "root"]
        tables = lab.exec(host, "nft", "list", "tables", "netdev").stdout
        assert (lab_cloud.FENCE_TABLE in tables) == (host != assigned), f"{host}: {tables}"
    status = json.loads(cli("status", "--output", "json").stdout)
    assert status["verdict"] == "healthy", status
    assert lab.active() == assigned


def test_the_mover_reaches_the_api_over_tls_only_with_the_labs_ca(lab, cloud):
    """fip-check as the timer runs it: the assignment is already here, nothing moves."""
    active = lab.active()
    before = len(routes())
    result = lab.exec(active, "/usr/local/bin/mailha-node", "fip-check", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(routes()) == before
    assert lab.active() == active


def test_a_planned_switch_through_a_managed_balancer_refuses_and_loses_nothing(lab, cli, cloud, on_primary):
    """No load balancer host: the switch neither pins nor drains, it waits until only
    the target answers /active (what the lab's HAProxy, standing in for Hetzner's,
    checks); the source hands over what it accepted meanwhile. The API moves the
    address both ways, and the active-relay record changes through the API's zone
    (mailha_dns_updates: hcloud), which the lab's BIND then publishes."""
    assert lab.vars.get("mailha_dns_updates") == "hcloud"
    before = len(routes())
    result, attempts = switch_under_traffic(lab, cli, "failover", "--yes", "--reason", "cloud maintenance test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Step: wait until only the target answers /active" in result.stdout, result.stdout
    assert "drain the source relay at the load balancer" not in result.stdout
    assert "Step: point the active-relay DNS record at the target (Hetzner's DNS API)" in result.stdout
    target = lab.hosts["mx2"]["mailha_address"]
    assert api_record(cloud) == [target] and published_record(lab) == [target]
    print(f"\ncloud planned failover took {result.seconds:.1f}s")
    assert lab.active() == "mx2"
    wait_for(lambda: assigned_to(cloud) == "mx2", 30, what="the API assigning the floating IP to mx2")
    assert_nothing_refused_or_lost(lab, attempts, "cloud planned failover")
    view = json.loads(cli("status", "--output", "json").stdout)
    assert view["balancer"]["kind"] == "hcloud"
    assert view["balancer"]["servers"] == {"mx1": "DOWN", "mx2": "UP"}, view["balancer"]

    time.sleep(HOLD_DOWN)
    result, attempts = switch_under_traffic(lab, cli, "failback", "--yes", "--reason", "cloud maintenance done")
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"cloud failback took {result.seconds:.1f}s")
    assert lab.active() == "mx1"
    target = lab.hosts["mx1"]["mailha_address"]
    assert api_record(cloud) == [target] and published_record(lab) == [target]
    wait_for(lambda: assigned_to(cloud) == "mx1", 30, what="the API assigning the floating IP back to mx1")
    assert_nothing_refused_or_lost(lab, attempts, "cloud failback")
    moved = routes()[before:]
    assert any(" to mx2" in line for line in moved) and " to mx1" in moved[-1], moved
    healthy = lambda: json.loads(cli("status", "--output", "json").stdout)["verdict"] == "healthy"  # noqa: E731
    wait_for(healthy, 60, 1, "a healthy pair after the failback")


def test_a_switch_without_a_token_for_the_zone_refuses_before_any_change(lab, cli, cloud):
    """The record could not be changed at the switch's end: refuse at the start."""
    data = yaml.safe_load(INVENTORY.read_text())
    data["all"]["vars"]["mailha_hcloud_token_file"] = "/nonexistent/hcloud-token"  # noqa: S105 - a path
    # Next to the real one, so its group_vars and secrets are the same.
    inventory = INVENTORY.parent / "hosts-without-token.yml"
    inventory.write_text(yaml.safe_dump(data))
    record = api_record(cloud)
    try:
        result = subprocess.run(
            [MAILHA, "failover", "--yes", "--reason", "no token test", "--inventory", str(inventory)],
            capture_output=True, text=True, timeout=300, check=False,
            env=dict(os.environ, MAILHA_STATE_DIR=cli.state_dir),
        )  # fmt: skip
    finally:
        inventory.unlink()
    assert result.returncode != 0, result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "mailha_hcloud_token_file /nonexistent/hcloud-token is no file" in errors[0]
    assert "Nothing was changed" in errors[0] and "Traceback" not in result.stderr
    assert lab.active() == "mx1" and api_record(cloud) == record and assigned_to(cloud) == "mx1"


@pytest.mark.parametrize("scenario", ["mta-crash", "host-down", "vrrp-blocked"])
def test_drill_in_cloud_mode_moves_the_address_through_the_api_and_loses_nothing(
    lab, cli, cloud, steady, tmp_path, scenario
):
    before = len(routes())
    report_dir = tmp_path / scenario
    result = cli("drill", "--scenario", scenario, "--rate", "20", "--duration", "15", "--yes",
                 "--report", str(report_dir))  # fmt: skip
    assert result.returncode in (0, 3), result.stdout + result.stderr
    report = json.loads((report_dir / "report.json").read_text())
    figures = report["figures"]
    fault_at = next(e["at"] for e in report["timeline"]["events"] if e["name"] == "fault_injected")
    moved = routes()[before:]
    to_standby = [routed_at(line) - fault_at for line in moved if " to mx2" in line]
    floating = [a for a in report["attempts"] if a["target"] == f"{cloud['floating_ip']}:25" and a["code"] == 250]
    slowest = max(a["finished"] - a["started"] for a in floating)
    print(
        f"\ncloud {scenario} (API latency {cloud['latency']:g} s): outage {figures['outage_seconds']}s, "
        f"API routed to the standby {[round(t, 2) for t in to_standby]}s after the fault, "
        f"slowest accepted via the floating IP {slowest:.2f}s, split {figures['split_seconds']}s, "
        f"{figures['acknowledged']} acknowledged, {figures['lost']} lost, {figures['duplicated']} duplicated; "
        f"refused {figures['refused_by_target']}"
    )
    # The standby asked, the API moved the address to it, no sooner than its
    # latency after the fault; the drill's failback moved it back.
    assert to_standby, moved
    assert to_standby[0] >= cloud["latency"], to_standby
    assert any(" to mx1" in line for line in moved[moved.index(next(m for m in moved if " to mx2" in m)) :]), moved
    assert figures["acknowledged"] > 0
    assert figures["lost"] == 0
    assert figures["duplicated"] == figures["duplicated_cut_in_flight"], report["reconciliation"]
    assert figures["unsigned"] == 0
    refused = figures["refused_by_target"]
    if scenario == "vrrp-blocked":
        # The split settles on the better claim (mx1) through the load
        # balancer at once. mx2's assign, asked when it became MASTER, lands
        # after its demotion; mx1's agent asks for a settled check when the
        # split brain ends, and that check waits for the assign and takes the
        # floating IP back, without waiting for the timer.
        assert refused[f"{lab.balancer}:25"] == 0, refused
        since = f"--since=@{int(fault_at) - 1}"
        agent = lab.exec("mx1", "journalctl", "-q", "-o", "cat", since, "-u", "mailha-health-agent").stdout
        assert "asked the floating IP mover for a settled check" in agent, agent
        checks = lab.exec("mx1", "journalctl", "-q", "-o", "cat", since, "-t", "mailha-fip-check").stdout
        assert f"GET floating_ips/{cloud['floating_ip_id']}/actions?status=running" in checks, checks
        away = routed_at(next(m for m in moved if " to mx2" in m))
        back = min(routed_at(line) for line in moved if " to mx1" in line and routed_at(line) > away)
        print(f"cloud vrrp-blocked: the floating IP was routed to the demoted mx2 for {back - away:.2f}s")
    else:
        # The standby signs what it accepts.
        assert figures["dkim_checked"] > 0
        assert figures["recovered"] is True
        # The lab's 2 s outage target holds through the load balancer,
        # which follows the relays' agents, not the API.
        assert report["outage"]["per_target"][f"{lab.balancer}:25"]["seconds"] <= 2, report["outage"]
    assert lab.active() == "mx1" == assigned_to(cloud), "the drill must fail back to the primary, through the API"


def routed_at(line: str) -> float:
    """The epoch time of a routes.log line (its first field, local time)."""
    stamp, millis = line.split()[0].split(".")
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + int(millis) / 1000
