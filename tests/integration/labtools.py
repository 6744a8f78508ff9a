"""Access to the provisioned lab (make provision) for the integration tests:
commands on its hosts over SSH, as mailha reaches them (mailha.hosts), and
podman for what only the lab's owner does from outside (stop a container)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import dns.resolver
import pytest

from mailha import inventory, probes
from mailha import pair as pair_mod
from mailha.hosts import RecipientSide, SshHosts, hosts_for, recipient_side
from mailha.lab import PodmanHosts

REPO = Path(__file__).resolve().parents[2]
# The inventory under test: the lab's own, or (make test) the lab's servers
# provisioned as the existing environment (inventories/lab-existing/).
INVENTORY = Path(os.environ.get("MAILHA_TEST_INVENTORY") or REPO / "inventories" / "lab" / "hosts.yml")
LAB_TERRAFORM = REPO / "terraform" / "environments" / "lab"
os.environ.setdefault("CONTAINERS_CONF", str(REPO / "lab" / "containers.conf"))


def wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout` seconds."""
    value = probes.poll(predicate, timeout, interval)
    if not value:
        pytest.fail(f"timed out after {timeout}s waiting for {what}")
    return value


@dataclass
class Lab:
    vars: dict
    hosts: dict  # short name -> host vars
    mail: list[str]
    containers: dict[str, str]  # short name -> podman container
    ssh: SshHosts = field(init=False)
    podman: PodmanHosts = field(init=False)
    sink: RecipientSide = field(init=False)
    node_tags: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        the_pair = pair_mod.load(INVENTORY)
        self.ssh = hosts_for(the_pair)
        self.podman = PodmanHosts(the_pair, self.containers)
        self.sink = recipient_side(the_pair, self.ssh)
        self.node_tags = the_pair.node_tags()  # {greeting tag: relay}

    def container(self, host: str) -> str:
        return self.containers[host]

    def exec(self, host: str, *command: str, check: bool = True, timeout: float = 60):
        """Run a command on a lab host over SSH as root (sudo); a failure (with check) raises MailhaError."""
        return self.ssh.exec(self.hosts[host]["ansible_host"], *command, check=check, timeout=timeout)

    @property
    def floating_ip(self) -> str:
        return self.vars["mailha_floating_ip"]

    @property
    def balancer(self) -> str:
        return self.vars["mailha_load_balancer_address"]

    def holders(self) -> list[str]:
        """Relays that hold the floating IP right now."""
        found = []
        for host in self.mail:
            out = self.exec(host, "ip", "-o", "-4", "addr", "show", check=False).stdout
            if f" {self.floating_ip}/" in out:
                found.append(host)
        return found

    def active(self) -> str:
        holders = wait_for(lambda: (h := self.holders()) and len(h) == 1 and h, 15, what="one holder")
        return holders[0]

    def sink_index(self) -> list[dict]:
        return self.sink.index()

    def sink_counts(self, ids) -> Counter:
        return self.sink.counts(set(ids))[0]

    def wait_delivered(self, ids, timeout: float) -> Counter:
        """Wait until every id is at the sink; return the counts (to check for duplicates)."""
        ids = list(ids)

        def all_there():
            counts = self.sink_counts(ids)
            return counts if len(counts) == len(set(ids)) else None

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = all_there()
            if counts:
                time.sleep(2)  # a late duplicate would arrive now
                return self.sink_counts(ids)
            time.sleep(1)
        counts = self.sink_counts(ids)
        missing = sorted(set(ids) - set(counts))
        pytest.fail(f"{len(missing)} of {len(set(ids))} acknowledged messages never reached the sink: {missing[:5]}")

    def raw_message(self, file: str) -> bytes:
        return self.sink.raw(file)

    def resolver(self) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.vars["mailha_nameserver"]]
        resolver.lifetime = 3
        return resolver

    def restart_postfix(self, host: str) -> None:
        self.exec(host, "systemctl", "restart", "postfix@-.service")


def containers() -> dict[str, str]:
    """The lab's containers by host name (the lab's Terraform output)."""
    result = subprocess.run(
        ["terraform", f"-chdir={LAB_TERRAFORM}", "output", "-json", "containers"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"the lab's Terraform state names no containers; run 'make provision': {result.stderr.strip()}")
    return json.loads(result.stdout)


def load_lab() -> Lab:
    data = inventory.load(INVENTORY)
    children = data["all"]["children"]
    hosts = {}
    for group in children.values():
        hosts.update(group.get("hosts", {}))
    lab = Lab(vars=data["all"]["vars"], hosts=hosts, mail=sorted(children["mail"]["hosts"]), containers=containers())
    for name in hosts:
        state = lab.exec(name, "systemctl", "is-system-running", check=False).stdout.strip()
        if state not in ("running", "degraded"):
            pytest.fail(f"lab host {name} is not up (systemd: {state or 'unreachable'}); run 'make provision'")
    return lab
