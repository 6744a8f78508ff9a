"""Reach a pair's hosts the way its inventory does: over SSH as its login user
(sudo to root), or in the podman lab of old through podman (mailha.lab).

Drills inject their faults (mailha.faults) and read the recipient side
through these objects; the switch itself goes through the playbooks. Nothing
here needs podman when the inventory's connection is ssh, so a drill runs on
servers you rent as it does in the lab.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from mailha import names, project
from mailha.errors import BadInput, MailhaError
from mailha.pair import Pair

SSH_CONNECTION = "ansible.builtin.ssh"
# Like Ansible's own ssh_args (ansible.cfg): one connection per host, shared
# by every command for two minutes, and a dead peer noticed within 15 s.
SSH_OPTIONS = (
    "-o", "BatchMode=yes",
    "-o", "ConnectTimeout=10",
    "-o", "ControlMaster=auto",
    "-o", "ControlPersist=120s",
    "-o", "ServerAliveInterval=5",
    "-o", "ServerAliveCountMax=3",
)  # fmt: skip
# network-partition over SSH: nftables tables of the drill's own, ahead of the
# host firewall (priority -50), that drop everything in and out except the
# operator's SSH from the controller; the arp table keeps the host from
# answering for the floating IP it still holds. A timer on the host removes
# them (PARTITION_HEAL_UNIT), so the partition heals even when the controller
# never comes back to it.
PARTITION_TABLE = "mailha_partition"
PARTITION_HEAL_UNIT = "mailha-partition-heal"
PARTITION_HEAL = (
    f"add table inet {PARTITION_TABLE}; delete table inet {PARTITION_TABLE}; "
    f"add table arp {PARTITION_TABLE}; delete table arp {PARTITION_TABLE}"
)
POWER_SECONDS = 120


def partition_rules(controller: str, ssh_port: int) -> str:
    """The nft commands that cut a host off from everything but the controller's SSH."""
    table = PARTITION_TABLE
    return "; ".join(
        (
            f"add table inet {table}",
            f"add chain inet {table} input {{ type filter hook input priority -50; policy drop; }}",
            f"add rule inet {table} input iif lo accept",
            f"add rule inet {table} input ip saddr {controller} tcp dport {ssh_port} accept",
            f"add chain inet {table} output {{ type filter hook output priority -50; policy drop; }}",
            f"add rule inet {table} output oif lo accept",
            f"add rule inet {table} output ip daddr {controller} tcp sport {ssh_port} accept",
            f"add table arp {table}",
            f"add chain arp {table} input {{ type filter hook input priority -50; policy drop; }}",
            f"add rule arp {table} input arp saddr ip {controller} accept",
            f"add chain arp {table} output {{ type filter hook output priority -50; policy drop; }}",
            f"add rule arp {table} output arp daddr ip {controller} accept",
        )
    )


# Runs on the host as root: the heal timer first, so that the host heals even
# if the cut ends this very session; then the cut.
CUT_SCRIPT = """
systemctl stop "$1.timer" "$1.service" >/dev/null 2>&1 || true
systemctl reset-failed "$1.timer" "$1.service" >/dev/null 2>&1 || true
systemd-run --quiet --unit="$1" --on-active="$2" --timer-property=AccuracySec=100ms /usr/sbin/nft "$3"
nft "$4"
"""
HEAL_SCRIPT = """
systemctl stop "$1.timer" >/dev/null 2>&1 || true
nft "$2"
"""


def _control_dir() -> str:
    """A directory of this user's own for ssh's control sockets."""
    path = Path(tempfile.gettempdir()) / f"mailha-ssh-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.stat()
    except OSError as exc:
        raise MailhaError(f"cannot make ssh's control directory {path}: {exc.strerror or exc}") from None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise MailhaError(f"{path} is not this user's own private directory; remove it and retry")
    return str(path)


class SshHosts:
    """The pair's hosts over SSH with the inventory's login (ansible_user,
    ansible_port, ansible_ssh_private_key_file, ansible_ssh_common_args): the
    operations of mailha.faults.Hosts. host-down powers a host off and on
    through the commands in mailha_host_power_off and mailha_host_power_on."""

    def __init__(self, pair: Pair):
        self.pair = pair
        self.targets = {name: node.target for name, node in pair.nodes.items()}
        self.names: dict[str, str] = {}
        self.logins: dict[str, tuple[str, list[str]]] = {}
        control = _control_dir()
        for hosts in pair.groups.values():
            for name, host_vars in hosts.items():
                target = host_vars["ansible_host"]
                self.names[target] = name
                self.logins[target] = self._login(name, host_vars, control)
        self.controller = str(pair.vars.get("mailha_controller_address", ""))

    def _login(self, name: str, host_vars: dict[str, Any], control: str) -> tuple[str, list[str]]:
        def var(key: str, default: Any = None) -> Any:
            return host_vars.get(key, self.pair.vars.get(key, default))

        user, port = str(var("ansible_user", "root")), var("ansible_port", 22)
        if names.login_problem(user) is not None or not isinstance(port, int) or not 0 < port < 65536:
            raise BadInput(
                f"inventory {self.pair.inventory_path}: {name} has no usable ssh login "
                f"({names.shown(user)}, port {names.shown(port)}); regenerate it with 'mailha inventory'"
            )
        args = ["ssh", *SSH_OPTIONS, "-o", f"ControlPath={control}/%C", "-p", str(port), "-l", user]
        key = var("ansible_ssh_private_key_file")
        if key:
            args += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
        common = var("ansible_ssh_common_args")
        if common:
            args += shlex.split(str(common))
        return user, args

    def ssh_port(self, target: str) -> int:
        return int(self.logins[target][1][self.logins[target][1].index("-p") + 1])

    def _run(
        self, target: str, command: tuple[str, ...], *, timeout: float, check: bool, text: bool = True
    ) -> subprocess.CompletedProcess:
        if target not in self.logins:
            raise MailhaError(f"{names.shown(target)} is no host of inventory {self.pair.inventory_path}")
        user, args = self.logins[target]
        remote = shlex.join(command if user == "root" else ("sudo", "-n", "--", *command))
        name = self.names[target]
        try:
            result = subprocess.run(
                [*args, "--", target, remote], capture_output=True, text=text, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise MailhaError(f"{command[0]} on {name} over ssh did not finish within {timeout:g}s") from None
        except OSError as exc:
            raise MailhaError(f"cannot run ssh to reach {name}: {exc.strerror or exc}") from None
        if check and result.returncode != 0:
            stderr = result.stderr if text else result.stderr.decode(errors="replace")
            detail = " ".join(stderr.split())[:300] or f"exit {result.returncode}"
            where = "ssh to" if result.returncode == 255 else f"{command[0]} on"
            raise MailhaError(f"{where} {name} failed: {detail}")
        return result

    def exec(self, target: str, *command: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        return self._run(target, command, timeout=timeout, check=check)

    def read(self, target: str, path: str) -> bytes:
        return self._run(target, ("cat", "--", path), timeout=30, check=True, text=False).stdout

    def power_problem(self) -> str | None:
        """Why host-down cannot run here (None: it can)."""
        settings = self.pair.settings
        if settings.get("mailha_host_power_off") and settings.get("mailha_host_power_on"):
            return None
        return (
            f"host-down powers a relay off and on, and the {self.pair.environment} environment has no way to: "
            "the lab has one; elsewhere set mailha_host_power_off and mailha_host_power_on "
            "(commands with {host}) in group_vars/all/mailha.yml"
        )

    def _power(self, target: str, setting: str) -> None:
        problem = self.power_problem()
        if problem is not None:
            raise MailhaError(problem)
        name = self.names[target]
        command = [word.replace("{host}", name) for word in self.pair.settings[setting]]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=POWER_SECONDS,
                cwd=project.project_dir(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise MailhaError(f"{setting} for {name} did not finish within {POWER_SECONDS}s") from None
        except OSError as exc:
            raise MailhaError(f"{setting} for {name} cannot run {command[0]}: {exc.strerror or exc}") from None
        if result.returncode != 0:
            detail = " ".join(result.stderr.split())[:300] or f"exit {result.returncode}"
            raise MailhaError(f"{setting} for {name} failed: {detail}")

    def stop(self, target: str) -> None:
        self._power(target, "mailha_host_power_off")

    def start(self, target: str) -> None:
        self._power(target, "mailha_host_power_on")

    def booted(self, target: str) -> bool:
        """systemd on the host has finished booting; an unreachable host has not."""
        try:
            result = self.exec(target, "systemctl", "is-system-running", timeout=20, check=False)
        except MailhaError:
            return False
        return result.stdout.strip() in ("running", "degraded")

    def cut(self, target: str, heal_after: float) -> None:
        """Partition the host (PARTITION_*); it heals by itself after `heal_after` seconds."""
        if not self.controller:
            raise MailhaError("the inventory names no mailha_controller_address: the partition would cut ssh too")
        rules = partition_rules(self.controller, self.ssh_port(target))
        seconds = f"{max(1, round(heal_after))}s"
        self.exec(target, "sh", "-euc", CUT_SCRIPT, "sh", PARTITION_HEAL_UNIT, seconds, PARTITION_HEAL, rules)

    def heal(self, target: str) -> None:
        self.exec(target, "sh", "-euc", HEAL_SCRIPT, "sh", PARTITION_HEAL_UNIT, PARTITION_HEAL)


class RecipientSide:
    """The recipient side (the sink role): counts and reads what arrived, by Message-ID."""

    def __init__(self, hosts: Any, target: str):
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
        return self.hosts.read(self.target, file)


def recipient_side(pair: Pair, hosts: Any) -> RecipientSide:
    sinks = pair.groups.get("recipient") or {}
    if not sinks:
        raise MailhaError(
            "the inventory has no host in group recipient; a drill counts what arrived there: "
            "deploy the sink role on a small server (README, 'A recipient side for drills')"
        )
    name, host_vars = next(iter(sinks.items()))
    target = host_vars.get("ansible_host") if isinstance(host_vars, dict) else None
    rule = names.target_problem(target)
    if rule is not None:
        raise BadInput(f"inventory {pair.inventory_path}: {name}.ansible_host is {names.shown(target)}; it {rule}")
    return RecipientSide(hosts, target)


def hosts_for(pair: Pair) -> Any:
    """The hosts object of the inventory's connection (mailha.faults.Hosts)."""
    connection = pair.vars.get("ansible_connection")
    if connection == SSH_CONNECTION:
        return SshHosts(pair)
    from mailha.lab import PODMAN_CONNECTION, PodmanHosts

    if connection == PODMAN_CONNECTION:
        return PodmanHosts(pair)
    raise MailhaError(
        f"the {pair.environment} environment is reached over {names.shown(connection)}; "
        "drills reach hosts over ssh or podman"
    )
