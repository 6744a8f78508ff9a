"""Fixtures for tests on the provisioned lab (make provision)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.labtools import INVENTORY, Lab, load_lab, wait_for

MAILHA = str(Path(sys.executable).parent / "mailha")


@pytest.fixture(scope="session")
def lab() -> Lab:
    return load_lab()


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Run the mailha console script against the lab, with a state directory of the module's own."""
    env = dict(os.environ, MAILHA_STATE_DIR=str(tmp_path_factory.mktemp("mailha-state")))

    def run(*args: str, timeout: float = 600, path: str | None = None) -> subprocess.CompletedProcess:
        """`path` replaces PATH (the drills prove they need no podman)."""
        began = time.monotonic()
        result = subprocess.run(
            [MAILHA, *args, "--inventory", str(INVENTORY)],
            capture_output=True,
            text=True,
            env=env if path is None else dict(env, PATH=path),
            timeout=timeout,
            check=False,
        )
        result.seconds = time.monotonic() - began
        return result

    run.state_dir = env["MAILHA_STATE_DIR"]
    return run


def fail_back_to_primary(lab, cli, hold_down: float = 31) -> None:
    """Make mx1 active again, waiting out the failback hold-down if a test just switched."""
    for _ in range(3):
        if lab.active() == "mx1":
            return
        # Setup, not the switch under test: its preflight is tested elsewhere.
        result = cli("failback", "--yes", "--skip-preflight", "--reason", "test setup")
        if result.returncode != 0 and "hold-down" in result.stdout + result.stderr:
            time.sleep(hold_down)
    assert lab.active() == "mx1", "cannot fail back to mx1"


@pytest.fixture(scope="module")
def on_primary(lab, cli):
    """Start from mx1 active: an earlier test may have left the floating IP on mx2."""
    if lab.active() != "mx1":
        result = cli("failback", "--yes", "--skip-preflight", "--reason", "test setup")
        assert result.returncode == 0, result.stdout + result.stderr
    assert lab.active() == "mx1"


@pytest.fixture
def steady(lab, cli):
    """Each drill starts from the known steady state, whatever an earlier one left:
    every relay up, no hand-over pending, mx1 active, the pair healthy."""
    for host in lab.mail:
        lab.podman.podman("start", lab.container(host))
    cli("queue", "handover")  # refused when none is pending
    fail_back_to_primary(lab, cli)
    wait_for(lambda: json.loads(cli("status", "--output", "json").stdout)["verdict"] == "healthy", 120, 1, "healthy")
