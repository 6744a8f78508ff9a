"""Operations on lab containers through podman: run a command in a host,
stop and start it, cut its link (what mailha.faults needs), read a file.

The lab is reached over SSH like any server (mailha.hosts); this is for an
inventory whose connection is podman, and for the lab's own tests, which
stop, start and inspect containers from outside.
"""

from __future__ import annotations

import os
import subprocess

from mailha import project
from mailha.errors import MailhaError
from mailha.pair import Pair

PODMAN_CONNECTION = "containers.podman.podman"


class PodmanHosts:
    """The lab's hosts, reached with podman: the operations of mailha.faults.Hosts."""

    def __init__(self, pair: Pair, containers: dict[str, str] | None = None):
        """`containers` names each host's container when the inventory's
        targets are not containers (the lab over SSH, seen by its tests)."""
        if containers is None and pair.vars.get("ansible_connection") != PODMAN_CONNECTION:
            raise MailhaError(
                f"the {pair.environment} environment is reached over {pair.vars.get('ansible_connection')}, "
                "not podman; use mailha.hosts.hosts_for"
            )
        self.pair = pair
        self.env = dict(os.environ)
        self.env.setdefault("CONTAINERS_CONF", str(project.project_dir() / "lab" / "containers.conf"))
        self.targets = containers or {name: node.target for name, node in pair.nodes.items()}

    def podman(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run(
                ["podman", *args], capture_output=True, text=True, timeout=timeout, env=self.env, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MailhaError(f"podman {' '.join(args[:2])} failed: {exc}") from None
        if check and result.returncode != 0:
            raise MailhaError(f"podman {' '.join(args[:3])} failed: {' '.join(result.stderr.split())[:300]}")
        return result

    def exec(self, target: str, *command: str, timeout: float = 60, check: bool = True):
        return self.podman("exec", target, *command, timeout=timeout, check=check)

    def stop(self, target: str) -> None:
        """No grace period (-t 0): the container is killed, not shut down."""
        self.podman("stop", "-t", "0", target)

    def start(self, target: str) -> None:
        self.podman("start", target)

    def read(self, target: str, path: str) -> bytes:
        try:
            result = subprocess.run(
                ["podman", "exec", target, "cat", "--", path],
                capture_output=True,
                timeout=30,
                env=self.env,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MailhaError(f"podman exec {target} cat failed: {exc}") from None
        if result.returncode != 0:
            detail = " ".join(result.stderr.decode(errors="replace").split())[:300]
            raise MailhaError(f"reading {path} on {target} failed: {detail}")
        return result.stdout

    def power_problem(self) -> str | None:
        return None

    def cut(self, target: str, heal_after: float) -> None:
        """The link goes down (heal_after is not kept: the controller heals it)."""
        self.link(target, up=False)

    def heal(self, target: str) -> None:
        self.link(target, up=True)

    def booted(self, target: str) -> bool:
        """systemd in the container has finished booting (degraded counts: a lab unit may fail)."""
        state = self.exec(target, "systemctl", "is-system-running", check=False).stdout.strip()
        return state in ("running", "degraded")

    def pid(self, target: str) -> str:
        return self.podman("inspect", "-f", "{{.State.Pid}}", target).stdout.strip()

    def link(self, target: str, up: bool) -> None:
        """Cut or restore a host's network link from outside, as a switch port would."""
        pid = self.pid(target)
        if not pid.isdigit():
            raise MailhaError(f"podman inspect gave {pid!r} as the process of {target}, not a process id")
        command = ["nsenter", "-t", pid, "-n", "ip", "link", "set", "eth0", "up" if up else "down"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MailhaError(f"nsenter for {target} failed: {exc}") from None
        if result.returncode != 0:
            raise MailhaError(
                f"setting the link of {target} {'up' if up else 'down'} failed: {' '.join(result.stderr.split())[:300]}"
            )
