"""Events at the lab's webhook receiver (README, "Webhooks"; roles/sink).

A failover and a failback through the CLI arrive as switch and failback
events, with the VRRP transitions of both relays; a health change of the
standby arrives as health events; with the receiver stopped the switch
still completes and its events wait in the spools (no emitter touched the
network), arriving once the receiver is back.
"""

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.integration.conftest import fail_back_to_primary
from tests.integration.labtools import wait_for

RECEIVED = "/var/lib/mailha/events-received"
RELAY_SPOOL = "/var/spool/mailha/events"
RECEIVER = "mailha-events-receiver.service"
pytestmark = pytest.mark.lab

LIST_EVENTS = (
    "import json, pathlib, sys\n"
    "print(json.dumps([json.loads(p.read_bytes()) for p in pathlib.Path(sys.argv[1]).glob('*.json')]))"
)


def received(lab) -> list[dict]:
    return json.loads(lab.exec("sink", "python3", "-c", LIST_EVENTS, RECEIVED).stdout)


def spooled(lab, host: str) -> list[str]:
    out = lab.exec(host, "find", RELAY_SPOOL, "-maxdepth", "1", "-name", "*.json", check=False).stdout
    return [line for line in out.splitlines() if line.strip()]


def wait_for_events(lab, predicate, what: str, timeout: float = 60) -> list[dict]:
    return wait_for(lambda: (found := [e for e in received(lab) if predicate(e)]) and found, timeout, 1.0, what)


def since(started: float):
    """Events of this test: their time is at or after `started` (the lab's clocks agree within a second)."""

    def check(event: dict) -> bool:
        return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp() >= started - 1

    return check


@pytest.fixture(scope="module")
def receiver_running(lab):
    lab.exec("sink", "systemctl", "start", RECEIVER)
    yield
    lab.exec("sink", "systemctl", "start", RECEIVER)


def test_failover_and_failback_arrive_with_the_transitions_of_both_relays(lab, cli, on_primary, receiver_running):
    started = time.time()
    new = since(started)
    result = cli("failover", "--yes", "--reason", "events test")
    assert result.returncode == 0, result.stdout + result.stderr
    switch = wait_for_events(lab, lambda e: new(e) and e["kind"] == "switch", "the switch event")[0]
    assert (switch["command"], switch["source"], switch["target"], switch["result"]) == ("failover", "mx1", "mx2", "ok")
    assert switch["mode"] in ("planned", "forced") and switch["seconds"] > 0 and "@" in switch["who"]

    fail_back_to_primary(lab, cli)
    failback = wait_for_events(lab, lambda e: new(e) and e["kind"] == "failback", "the failback event")[0]
    assert (failback["source"], failback["target"], failback["result"]) == ("mx2", "mx1", "ok")

    def transitions(event):
        return new(event) and event["kind"] == "vrrp_transition"

    def both_relays_moved():
        seen = {(e["host"].split(".")[0], e["state"]) for e in received(lab) if transitions(e)}
        wanted = {("mx1", "BACKUP"), ("mx2", "MASTER"), ("mx2", "BACKUP"), ("mx1", "MASTER")}
        return wanted <= seen

    wait_for(both_relays_moved, 60, 1.0, "the VRRP transitions of both relays")


def test_a_health_change_of_the_standby_arrives(lab, on_primary, receiver_running):
    started = time.time()
    new = since(started)
    lab.exec("mx2", "systemctl", "stop", "postfix@-.service")
    try:
        failed = wait_for_events(
            lab, lambda e: new(e) and e["kind"] == "health" and e["level"] == "failed", "the failed health event"
        )[0]
        assert failed["host"].split(".")[0] == "mx2" and failed["previous"] in ("ok", "degraded")
    finally:
        lab.exec("mx2", "systemctl", "start", "postfix@-.service")
    wait_for_events(
        lab,
        lambda e: new(e) and e["kind"] == "health" and e["level"] == "ok" and e["host"].startswith("mx2"),
        "the health event of the recovery",
    )


def test_an_unreachable_receiver_delays_nothing_and_the_events_wait_in_the_spools(
    lab, cli, on_primary, receiver_running
):
    started = time.time()
    new = since(started)
    lab.exec("sink", "systemctl", "stop", RECEIVER)
    # What arrived before the stop took effect (say, a relay's health event
    # from the test before) does not count against the outage.
    before = {e["id"] for e in received(lab)}
    try:
        result = cli("failover", "--yes", "--reason", "events test, receiver down")
        # The switch completes whatever the receiver does: its events, and
        # the relays' transitions, are spooled for the separate deliverers.
        assert result.returncode == 0, result.stdout + result.stderr
        assert lab.active() == "mx2"
        wait_for(lambda: spooled(lab, "mx2"), 30, 1.0, "mx2's transition waiting in its spool")
        assert list((Path(cli.state_dir) / "events").glob("*.json")), "the switch event waits in the CLI's spool"
        assert not [e for e in received(lab) if new(e) and e["id"] not in before]
    finally:
        lab.exec("sink", "systemctl", "start", RECEIVER)
    # Back: the deliverers' retries (the lab's backoff is at most 5 s on the
    # relays) bring everything, and the spools empty.
    switch = wait_for_events(lab, lambda e: new(e) and e["kind"] == "switch", "the spooled switch event", 120)[0]
    assert switch["target"] == "mx2"
    wait_for(
        lambda: any(new(e) and e["kind"] == "vrrp_transition" and e["host"].startswith("mx2") for e in received(lab)),
        60,
        1.0,
        "mx2's spooled transition",
    )
    wait_for(lambda: not spooled(lab, "mx1") and not spooled(lab, "mx2"), 60, 1.0, "empty relay spools")
    fail_back_to_primary(lab, cli)
