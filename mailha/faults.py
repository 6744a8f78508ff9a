"""The faults a drill injects on the active relay, one class each, found by
scenario name in a registry (FAULTS, fault_for).

A fault knows what to do to a host and how to undo it; it reaches the host
through an environment's hosts object (Hosts below): mailha.hosts.SshHosts
for every environment reached over SSH, the lab included, and
mailha.lab.PodmanHosts for an inventory whose connection is podman.

The drill (mailha.drill) decides when: it injects, waits for the pair to react,
restores, fails back and measures. manual-failover is a drill scenario but not
a host fault (it runs a planned switch), so it has no class here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, runtime_checkable

from mailha.errors import MailhaError

# The Postfix master on the relays (Debian's path): killing it is the crash.
MASTER_PROCESS = "^/usr/lib/postfix/sbin/master"
# vrrp-blocked: VRRP alone is dropped both ways on the active relay (an
# nftables table of the drill's own, ahead of the host firewall); everything
# else still flows. Both relays turn MASTER until the pair settles it.
VRRP_BLOCK_TABLE = "mailha_drill"
VRRP_BLOCK = (
    f"add table inet {VRRP_BLOCK_TABLE}; "
    f"add chain inet {VRRP_BLOCK_TABLE} input {{ type filter hook input priority -50; }}; "
    f"add rule inet {VRRP_BLOCK_TABLE} input meta l4proto vrrp drop; "
    f"add chain inet {VRRP_BLOCK_TABLE} output {{ type filter hook output priority -50; }}; "
    f"add rule inet {VRRP_BLOCK_TABLE} output meta l4proto vrrp drop"
)
# How long a restarted host may take until systemd says it has booted.
BOOT_SECONDS = 120
# A partition the drill cannot heal (it lost the host, or was killed) heals
# by itself after this long, from a timer on the host.
PARTITION_HEAL_SECONDS = 300
# The scenario that is a planned switch, not a host fault (mailha.drill runs it).
MANUAL_FAILOVER = "manual-failover"


@runtime_checkable
class Hosts(Protocol):
    """What a fault needs from an environment: the operations on one host.

    `target` is how the environment reaches a host (the inventory's
    ansible_host: a container's name in the lab, an address over SSH). Every
    operation raises MailhaError, one line saying what failed, when it cannot
    be done; none waits for more than its own command.
    """

    def exec(self, target: str, *command: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """Run `command` on the host as root; its stdout and stderr are text.
        With check, a non-zero exit is a MailhaError; without, the caller reads
        returncode (the drill also reads the relays' logs this way)."""
        ...

    def stop(self, target: str) -> None:
        """Stop the host at once, as a pulled plug would: its services get no
        time for a clean shutdown."""
        ...

    def start(self, target: str) -> None:
        """Start a stopped host; returns once it is starting, not booted (see booted)."""
        ...

    def cut(self, target: str, heal_after: float) -> None:
        """Cut the host off from the pair, the load balancer and everything
        else, as a failed switch port would, but keep the operator's way in;
        the host heals by itself after `heal_after` seconds where the
        environment can arrange it."""
        ...

    def heal(self, target: str) -> None:
        """Undo cut (nothing to do when it has healed already)."""
        ...

    def power_problem(self) -> str | None:
        """Why stop and start cannot work in this environment, or None."""
        ...

    def read(self, target: str, path: str) -> bytes:
        """The bytes of a file on the host (the sink's stored messages)."""
        ...

    def booted(self, target: str) -> bool:
        """The host has finished booting (systemd running or degraded); False
        while it is still starting."""
        ...


# The drill's wait: (predicate, timeout in seconds, what is awaited, for the
# error) -> the predicate's truthy value, or a MailhaError on timeout.
Wait = Callable[[Callable[[], Any], float, str], Any]


class Fault:
    """One scenario's fault on one host. Subclasses set the class attributes
    and implement inject, restore and left_to_do."""

    name: ClassVar[str]
    # The failed relay's VRRP transition log tells when it saw the fault.
    has_vrrp_log: ClassVar[bool] = True
    # The standby turns MASTER beside the active relay (both claim the
    # floating IP) until the pair settles on one holder by itself; otherwise
    # the standby takes the floating IP over.
    splits_the_pair: ClassVar[bool] = False

    def __init__(self, hosts: Hosts):
        self.hosts = hosts

    def problem(self) -> str | None:
        """Why this fault cannot be made in the hosts' environment (None: it
        can); the drill refuses before it touches anything."""
        return None

    def inject(self, target: str) -> None:
        """Make the fault; returns once it is in place."""
        raise NotImplementedError

    def restore(self, target: str, wait: Wait, node_name: str) -> None:
        """Undo the fault; a fault whose undoing takes time waits for it
        through the drill's `wait` (`node_name` names the host in its error)."""
        raise NotImplementedError

    def left_to_do(self, node_name: str) -> str:
        """What an operator does by hand when restore failed."""
        raise NotImplementedError


class MtaCrash(Fault):
    """Postfix's master is killed (SIGKILL); systemd does not see it die, so nothing restarts it."""

    name = "mta-crash"

    def inject(self, target: str) -> None:
        self.hosts.exec(target, "pkill", "-9", "-f", MASTER_PROCESS)

    def restore(self, target: str, wait: Wait, node_name: str) -> None:
        self.hosts.exec(target, "systemctl", "restart", "postfix@-.service")

    def left_to_do(self, node_name: str) -> str:
        return f"start Postfix on {node_name} (systemctl restart postfix@-.service)"


class HostDown(Fault):
    """The whole host stops at once."""

    name = "host-down"
    # A host that was down logged nothing when the fault hit; what its log
    # holds after the fault is its boot after the restore, not a detection.
    has_vrrp_log = False

    def problem(self) -> str | None:
        return self.hosts.power_problem()

    def inject(self, target: str) -> None:
        self.hosts.stop(target)

    def restore(self, target: str, wait: Wait, node_name: str) -> None:
        self.hosts.start(target)
        wait(lambda: self.hosts.booted(target), BOOT_SECONDS, f"{node_name} to boot")

    def left_to_do(self, node_name: str) -> str:
        return f"start the host {node_name}"


class NetworkPartition(Fault):
    """The host runs on, cut off from the pair, the load balancer and the
    recipients; only the operator's SSH still reaches it (Hosts.cut)."""

    name = "network-partition"

    def inject(self, target: str) -> None:
        self.hosts.cut(target, PARTITION_HEAL_SECONDS)

    def restore(self, target: str, wait: Wait, node_name: str) -> None:
        self.hosts.heal(target)

    def left_to_do(self, node_name: str) -> str:
        return (
            f"heal the partition of {node_name} (it heals by itself {PARTITION_HEAL_SECONDS}s after the fault; "
            "over ssh: nft delete table inet mailha_partition; nft delete table arp mailha_partition)"
        )


class KeepalivedCrash(Fault):
    """keepalived is killed (SIGKILL): it sends no last advert, the standby notices the silence."""

    name = "keepalived-crash"

    def inject(self, target: str) -> None:
        self.hosts.exec(target, "pkill", "-9", "-x", "keepalived")

    def restore(self, target: str, wait: Wait, node_name: str) -> None:
        self.hosts.exec(target, "systemctl", "restart", "keepalived")

    def left_to_do(self, node_name: str) -> str:
        return f"start keepalived on {node_name}"


class VrrpBlocked(Fault):
    """VRRP alone is dropped both ways (VRRP_BLOCK): a split brain the pair must settle."""

    name = "vrrp-blocked"
    splits_the_pair = True

    def inject(self, target: str) -> None:
        self.hosts.exec(target, "nft", VRRP_BLOCK)

    def restore(self, target: str, wait: Wait, node_name: str) -> None:
        self.hosts.exec(target, "nft", f"delete table inet {VRRP_BLOCK_TABLE}")

    def left_to_do(self, node_name: str) -> str:
        return f"nft delete table inet {VRRP_BLOCK_TABLE} on {node_name}"


FAULTS: dict[str, type[Fault]] = {
    fault.name: fault for fault in (MtaCrash, HostDown, NetworkPartition, KeepalivedCrash, VrrpBlocked)
}
# Every drill scenario, in this order: the CLI's choices and the docs list them so.
SCENARIOS = (*FAULTS, MANUAL_FAILOVER)


def check_scenario(scenario: str) -> None:
    """A drill scenario, or a MailhaError listing them."""
    if scenario not in SCENARIOS:
        raise MailhaError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")


def fault_for(scenario: str, hosts: Hosts) -> Fault:
    """The fault of `scenario`, acting on `hosts`."""
    check_scenario(scenario)
    if scenario not in FAULTS:
        raise MailhaError(f"{scenario} is a planned switch, not a host fault: the drill runs it")
    return FAULTS[scenario](hosts)
