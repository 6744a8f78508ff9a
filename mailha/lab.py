"""Operations on podman-connected environments (the lab): run a command in a
host, stop and start it, cut its link (what mailha.faults needs), read the
recipient side. Drills and tests use these; the switch itself goes through
the playbooks and works on any environment.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter

from mailha import names, project
from mailha.errors import BadInput, MailhaError
from mailha.pair import Pair


class PodmanHosts:
    """The lab's hosts, reached with podman: the operations of mailha.faults.Hosts."""

    def __init__(self, pair: Pair):
        if pair.vars.get("ansible_connection") != "containers.podman.podman":
            raise MailhaError(
                f"drills inject faults with podman; the {pair.environment} environment is reached over "
                f"{pair.vars.get('ansible_connection')}: run drills on the lab"
            )
        self.pair = pair
        self.env = dict(os.environ)
        self.env.setdefault("CONTAINERS_CONF", str(project.project_dir() / "lab" / "containers.conf"))
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

    def stop(self, target: str) -> None:
        """No grace period (-t 0): the container is killed, not shut down."""
        self.podman("stop", "-t", "0", target)

    def start(self, target: str) -> None:
        self.podman("start", target)

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


class RecipientSide:
    """The lab's sink: counts and reads what arrived, by Message-ID."""

    def __init__(self, hosts: PodmanHosts, target: str):
        self.hosts = hosts
        self.target = target

    def index(self, since: float | None = None) -> list[dict]:
        """What the sink stored (since an epoch time: only files stored from then on)."""
        extra = () if since is None else ("--since", f"{since:.3f}")
        out = self.hosts.exec(self.target, "mailha-sink-index", *extra, timeout=180).stdout
        entries = []
        for number, line in enumerate(out.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):
                entry = None
            if not isinstance(entry, dict):
                raise MailhaError(f"mailha-sink-index on {self.target}: line {number} is not a JSON object")
            entries.append(entry)
        return entries

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
        try:
            result = subprocess.run(
                ["podman", "exec", self.target, "cat", "--", file],
                capture_output=True,
                timeout=30,
                env=self.hosts.env,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MailhaError(f"podman exec {self.target} cat failed: {exc}") from None
        if result.returncode != 0:
            detail = " ".join(result.stderr.decode(errors="replace").split())[:300]
            raise MailhaError(f"reading {file} on {self.target} failed: {detail}")
        return result.stdout


def recipient_side(pair: Pair, hosts: PodmanHosts) -> RecipientSide:
    sinks = pair.groups.get("recipient") or {}
    if not sinks:
        raise MailhaError("the inventory has no host in group recipient; drills need the lab's recipient side")
    name, host_vars = next(iter(sinks.items()))
    target = host_vars.get("ansible_host") if isinstance(host_vars, dict) else None
    rule = names.target_problem(target)
    if rule is not None:
        raise BadInput(f"inventory {pair.inventory_path}: {name}.ansible_host is {names.shown(target)}; it {rule}")
    return RecipientSide(hosts, target)
