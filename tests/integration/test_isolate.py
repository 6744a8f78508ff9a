"""`mailha failover --isolate` on the lab, under traffic: the active relay is treated
as compromised, fenced, and later rebuilt and let back.

One test, in the order an operator lives it, because every step builds on the one
before (and the rebuild at the end costs minutes): isolate; what the suspect can no
longer do; the new DKIM selector; its queue inspected and released on the
operator's command, with every acknowledged message delivered exactly once;
rebuild, unisolate, failback.
"""

from __future__ import annotations

import email
import json
import os
import re
import smtplib
import subprocess
import time

import dns.resolver
import pytest

from mailha import names
from mailha.traffic import Target, TrafficGenerator, accepted_ids
from tests.integration.labtools import INVENTORY, REPO, wait_for
from tests.integration.test_cli_switch import HOLD_DOWN
from tests.integration.test_lab_mail import dkim_verifies, send_one

pytestmark = pytest.mark.lab

SEND_TO_SINK = """
import smtplib, sys
try:
    smtplib.SMTP(sys.argv[1], 25, timeout=5).quit()
    print("sent")
except OSError as error:
    print(f"blocked: {error}")
"""


def selector_of(raw: bytes) -> str:
    header = email.message_from_bytes(raw)["DKIM-Signature"] or ""
    return re.search(r"\bs=([^;\s]+)", header).group(1)


def greeting_node(lab, address: str) -> str:
    with smtplib.SMTP(timeout=5) as smtp:
        _, banner = smtp.connect(address, 25)
    tag = names.NODE_TAG_IN_GREETING.search(banner.decode()).group(1)
    return lab.node_tags[tag]


def test_isolate_fence_rotate_release_rebuild(lab, cli, on_primary):
    suspect, survivor = "mx1", "mx2"
    sink_address = lab.hosts["sink"]["mailha_address"]
    old_selector = "mailha"
    selector_file = REPO / ".lab" / "secrets" / lab.vars["mailha_environment"] / "dkim-selector"
    if selector_file.exists():
        old_selector = selector_file.read_text().strip()

    # Mail the suspect acknowledged and still holds when the breach is found:
    # its transport set to hold (as a planned switch does), five messages in.
    lab.exec(suspect, "/usr/local/sbin/mailha-postfix-role", "hold")
    queued = [send_one(Target(lab.floating_ip, 25)) for _ in range(5)]

    # Bounded well beyond the isolation (two to four minutes on a loaded machine); stop() ends it.
    traffic = TrafficGenerator(targets=[Target(lab.balancer, 25)], rate=10, max_messages=9000, max_seconds=900)
    traffic.start()
    try:
        wait_for(lambda: len(traffic.snapshot()) >= 20, 30, what="traffic before the isolation")
        result = cli("failover", "--isolate", "--yes", "--reason", "test: suspected breach")
        isolated_at = time.time()
        time.sleep(3)
    finally:
        attempts = traffic.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"\nfailover --isolate took {result.seconds:.1f}s; {len(attempts)} submitted")

    # The pair says so, and refuses what would undo the fence.
    status = cli("status", "--output", "json")
    assert status.returncode == 2, status.stdout
    view = json.loads(status.stdout)
    assert view["holders"] == [survivor]
    assert next(n for n in view["nodes"] if n["name"] == suspect)["isolated"] is not None
    assert view["balancer"]["servers"][suspect].startswith("MAINT")
    assert view["balancer"]["servers"][f"{suspect}-standby"].startswith("MAINT")
    failback = cli("failback", "--yes")
    assert failback.returncode != 0 and "isolated" in failback.stderr
    handover = cli("queue", "handover", "--node", suspect)
    assert handover.returncode != 0 and "queue inspect" in handover.stderr

    # The survivor ignores the suspect's VRRP, should a root user there lift the fence.
    rules = lab.exec(survivor, "nft", "list", "table", "inet", "mailha_filter").stdout
    suspect_address = lab.hosts[suspect]["mailha_address"]
    assert not [line for line in rules.splitlines() if "vrrp" in line and suspect_address in line], rules

    # The suspect can no longer send, nor pull the floating IP back with its
    # keepalived started by hand: the survivor keeps answering on the floating IP.
    out = lab.exec(suspect, "python3", "-c", SEND_TO_SINK, sink_address).stdout
    assert out.startswith("blocked"), out
    masked = lab.exec(suspect, "systemctl", "start", "keepalived", check=False)
    assert masked.returncode != 0
    lab.exec(suspect, "systemctl", "unmask", "keepalived")
    lab.exec(suspect, "systemctl", "start", "keepalived")
    try:
        time.sleep(3)
        for _ in range(3):
            subprocess.run(["ip", "neigh", "flush", "to", lab.floating_ip], check=False)
            assert greeting_node(lab, lab.floating_ip) == survivor
        survivor_log = lab.exec(survivor, "tail", "-n", "1", "/var/log/mailha/vrrp-transitions.log").stdout
        assert " MASTER " in survivor_log, survivor_log
    finally:
        lab.exec(suspect, "systemctl", "stop", "keepalived", check=False)

    # Mail accepted after the switch is signed with the new selector, which
    # verifies; the old selector is gone from DNS.
    new_selector = selector_file.read_text().strip()
    assert new_selector != old_selector
    resolver = lab.resolver()
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve(f"{old_selector}._domainkey.news.mailha.test", "TXT")
    after = [a.message_id for a in attempts if a.accepted and a.started > isolated_at]
    assert after, "nothing was accepted after the isolation"
    lab.wait_delivered(after[:5], timeout=60)
    stored = [m for m in lab.sink_index() if m["message_id"] in set(after[:5])]
    for entry in stored:
        raw = lab.raw_message(entry["file"])
        assert selector_of(raw) == new_selector
        assert dkim_verifies(lab, raw)

    # The operator inspects the suspect's queue and releases it: nothing that
    # got a 250 is lost or delivered twice.
    inspect = cli("queue", "inspect", "--node", suspect, "--output", "json")
    assert inspect.returncode == 0, inspect.stderr
    held = json.loads(inspect.stdout)
    print(f"queue of {suspect} after isolation: {len(held)} messages")
    assert len(held) >= len(queued)
    assert {m["queue"] for m in held} == {"hold"}, "the whole queue is on hold"
    assert not lab.sink_counts(queued), "the suspect's queue left before the operator released it"
    released = cli("queue", "handover", "--node", suspect, "--yes")
    assert released.returncode == 0, released.stdout + released.stderr
    acknowledged = accepted_ids(attempts) + queued
    counts = lab.wait_delivered(acknowledged, timeout=180)
    assert not [mid for mid, n in counts.items() if n > 1]
    refused = len(attempts) - len(acknowledged)
    print(f"isolation under 10 msg/s: {len(attempts)} submitted, {refused} refused, 0 lost, 0 duplicated")
    out = lab.exec(suspect, "python3", "-c", SEND_TO_SINK, sink_address).stdout
    assert out.startswith("blocked"), f"fenced again after the release: {out}"

    # A converge refuses the suspect until it is rebuilt; rebuilt, it is let back.
    unisolate = cli("unisolate", suspect, "--reason", "test")
    assert unisolate.returncode != 0 and "rebuild" in unisolate.stderr.lower()
    rebuild_and_let_back(lab, cli, suspect, survivor)
    assert lab.active() == suspect


def rebuild_and_let_back(lab, cli, suspect: str, survivor: str, then: tuple[list[str], ...] = ()) -> None:
    """Rebuild the suspect as a rented server is: a fresh host from the lab's
    image (the cloud's part), configured with the inventory under test, and
    the commands `then`; let it back and fail back to it."""
    env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}")
    subprocess.run(
        [str(REPO / "scripts" / "lab-podman.sh"), "host-remove", lab.container(suspect)], check=True, env=env
    )
    for step in (["make", "lab-hosts"], ["make", "converge", f"INVENTORY={INVENTORY}"], *then):
        provision = subprocess.run(step, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, check=False)
        assert provision.returncode == 0, provision.stdout[-3000:] + provision.stderr[-2000:]
    unisolate = cli("unisolate", suspect, "--reason", "rebuilt from the image")
    assert unisolate.returncode == 0, unisolate.stdout + unisolate.stderr
    wait_for(lambda: lab.active() == survivor, 30, what=f"{survivor} still active")
    time.sleep(HOLD_DOWN)  # the rebuild took longer; this only guards a faster machine
    failback = cli("failback", "--yes", "--reason", "rebuilt")
    assert failback.returncode == 0, failback.stdout + failback.stderr
