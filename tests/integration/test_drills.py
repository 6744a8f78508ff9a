"""Drills on the lab: real faults under load, figures asserted from the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.labtools import INVENTORY

pytestmark = pytest.mark.lab

MAILHA = str(Path(sys.executable).parent / "mailha")


@pytest.mark.parametrize("scenario", ["mta-crash", "network-partition"])
def test_drill_loses_nothing_and_reports_the_timeline(lab, tmp_path, scenario):
    report_dir = tmp_path / scenario
    env = dict(os.environ, MAILHA_STATE_DIR=str(tmp_path / "state"))
    result = subprocess.run(
        [
            MAILHA,
            "drill",
            "--scenario",
            scenario,
            "--rate",
            "10",
            "--duration",
            "12",
            "--yes",
            "--report",
            str(report_dir),
            "--inventory",
            str(INVENTORY),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode in (0, 3), result.stdout + result.stderr
    report = json.loads((report_dir / "report.json").read_text())
    figures = report["figures"]
    print(
        f"\n{scenario}: outage {figures['outage_seconds']}s, detection {figures['detection_seconds']}s, "
        f"floating IP moved {figures['floating_ip_moved_seconds']}s, {figures['acknowledged']} acknowledged"
    )
    assert figures["acknowledged"] > 0
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["recovered"] is True
    assert figures["split_seconds"] == 0 or scenario == "network-partition"
    names = {e["name"] for e in report["timeline"]["events"]}
    assert {"fault_injected", "floating_ip_moved", "restored"} <= names
    assert figures["dkim_checked"] > 0 and figures["unsigned"] == 0
    assert (result.returncode == 0) == report["verdict"]["passed"]
    html = (report_dir / "report.html").read_text()
    assert "<svg" in html and "fault_injected +0.00s" in html
    assert lab.active() == "mx1", "the drill must fail back to the primary"
