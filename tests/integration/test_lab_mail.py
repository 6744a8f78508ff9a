"""End-to-end mail flow on the provisioned lab: real SMTP, real DNS, real VRRP."""

from __future__ import annotations

import smtplib
import textwrap

import dkim
import pytest

from mailha.traffic import (
    Target,
    TrafficGenerator,
    accepted_ids,
    build_message,
    message_id,
    new_run_id,
    submit,
)
from tests.integration.labtools import wait_for

pytestmark = pytest.mark.lab

SENDER = "campaign@news.mailha.test"


def send_one(target: Target, recipient: str = "subscriber@inbox.test") -> str:
    msg_id = message_id(new_run_id(), 0, "news.mailha.test")
    reply = submit(target, build_message(msg_id, SENDER, recipient, "lab test"))
    assert reply.code == 250, f"{target} answered {reply.code} {reply.text}"
    return msg_id


def dkim_verifies(lab, raw: bytes) -> bool:
    resolver = lab.resolver()

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        answer = resolver.resolve(name, "TXT")
        return b"".join(b"".join(rdata.strings) for rdata in answer)

    return dkim.verify(raw, dnsfunc=dnsfunc)


@pytest.mark.parametrize(
    "via",
    ["balancer:25", "balancer:587+starttls", "floating-ip:25"],
)
def test_message_reaches_the_sink_signed(lab, via):
    host = lab.balancer if via.startswith("balancer") else lab.floating_ip
    port = int(via.split(":")[1].split("+")[0])
    msg_id = send_one(Target(host, port, starttls=via.endswith("starttls")))
    lab.wait_delivered([msg_id], timeout=60)
    [stored] = [m for m in lab.sink_index() if m["message_id"] == msg_id]
    assert stored["dkim_domain"] == "news.mailha.test"
    # Delivered from the sending identity, whichever relay is active.
    assert stored["client_address"] == lab.floating_ip
    assert dkim_verifies(lab, lab.raw_message(stored["file"])), "DKIM signature does not verify"


def test_dns_publishes_the_sending_identity(lab):
    resolver = lab.resolver()
    zone = lab.vars["mailha_dns_zone"]
    assert [r.address for r in resolver.resolve(lab.vars["mailha_sending_host"], "A")] == [lab.floating_ip]
    ptr = resolver.resolve_address(lab.floating_ip)
    assert [r.to_text() for r in ptr] == [lab.vars["mailha_sending_host"] + "."]
    spf = b"".join(resolver.resolve(f"news.{zone}", "TXT")[0].strings).decode()
    assert f"ip4:{lab.floating_ip}" in spf
    sink_mx = [r.exchange.to_text() for r in resolver.resolve("inbox.test", "MX")]
    assert sink_mx == [lab.hosts["sink"]["mailha_fqdn"] + "."]


RELAY_PROBE = textwrap.dedent(
    """
    import smtplib, sys
    smtp = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=10)
    smtp.ehlo("outsider.example")
    smtp.mail("spammer@outsider.example")
    code, reply = smtp.rcpt("victim@inbox.test")
    print(code, reply.decode())
    """
)


@pytest.mark.parametrize("via", ["floating-ip", "balancer"])
def test_relay_from_outside_the_submission_networks_is_refused(lab, via):
    """Postfix refuses to relay for a client the firewall lets through but that is not a
    submission network: the load balancer itself, straight to the floating IP, and through
    its own frontend (the PROXY header then names the load balancer). Hosts the firewall
    does not admit at all are tried in test_lab_security."""
    host = lab.floating_ip if via == "floating-ip" else lab.balancer
    result = lab.exec("lb", "python3", "-c", RELAY_PROBE, host, "25")
    code = int(result.stdout.split()[0])
    assert 500 <= code < 600, result.stdout
    assert "Relay access denied" in result.stdout


def test_unauthenticated_submission_port_requires_tls(lab):
    with smtplib.SMTP(lab.balancer, 587, timeout=10) as smtp:
        smtp.ehlo("mailha-client")
        assert smtp.has_extn("starttls")
        code, _ = smtp.mail(SENDER)
    assert 500 <= code < 600


def test_mta_crash_moves_the_floating_ip_and_loses_nothing(lab):
    """kill -9 of the active relay's Postfix master under load: the floating IP moves
    to the standby, mail keeps arriving, and once the old relay's Postfix is restarted
    every acknowledged message is at the sink exactly once."""
    active = lab.active()
    standby = next(h for h in lab.mail if h != active)
    traffic = TrafficGenerator(
        targets=[Target(lab.balancer, 25), Target(lab.floating_ip, 25)],
        rate=20,
        max_messages=400,
        max_seconds=14,
    ).start()
    try:
        wait_for(lambda: len(traffic.snapshot()) >= 40, 30, what="40 submissions before the fault")
        # Anchored: over ssh, sudo's own command line holds the pattern too.
        lab.exec(active, "pkill", "-9", "-f", "^/usr/lib/postfix/sbin/master")
        wait_for(lambda: lab.holders() == [standby], 10, what=f"the floating IP on {standby}")
        attempts = traffic.wait()
    finally:
        traffic.stop()
    after_fault = [a for a in attempts if a.seq >= 40]
    assert any(a.accepted for a in after_fault[-20:]), "submissions did not recover after the failover"
    lab.restart_postfix(active)
    acknowledged = accepted_ids(attempts)
    counts = lab.wait_delivered(acknowledged, timeout=120)
    duplicated = {mid: n for mid, n in counts.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} messages delivered more than once"
    refused = len(attempts) - len(acknowledged)
    print(f"\nmta-crash: {len(attempts)} submitted, {len(acknowledged)} acknowledged, {refused} refused")


# On the relay, three rounds: the role hook a second into the round while
# mailha-health (the greeting within its deadline) runs every 0.1 s for
# 3 s; prints the number of failed checks. Before the fix in
# mailha-postfix-role, a hook run stalled new sessions for 2 to 3 s in one
# round out of two or three.
HEALTH_DURING_ROLE_CHANGE = """
fails=0
for round in 1 2 3; do
  (sleep 1; /usr/local/sbin/mailha-postfix-role "$1" >/dev/null) &
  for i in $(seq 30); do mailha-health >/dev/null 2>&1 || fails=$((fails + 1)); sleep 0.1; done
  wait
done
echo "$fails"
"""


def test_a_role_change_keeps_the_relay_healthy(lab):
    """keepalived's notify hook rewrites the transport map and reloads Postfix on
    every transition. Under load that must not stall the relay past its own health
    check's deadline: a just-promoted relay would put itself in FAULT."""
    standby = next(h for h in lab.mail if h != lab.active())
    traffic = TrafficGenerator(
        targets=[Target(lab.hosts[standby]["mailha_address"], 25)],
        rate=10,
        max_messages=120,
        max_seconds=11,
        sender="mailha-test@news.mailha.test",
    ).start()
    try:
        # The standby's own role: the map is rewritten and Postfix reloaded, nothing else changes.
        failed_checks = lab.exec(standby, "sh", "-c", HEALTH_DURING_ROLE_CHANGE, "sh", "backup").stdout.strip()
        attempts = traffic.wait()
    finally:
        traffic.stop()
    assert failed_checks == "0", f"{standby} failed {failed_checks} of 90 health checks while its role changed"
    assert all(a.accepted for a in attempts), [a.reply for a in attempts if not a.accepted][:3]
    lab.wait_delivered(accepted_ids(attempts), timeout=120)


def test_a_stopped_relay_keeps_its_journal(lab):
    """host-down stops a relay outright. What it logged before, Postfix's
    'may be sent more than once' included, must still be readable when it is
    back: the drill's reconciliation and the operator both read it."""
    active = lab.active()
    standby = next(h for h in lab.mail if h != active)
    marker = f"mailha-journal-{new_run_id()}"

    def logged() -> bool:
        found = lab.exec(standby, "journalctl", "-q", "--no-pager", "-t", "mailha-test", check=False)
        return marker in found.stdout

    def transitions() -> list[str]:
        return lab.exec(standby, "cat", "/var/log/mailha/vrrp-transitions.log").stdout.splitlines()

    lab.exec(standby, "logger", "-t", "mailha-test", marker)
    wait_for(logged, 10, what="the marker in the journal")
    before = len(transitions())
    lab.podman.podman("stop", "-t", "0", lab.container(standby))
    lab.podman.podman("start", lab.container(standby))
    wait_for(lambda: lab.podman.booted(lab.container(standby)), 120, what=f"{standby} to boot")
    assert logged(), f"{standby} lost its journal across a stop and start"
    # Back in the pair for the next test: healthy, BACKUP, the IP unmoved.
    wait_for(lambda: lab.exec(standby, "mailha-health", check=False).returncode == 0, 60, what=f"{standby} healthy")
    wait_for(lambda: "BACKUP" in "".join(transitions()[before:]), 30, what=f"{standby} back as BACKUP")
    assert lab.holders() == [active]
