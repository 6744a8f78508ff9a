"""Operations on podman-connected environments (the lab): run a command in a
host, inject faults, read the recipient side. Drills and tests use these;
the switch itself goes through the playbooks and works on any environment.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter

from mailha.errors import MailhaError
from mailha.pair import Pair

MASTER_PROCESS = "^/usr/lib/postfix/sbin/master"


class PodmanHosts:
    def __init__(self, pair: Pair):
        if pair.vars.get("ansible_connection") != "containers.podman.podman":
            raise MailhaError(
                f"drills inject faults with podman; the {pair.environment} environment is reached over "
                f"{pair.vars.get('ansible_connection')}: run drills on the lab"
            )
        self.pair = pair
        self.env = dict(os.environ)
        self.env.setdefault("CONTAINERS_CONF", str(pair.repo_root / "lab" / "containers.conf"))
        self.targets = {name: node.target for name, node in pair.nodes.items()}

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

    def booted(self, target: str) -> bool:
        """systemd in the container has finished booting (degraded counts: a lab unit may fail)."""
        state = self.exec(target, "systemctl", "is-system-running", check=False).stdout.strip()
        return state in ("running", "degraded")

    def pid(self, target: str) -> str:
        return self.podman("inspect", "-f", "{{.State.Pid}}", target).stdout.strip()

    def link(self, target: str, up: bool) -> None:
        """Cut or restore a host's network link from outside, as a switch port would."""
        subprocess.run(
            ["nsenter", "-t", self.pid(target), "-n", "ip", "link", "set", "eth0", "up" if up else "down"],
            check=True,
            capture_output=True,
            timeout=10,
        )


class RecipientSide:
    """The lab's sink: counts and reads what arrived, by Message-ID."""

    def __init__(self, hosts: PodmanHosts, target: str):
        self.hosts = hosts
        self.target = target

    def index(self) -> list[dict]:
        out = self.hosts.exec(self.target, "mailha-sink-index", timeout=180).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def counts(self, wanted: set[str] | None = None) -> tuple[Counter, dict[str, dict]]:
        counts: Counter = Counter()
        entries: dict[str, dict] = {}
        for entry in self.index():
            message_id = entry.get("message_id")
            if wanted is None or message_id in wanted:
                counts[message_id] += 1
                entries.setdefault(message_id, entry)
        return counts, entries

    def raw(self, file: str) -> bytes:
        result = subprocess.run(
            ["podman", "exec", self.target, "cat", file],
            capture_output=True,
            timeout=30,
            env=self.hosts.env,
            check=True,
        )
        return result.stdout


def recipient_side(pair: Pair, hosts: PodmanHosts) -> RecipientSide:
    sinks = pair.groups.get("recipient") or {}
    if not sinks:
        raise MailhaError("the inventory has no host in group recipient; drills need the lab's recipient side")
    return RecipientSide(hosts, next(iter(sinks.values()))["ansible_host"])
