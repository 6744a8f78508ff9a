"""A switch that fails, times out or is killed leaves the pair sending.

Each test runs campaign traffic through the load balancer, breaks a switch at
a real step, and proves by counting at the recipient side that every
acknowledged message arrived exactly once and that mail flows afterwards:
one relay holds the floating IP and delivers, the other hands over to it,
the load balancer follows its health checks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from mailha import drill_report
from mailha.traffic import Target, TrafficGenerator, accepted_ids
from tests.integration.conftest import INVENTORY, MAILHA, fail_back_to_primary
from tests.integration.labtools import wait_for

pytestmark = pytest.mark.lab

ROUTE_FILE = "/etc/postfix/mailha_role_transport"
# The sink pauses this long before it answers each message's DATA (per
# message, whatever connection reuse): the relay's deliveries stay in
# flight, so the source's active queue cannot empty. Longer than the time
# from the slowdown to the end of a short quiesce on a loaded machine (the
# deliveries in flight at the hold may all have started with the slowdown),
# shorter than the relays' 120 s smtp_data_init_timeout.
SLOW_RECEIVER_SECONDS = 90


def route(lab, host: str) -> str:
    text = lab.exec(host, "cat", ROUTE_FILE).stdout
    entries = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if entries and entries[0].startswith("* hold:"):
        return "hold"
    if entries and entries[0].startswith("* relay:"):
        return "hand-over"
    return "direct"


def assert_in_order(lab, cli, holder: str) -> None:
    """One holder that delivers, a peer that hands over, a load balancer on its checks."""
    assert lab.active() == holder
    peer = next(h for h in lab.mail if h != holder)
    assert route(lab, holder) == "direct"
    assert route(lab, peer) == "hand-over"
    status = json.loads(cli("status", "--output", "json").stdout)
    servers = status["balancer"]["servers"]
    assert str(servers.get(holder, "")).startswith("UP"), servers
    assert not str(servers.get(peer, "")).startswith(("UP", "no check", "DRAIN")), servers
    assert not [p for p in status["problems"] if "did not finish" in p["problem"]], status["problems"]


def cut_in_flight(lab, since: float, counts) -> set[str]:
    """Duplicates whose first copy's 250 never reached a relay (RFC 1047), from the relays' logs."""
    journal = ["journalctl", "-q", "-o", "cat", f"--since=@{int(since)}", "SYSLOG_FACILITY=2"]
    logs = [lab.exec(host, *journal, check=False).stdout for host in lab.mail]
    internal = [lab.hosts[host]["mailha_address"] for host in lab.mail] + [lab.floating_ip]
    return drill_report.cut_in_flight(logs, counts, internal)


def assert_delivered_once(lab, attempts, what: str, cut_since: float | None = None) -> None:
    """Every acknowledged message arrived, exactly once; with `cut_since`, copies
    the relays' logs show a fault cut in flight since then are counted, not failed."""
    acknowledged = accepted_ids(attempts)
    counts = lab.wait_delivered(acknowledged, timeout=180)
    duplicated = [mid for mid, n in counts.items() if n > 1]
    lost = [mid for mid in acknowledged if counts.get(mid, 0) == 0]
    refused = [a for a in attempts if not a.accepted]
    cut = cut_in_flight(lab, cut_since, counts) if cut_since is not None and duplicated else set()
    print(
        f"\n{what}: {len(attempts)} submitted, {len(acknowledged)} acknowledged, {len(refused)} refused, "
        f"{len(duplicated)} duplicated ({len(cut)} cut in flight)"
    )
    assert acknowledged, "no traffic was acknowledged"
    assert not lost, lost[:3]
    assert set(duplicated) <= cut, sorted(set(duplicated) - cut)[:3]


def traffic(lab, seconds: float = 240) -> TrafficGenerator:
    generator = TrafficGenerator(
        targets=[Target(lab.balancer, 25)], rate=10, max_messages=int(10 * seconds), max_seconds=seconds
    )
    generator.start()
    wait_for(lambda: len(generator.snapshot()) >= 10, 30, what="traffic before the switch")
    return generator


class SlowReceiver:
    """The recipient side answers each client only after a pause (a slow receiver)."""

    def __init__(self, lab):
        self.lab = lab

    def __enter__(self):
        self.configure(f"sleep {SLOW_RECEIVER_SECONDS}, permit")
        # Deliveries now in flight, each waiting for the receiver.
        time.sleep(5)
        return self

    def __exit__(self, *_exc):
        self.configure("")

    def configure(self, restrictions: str) -> None:
        self.lab.exec("sink", "postconf", "-e", f"smtpd_data_restrictions={restrictions}")
        self.lab.exec("sink", "postfix", "reload")
        # A reloaded smtpd keeps its settings for the session it serves, and
        # the relays keep their sessions to the sink open for reuse: reload
        # the relays too, so their next deliveries open new sessions.
        for relay in self.lab.mail:
            self.lab.exec(relay, "postfix", "reload")


@pytest.fixture(autouse=True)
def from_the_primary(lab, cli):
    """Each test starts with mx1 active, whatever the one before it left."""
    lab.exec("sink", "postconf", "-e", "smtpd_data_restrictions=")
    lab.exec("sink", "postfix", "reload")
    fail_back_to_primary(lab, cli)


@pytest.mark.parametrize(
    ("point", "holder"),
    [("drain", "mx1"), ("quiesce", "mx1"), ("release", "mx2"), ("message", "mx2")],
)
def test_a_failed_step_is_rescued_and_the_pair_keeps_sending(lab, cli, point, holder):
    generator = traffic(lab)
    try:
        result = cli("failover", "--yes", "--skip-preflight", "--fail-at", point, "--reason", f"rescue test at {point}")
        time.sleep(2)
    finally:
        attempts = generator.stop()
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "The pair was rescued" in output and f"{holder} is active" in output, output
    assert "Step: rescue: the switch failed" in output
    assert_in_order(lab, cli, holder)
    assert_delivered_once(lab, attempts, f"failure at {point}")
    history = json.loads(cli("history", "--output", "json").stdout)
    assert history[0]["result"] == "failed" and history[0]["details"].get("rescued") is True


def test_a_source_that_cannot_quiesce_is_rescued_with_nothing_moved(lab, cli):
    generator = traffic(lab)
    try:
        with SlowReceiver(lab):
            result = cli("failover", "--yes", "--skip-preflight", "--quiesce-timeout", "5")
    finally:
        attempts = generator.stop()
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "deliveries still running on mx1 after 5 s" in output, output
    assert "The pair was rescued: mx1 is active" in output
    assert_in_order(lab, cli, "mx1")
    assert_delivered_once(lab, attempts, "quiesce timeout")


def test_a_switch_killed_during_the_quiesce_is_shown_and_undone(lab, cli):
    generator = traffic(lab)
    try:
        with SlowReceiver(lab):
            # The CLI and its ansible-playbook die together, as with a lost SSH session.
            process = subprocess.Popen(
                [
                    MAILHA,
                    "failover",
                    "--yes",
                    "--skip-preflight",
                    "--quiesce-timeout",
                    "120",
                    "--inventory",
                    str(INVENTORY),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=dict(os.environ, MAILHA_STATE_DIR=cli.state_dir),
                start_new_session=True,
            )
            seen = []
            deadline = time.monotonic() + 240
            assert process.stdout is not None
            for line in process.stdout:
                seen.append(line)
                if "Step: hold the source relay's new deliveries (mx1" in line or time.monotonic() > deadline:
                    break
            time.sleep(2)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            assert any("hold the source relay's new deliveries (mx1" in line for line in seen), "".join(seen)

            status = cli("status")
            assert status.returncode == 2, status.stdout
            assert "mx1 holds its mail" in status.stdout and "a switch did not finish" in status.stdout
            assert "the load balancer is pinned to mx2" in status.stdout, status.stdout

        undo = cli("failback", "--yes", "--reason", "undo the interrupted failover")
    finally:
        attempts = generator.stop()
    output = undo.stdout + undo.stderr
    assert undo.returncode == 0, output
    assert "a switch did not finish" in output and "mx1 is active and in order" in output, output
    assert_in_order(lab, cli, "mx1")
    assert_delivered_once(lab, attempts, "killed switch, undone")


def test_fast_vrrp_flaps_leave_each_relay_routed_by_the_floating_ip(lab, cli):
    """20 transitions in quick succession: keepalived's notify scripts may run
    out of order, the route must still follow the address."""
    since = time.time()
    generator = traffic(lab, seconds=120)
    try:
        for _ in range(20):
            holder = lab.active()
            lab.exec(holder, "systemctl", "restart", "keepalived")
            time.sleep(0.5)
        wait_for(lambda: len(lab.holders()) == 1, 30, what="one holder after the flaps")
        time.sleep(5)
    finally:
        attempts = generator.stop()
    holder = lab.active()
    peer = next(h for h in lab.mail if h != holder)
    wait_for(lambda: route(lab, holder) == "direct" and route(lab, peer) == "hand-over", 30, what="routes")
    # A delivery the address left in the middle of (after its data, before
    # the receiver's 250) may arrive twice (RFC 1047): such copies must be
    # the ones the relays' logs show cut, any other duplicate fails.
    assert_delivered_once(lab, attempts, "20 VRRP flaps", cut_since=since)
