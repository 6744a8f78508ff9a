"""The degraded level on the lab: a relay that still works, but slowly or
with mail piling up, is reported (/status, /metrics) without moving the
floating IP, and moves it only when the operator sets failover_on_degraded.

The slow greeting is Postfix's own `sleep` restriction before the banner
(smtpd_delay_reject = no): this kernel has no sch_netem, so `tc netem`
cannot delay the node's traffic here. A 1 s banner is slow (the lab's
degraded_latency_seconds is 0.5) but healthy (mail_health_timeout is 2 s).
The deferred mail is the sink answering 451 for one recipient.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from mailha.traffic import Target, build_message, message_id, new_run_id, submit
from tests.integration.conftest import fail_back_to_primary
from tests.integration.labtools import wait_for

pytestmark = pytest.mark.lab

HEALTH_CONF = "/etc/mailha/health.conf"
SENDER = "campaign@news.mailha.test"
DEFERRED_RECIPIENT = "deferred@inbox.test"


def agent(lab, host: str, path: str) -> str:
    address = lab.hosts[host]["mailha_address"]
    port = lab.vars.get("mailha_agent_port", 8025)
    try:
        with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=5) as answer:
            return answer.read().decode()
    except urllib.error.HTTPError as err:  # /active and /health answer 503 with a body
        return err.read().decode()


def status(lab, host: str) -> dict:
    return json.loads(agent(lab, host, "/status"))


def level(lab, host: str) -> str | None:
    """The agent's health level, None while it does not answer (restarting)."""
    try:
        return status(lab, host)["health_level"]
    except (OSError, ValueError):
        return None


def metric(lab, host: str, name: str) -> float | None:
    for line in agent(lab, host, "/metrics").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class Node:
    """Changes to one relay's Postfix and health.conf, undone in reverse order."""

    def __init__(self, lab, host: str):
        self.lab, self.host = lab, host
        self.health_conf: str | None = None  # as it was before the first change
        self.undo: list[tuple] = []

    def postconf(self, **settings: str) -> None:
        explicit = self.lab.exec(self.host, "postconf", "-n").stdout
        for name, value in settings.items():
            if any(line.startswith(f"{name} =") for line in explicit.splitlines()):
                old = self.lab.exec(self.host, "postconf", "-h", name).stdout.strip()
                self.undo.append(("postconf", "-e", f"{name}={old}"))
            else:
                self.undo.append(("postconf", "-X", name))
            self.lab.exec(self.host, "postconf", "-e", f"{name}={value}")
        self.lab.exec(self.host, "postfix", "reload")

    def health(self, **settings: str) -> None:
        """Override health.conf keys (the last line wins) and restart the agent."""
        if self.health_conf is None:
            self.health_conf = self.lab.exec(self.host, "cat", HEALTH_CONF).stdout
        extra = "".join(f"{key}={value}\n" for key, value in settings.items())
        self.write_health_conf(self.health_conf + extra)

    def write_health_conf(self, text: str) -> None:
        self.lab.exec(self.host, "sh", "-c", f"cat > {HEALTH_CONF} <<'EOF'\n{text}EOF")
        self.lab.exec(self.host, "systemctl", "restart", "mailha-health-agent")

    def restore(self) -> None:
        for command in reversed(self.undo):
            self.lab.exec(self.host, *command, check=False)
        if self.undo:
            self.lab.exec(self.host, "postfix", "reload", check=False)
        self.undo.clear()
        if self.health_conf is not None:
            self.write_health_conf(self.health_conf)
            self.health_conf = None


@pytest.fixture
def mx1(lab, cli, on_primary):
    node = Node(lab, "mx1")
    yield node
    node.restore()
    wait_for(lambda: level(lab, "mx1") == "ok", 90, 1, "mx1 healthy and not degraded again")
    fail_back_to_primary(lab, cli)


def test_a_slow_greeting_degrades_without_a_switch_until_failover_on_degraded(lab, mx1):
    assert status(lab, "mx1")["health_level"] == "ok"
    mx1.postconf(smtpd_delay_reject="no", smtpd_client_restrictions="sleep 1")
    began = time.monotonic()
    document = wait_for(
        lambda: level(lab, "mx1") == "degraded" and status(lab, "mx1"),
        90,
        1,
        "mx1 degraded by its slow greeting",
    )
    print(f"\ndegraded after {time.monotonic() - began:.1f} s: {document['degraded_reasons']}")
    assert any("greeting median" in reason for reason in document["degraded_reasons"])
    assert document["healthy"] and document["greeting_latency_median_seconds"] > 0.5
    assert metric(lab, "mx1", "mailha_health_level") == 1
    assert metric(lab, "mx1", "mailha_smtp_greeting_seconds_count") > 0
    # Degraded alone moves nothing: mx1 keeps the floating IP and the load
    # balancer's traffic, for longer than it took to degrade.
    time.sleep(10)
    assert lab.holders() == ["mx1"]
    assert agent(lab, "mx1", "/active").startswith("active")
    assert status(lab, "mx1")["health_level"] == "degraded"

    mx1.health(failover_on_degraded="true")
    began = time.monotonic()
    wait_for(lambda: lab.holders() == ["mx2"], 120, 1, "mx2 to take the floating IP from the degraded mx1")
    print(f"floating IP on mx2 {time.monotonic() - began:.1f} s after failover_on_degraded (agent restarted)")
    document = status(lab, "mx1")
    assert document["health_level"] == "degraded" and document["vrrp_state"] == "FAULT"
    assert not document["active"] and "degraded" in document["active_reason"]


def test_deferred_mail_shows_a_growing_queue_age_and_degrades(lab, mx1):
    sink = Node(lab, "sink")
    msg_id = message_id(new_run_id(), 0, "news.mailha.test")
    try:
        restrictions = lab.exec("sink", "postconf", "-h", "smtpd_recipient_restrictions").stdout.strip()
        # inline: braces around an entry whose value has spaces.
        deferral = f"check_recipient_access inline:{{{{ {DEFERRED_RECIPIENT} = 451 4.3.0 deferred by the test }}}}"
        sink.postconf(smtpd_recipient_restrictions=", ".join(filter(None, [deferral, restrictions])))
        reply = submit(
            Target(lab.floating_ip, 25), build_message(msg_id, SENDER, DEFERRED_RECIPIENT, "deferred by the sink")
        )
        assert reply.code == 250, f"{reply.code} {reply.text}"
        first = wait_for(
            lambda: (s := status(lab, "mx1"))["queue"].get("deferred", 0) >= 1 and s["queue_oldest_age_seconds"],
            60,
            1,
            "the message in mx1's deferred queue",
        )
        time.sleep(3)
        later = status(lab, "mx1")["queue_oldest_age_seconds"]
        exported = metric(lab, "mx1", "mailha_queue_oldest_message_age_seconds")
        print(f"\noldest queued message: {first:.1f} s, then {later:.1f} s; metric {exported}")
        assert later >= first + 2
        assert exported is not None and exported >= later

        mx1.health(degraded_queue_age_seconds="5")
        document = wait_for(
            lambda: level(lab, "mx1") == "degraded" and status(lab, "mx1"), 60, 1, "mx1 degraded by its queue"
        )
        assert any("oldest queued message" in reason for reason in document["degraded_reasons"])
        assert metric(lab, "mx1", "mailha_health_level") == 1
        assert lab.holders() == ["mx1"]
    finally:
        sink.restore()
    # Nothing acknowledged is lost or doubled: once the sink takes it, the
    # message arrives exactly once.
    lab.exec("mx1", "postqueue", "-f")
    assert lab.wait_delivered([msg_id], timeout=90)[msg_id] == 1
