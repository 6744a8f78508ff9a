"""The pair fails over for real: kill -9 of the primary's Postfix master moves
the floating IP to the standby, and mail submitted to the floating IP keeps
reaching the recipient side.

molecule runs these tests twice (scenario.test_sequence): before the side
effect, when mx1 must hold the floating IP, and after it, when mx2 must. The
marker /run/molecule-side-effect on mx1 (the time of the kill) tells which.
"""

import datetime
import json
import time
import uuid

import pytest
import testinfra

FLOATING_IP = "10.213.1.170"
MX1, MX2, SINK = "molecule-fo-mx1", "molecule-fo-mx2", "molecule-fo-sink"
MARKER = "/run/molecule-side-effect"
LOG = "/var/log/mailha/vrrp-transitions.log"

# One podman exec per command; the sink also plays the campaign client.
testinfra_hosts = [f"podman://{SINK}"]

SUBMIT = """
import smtplib, sys
from email.message import EmailMessage
message = EmailMessage()
message["From"] = "campaign@news.mailha.test"
message["To"] = "subscriber@inbox.test"
message["Subject"] = "failover scenario"
message["Message-ID"] = sys.argv[2]
message.set_content("through the floating IP\\n")
with smtplib.SMTP(sys.argv[1], 25, timeout=10) as smtp:
    print(smtp.send_message(message) or "accepted")
"""

# Polls the sink's index (bounded, 30 s) until the message is stored; prints its record.
WAIT_FOR_MESSAGE = (
    'for i in $(seq 150); do line=$(mailha-sink-index | grep -F -- "$1"); '
    '[ -n "$line" ] && { echo "$line"; exit 0; }; sleep 0.2; done; exit 1'
)


def node(name):
    return testinfra.get_host(f"podman://{name}")


def holds_vip(host):
    return host.run(f"ip -o -4 addr show dev eth0 | grep -q ' {FLOATING_IP}/'").rc == 0


def wait_for(host, shell_condition, seconds):
    """Poll inside the node (no exec round trips), bounded by seconds."""
    tries = int(seconds / 0.1)
    loop = f"for i in $(seq {tries}); do if {shell_condition}; then exit 0; fi; sleep 0.1; done; exit 1"
    return host.run("sh -c %s", loop).rc == 0


def transitions(host):
    """(epoch seconds, state) of every line of keepalived's transition log."""
    result = []
    for line in host.run(f"cat {LOG}").stdout.splitlines():
        stamp, _instance, state, _priority = line.split()
        parsed = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)
        result.append((parsed.timestamp(), state))
    return result


@pytest.fixture(scope="module")
def fault_at():
    """Epoch of the kill, or None before the side effect."""
    marker = node(MX1).run(f"cat {MARKER}")
    return float(marker.stdout) if marker.rc == 0 else None


@pytest.fixture(scope="module")
def active(fault_at):
    return MX1 if fault_at is None else MX2


@pytest.fixture(scope="module")
def standby(active):
    return MX2 if active == MX1 else MX1


def test_floating_ip_is_on_the_active_relay_only(active, standby):
    assert wait_for(node(active), f"ip -o -4 addr show dev eth0 | grep -q ' {FLOATING_IP}/'", 10), (
        f"{active} does not hold {FLOATING_IP}"
    )
    assert not holds_vip(node(standby)), f"{standby} holds {FLOATING_IP} too"


def test_message_to_the_floating_ip_reaches_the_sink(host, active):
    msg_id = f"<failover-{uuid.uuid4().hex[:12]}@news.mailha.test>"
    started = time.monotonic()
    submitted = host.run("python3 -c %s %s %s", SUBMIT, FLOATING_IP, msg_id)
    assert submitted.rc == 0 and submitted.stdout.strip() == "accepted", submitted.stderr
    stored = host.run("sh -c %s wait %s", WAIT_FOR_MESSAGE, msg_id)
    assert stored.rc == 0, f"{msg_id} did not reach the sink within 30 s"
    record = json.loads(stored.stdout)
    # Sent from the sending identity, whichever relay holds it.
    assert record["client_address"] == FLOATING_IP
    print(f"\n{msg_id} through {active} stored after {time.monotonic() - started:.2f} s")


def test_primary_crash_moved_the_floating_ip(fault_at):
    if fault_at is None:
        pytest.skip("before the side effect")
    primary, standby = node(MX1), node(MX2)
    # systemd's one-shot wrapper still says active: the SMTP check caught it.
    assert primary.run("pgrep -f '^/usr/lib/postfix/sbin/master'").rc == 1
    assert primary.run("systemctl is-active postfix").stdout.strip() == "active"
    assert wait_for(primary, f"grep -q ' VI_MAIL FAULT ' {LOG}", 5)
    fault_logged = min(at for at, state in transitions(primary) if state == "FAULT" and at >= fault_at - 1)
    master_logged = min(at for at, state in transitions(standby) if state == "MASTER" and at >= fault_at - 1)
    print(
        f"\nkill -9 of mx1's Postfix master: mx1 FAULT after {fault_logged - fault_at:.2f} s, "
        f"mx2 MASTER after {master_logged - fault_at:.2f} s"
    )
    assert master_logged - fault_at < 5
    # The crashed node now hands anything it still queues to the floating IP.
    transport = primary.run("cat /etc/postfix/mailha_role_transport").stdout.strip()
    assert transport == f"* relay:[{FLOATING_IP}]:25"
