"""`mailha` on the lab: status, planned and forced failover, failback, queue hand-over,
with campaign traffic through the load balancer for the whole run."""

from __future__ import annotations

import email
import json
import time

import pytest

from mailha.traffic import Target, TrafficGenerator, accepted_ids
from tests.integration.labtools import wait_for

pytestmark = pytest.mark.lab

HOLD_DOWN = 30  # inventories/lab/group_vars/all/mailha.yml


def switch_under_traffic(lab, cli, *args: str):
    traffic = TrafficGenerator(targets=[Target(lab.balancer, 25)], rate=10, max_messages=3000, max_seconds=240)
    traffic.start()
    try:
        wait_for(lambda: len(traffic.snapshot()) >= 10, 30, what="traffic before the switch")
        result = cli(*args)
        time.sleep(2)
    finally:
        attempts = traffic.stop()
    return result, attempts


def assert_nothing_refused_or_lost(lab, attempts, what: str):
    refused = [a for a in attempts if not a.accepted]
    acknowledged = accepted_ids(attempts)
    counts = lab.wait_delivered(acknowledged, timeout=120)
    duplicated = [mid for mid, n in counts.items() if n > 1]
    print(f"\n{what}: {len(attempts)} submitted, {len(refused)} refused, {len(duplicated)} duplicated")
    assert not refused, f"{what}: {len(refused)} submissions refused, first: {refused[0].code} {refused[0].reply}"
    assert not duplicated


def test_status_is_healthy_and_fast(lab, cli, on_primary):
    result = cli("status", "--output", "json")
    assert result.returncode == 0, result.stdout
    data = json.loads(result.stdout)
    assert data["verdict"] == "healthy" and data["holders"] == ["mx1"]
    assert data["dns"]["answer"] == [lab.floating_ip]
    print(f"\nmailha status took {result.seconds:.2f}s")


def test_dry_run_changes_nothing(lab, cli, on_primary):
    result = cli("failover", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Precondition: same Postfix configuration on both relays" in result.stdout
    assert "dry run: nothing was changed" in result.stdout
    assert lab.active() == "mx1"


def test_planned_failover_and_failback_refuse_and_lose_nothing(lab, cli, on_primary):
    result, attempts = switch_under_traffic(lab, cli, "failover", "--yes", "--reason", "maintenance test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert lab.active() == "mx2"
    assert "failover to mx2 done" in result.stdout
    print(f"\nplanned failover took {result.seconds:.1f}s")
    assert (
        lab.resolver().resolve("relay." + lab.vars["mailha_dns_zone"], "A")[0].address
        == lab.hosts["mx2"]["mailha_address"]
    )
    assert_nothing_refused_or_lost(lab, attempts, "planned failover")
    # The closing test message arrived, well formed: one Message-ID header
    # (a mailbox provider refuses a message with two).
    tests = [e for e in lab.sink_index() if "@mailha-switch-" in (e.get("message_id") or "")]
    assert tests, "the switch's test message is not at the recipient side"
    for entry in tests:
        headers = email.message_from_bytes(lab.raw_message(entry["file"]))
        assert len(headers.get_all("Message-ID")) == 1, entry

    early = cli("failback", "--yes")
    assert early.returncode == 1 and "within the hold-down" in early.stdout + early.stderr

    time.sleep(HOLD_DOWN)
    result, attempts = switch_under_traffic(lab, cli, "failback", "--yes", "--reason", "maintenance done")
    assert result.returncode == 0, result.stdout + result.stderr
    assert lab.active() == "mx1"
    print(f"failback took {result.seconds:.1f}s")
    assert_nothing_refused_or_lost(lab, attempts, "failback")

    history = json.loads(cli("history", "--output", "json").stdout)
    assert [r["command"] for r in history[:2]] == ["failback", "failover"]
    assert history[1]["reason"] == "maintenance test" and history[1]["result"] == "ok"
    assert any(step["name"].startswith("Step: hand") for step in history[1]["steps"])


def test_forced_failover_after_a_crash_loses_nothing_after_handover(lab, cli, on_primary):
    traffic = TrafficGenerator(targets=[Target(lab.balancer, 25)], rate=20, max_messages=400, max_seconds=12)
    traffic.start()
    wait_for(lambda: len(traffic.snapshot()) >= 40, 30, what="traffic before the crash")
    lab.exec("mx1", "pkill", "-9", "-f", "^/usr/lib/postfix/sbin/master")
    wait_for(lambda: lab.holders() == ["mx2"], 10, what="the floating IP on mx2")
    attempts = traffic.wait()

    result = cli("failover", "--yes", "--reason", "mx1 crashed")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "forced" in result.stdout

    refused = cli("failback", "--yes")
    assert refused.returncode == 1 and "mailha queue handover" in refused.stdout + refused.stderr

    handover = cli("queue", "handover")
    assert handover.returncode == 0, handover.stdout + handover.stderr

    acknowledged = accepted_ids(attempts)
    counts = lab.wait_delivered(acknowledged, timeout=120)
    assert not [mid for mid, n in counts.items() if n > 1]
    print(f"\nforced: {len(attempts)} submitted, {len(acknowledged)} acknowledged, all delivered once")

    time.sleep(HOLD_DOWN)
    back = cli("failback", "--yes", "--reason", "mx1 repaired")
    assert back.returncode == 0, back.stdout + back.stderr
    assert lab.active() == "mx1"
