"""Drills on the lab: real faults under load, figures asserted from the report."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab


# These reach the relays over SSH alone, as on rented servers: they run with
# no podman on PATH. host-down powers a container off and on (the lab's hook,
# scripts/lab-podman.sh), and vrrp-blocked's steady fixture may need podman.
WITHOUT_PODMAN = ("mta-crash", "network-partition", "keepalived-crash")


@pytest.fixture(scope="module")
def path_without_podman(tmp_path_factory) -> str:
    """PATH as it is, with every podman left out: the other programs linked into one directory."""
    shim = tmp_path_factory.mktemp("no-podman")
    for directory in os.environ["PATH"].split(os.pathsep):
        if not Path(directory).is_dir():
            continue
        for program in Path(directory).iterdir():
            if program.name != "podman" and not (shim / program.name).exists() and os.access(program, os.X_OK):
                (shim / program.name).symlink_to(program)
    path = f"{Path(sys.executable).parent}{os.pathsep}{shim}"
    assert shutil.which("podman", path=path) is None and shutil.which("ssh", path=path)
    return path


@pytest.mark.parametrize(
    "scenario", ["mta-crash", "network-partition", "keepalived-crash", "host-down", "vrrp-blocked"]
)
def test_drill_loses_nothing_and_reports_the_timeline(lab, cli, steady, tmp_path, scenario, path_without_podman):
    report_dir = tmp_path / scenario
    result = cli(
        "drill", "--scenario", scenario, "--rate", "20", "--duration", "12", "--yes", "--report", str(report_dir),
        path=path_without_podman if scenario in WITHOUT_PODMAN else None,
    )  # fmt: skip
    # 0: every target met; 3: one breached. Which breach is acceptable is
    # decided below from the figures: only RFC 1047 duplicates.
    assert result.returncode in (0, 3), result.stdout + result.stderr
    report = json.loads((report_dir / "report.json").read_text())
    figures = report["figures"]
    print(
        f"\n{scenario}: outage {figures['outage_seconds']}s, detection {figures['detection_seconds']}s, "
        f"floating IP moved {figures['floating_ip_moved_seconds']}s, {figures['acknowledged']} acknowledged"
    )
    assert figures["acknowledged"] > 0
    assert figures["lost"] == 0
    refused = figures["refused_by_target"]
    print(f"refused by target: {refused}")
    if scenario in ("mta-crash", "host-down"):
        # The load balancer retries a failed connection on the standby. A
        # session it sent to the failed relay before its check saw the fault
        # can be cut or stranded there (a dead master's busy smtpd children
        # keep its listener accepting until they exit; systemd does not see
        # the master die): nothing can retry that. No session it opens once its check has seen the fault
        # is refused (the floating IP's clients keep a short outage).
        events = {e["name"]: e["at"] for e in report["timeline"]["events"]}
        assert "balancer_left_failed" in events, events
        after_fault = [
            a
            for a in report["attempts"]
            if a["target"] == f"{lab.balancer}:25"
            and a["code"] != 250
            and a["started"] >= events["balancer_left_failed"]
        ]
        assert not after_fault, after_fault
    if scenario == "mta-crash":
        # The master's death cuts no delivery: its children finish theirs.
        assert figures["duplicated"] == 0
    else:
        # A delivery the fault caught between its data and the receiver's 250
        # may arrive twice (RFC 1047): copies beyond those the relays' logs
        # confirm. Any other duplicate is a defect.
        assert figures["duplicated"] == figures["duplicated_cut_in_flight"], report["reconciliation"]
    assert figures["recovered"] is True
    names = {e["name"] for e in report["timeline"]["events"]}
    if scenario == "vrrp-blocked":
        # Both relays claim the floating IP until the pair settles it by
        # itself; the active relay keeps it (the better claim).
        print(f"vrrp-blocked: {figures['split_seconds']}s with two holders, {figures['duplicated']} duplicated")
        assert 0 < figures["split_seconds"] <= 10
        assert {"fault_injected", "restored"} <= names
    else:
        assert figures["split_seconds"] == 0 or scenario == "network-partition"
        assert {"fault_injected", "floating_ip_moved", "restored"} <= names
    assert figures["dkim_checked"] > 0 and figures["unsigned"] == 0
    # Every target holds (outage, lost, unsigned, ...), except max_duplicated
    # for the copies a fault cut in flight (asserted equal above), which the
    # drill counts against it all the same (README, "Drills").
    breaches = [
        b
        for b in report["verdict"]["breaches"]
        if not ("arrived more than once" in b and figures["duplicated"] == figures["duplicated_cut_in_flight"])
    ]
    assert not breaches, report["verdict"]
    assert (result.returncode == 0) == report["verdict"]["passed"]
    html = (report_dir / "report.html").read_text()
    assert "<svg" in html and "fault_injected +0.00s" in html
    assert lab.active() == "mx1", "the drill must fail back to the primary"


def test_mta_crash_at_bulk_rate_loses_and_duplicates_nothing(lab, cli, steady, tmp_path):
    """The crash under a campaign's rate, not a trickle: 100 msg/s, each on its own connection."""
    report_dir = tmp_path / "mta-crash-100"
    result = cli(
        "drill", "--scenario", "mta-crash", "--rate", "100", "--duration", "12", "--yes", "--report", str(report_dir)
    )
    # 0 success, 3 a breached target: what this rate must meet is asserted below.
    assert result.returncode in (0, 3), result.stdout + result.stderr
    report = json.loads((report_dir / "report.json").read_text())
    figures, per_target = report["figures"], report["outage"]["per_target"]
    print(
        f"\nmta-crash at 100 msg/s: outage {figures['outage_seconds']}s, {figures['acknowledged']} acknowledged, "
        f"{figures['lost']} lost, {figures['duplicated']} duplicated, "
        + ", ".join(f"{t}: {o['seconds']}s, {o['refused']} refused" for t, o in per_target.items())
    )
    # At this rate on two shared cores the outage on either path has been
    # 0.02 to 5 s: measured and printed, not asserted (the 20 msg/s drills
    # assert the outage target and 0 refused through the load balancer).
    assert all(o["recovered"] for o in per_target.values()), per_target
    # Well over half of 1200 submissions acknowledged: the rate was really offered and taken.
    assert figures["acknowledged"] > 600
    assert figures["lost"] == 0
    assert figures["duplicated"] == 0
    assert figures["dkim_checked"] > 0 and figures["unsigned"] == 0
    assert figures["recovered"] is True
    assert lab.active() == "mx1", "the drill must fail back to the primary"
