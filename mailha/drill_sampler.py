"""What a drill watches while its fault runs, and the timeline it reads from it.

The Sampler polls who holds the floating IP and where the load balancer
sends, every 0.2 s; timeline_events puts those samples, the relays' VRRP
transition logs and the traffic's attempts together into the drill's events
(failure detected, floating IP moved, first 250 from the standby, load
balancer left the failed relay and switched).
"""

from __future__ import annotations

import threading
import time

from mailha import probes
from mailha.node import vrrp
from mailha.pair import Pair


class Sampler(threading.Thread):
    """Poll who holds the floating IP and what the load balancer sends to, every 0.2 s."""

    def __init__(self, pair: Pair, interval: float = 0.2):
        super().__init__(name="drill-sampler", daemon=True)
        self.pair = pair
        self.interval = interval
        self.stop_event = threading.Event()
        self.holders: list[tuple[float, str | None]] = []
        self.balancer: list[tuple[float, dict[str, str]]] = []
        port = pair.settings["mailha_agent_port"]
        self.urls = {n: f"http://{node.address}:{port}/status" for n, node in pair.nodes.items()}
        lb = pair.balancer.get("mailha_address")
        self.stats_url = f"http://{lb}:{pair.settings['mailha_haproxy_stats_port']}/;csv"

    def run(self) -> None:
        while not self.stop_event.is_set():
            now = time.time()
            held, active = [], {}
            for name, url in self.urls.items():
                code, document = probes.http_json(url, timeout=0.3)
                if code == 200 and isinstance(document, dict):
                    if document.get("holds_floating_ip"):
                        held.append(name)
                    active[name] = "UP" if document.get("active") else "DOWN"
                else:
                    active[name] = "DOWN"
            holder = held[0] if len(held) == 1 else ("split" if held else None)
            self.holders.append((now, holder))
            # A managed load balancer's statistics are the cloud's: what it
            # sends to is what its health check reads, the relays' /active.
            servers = active if self.pair.managed_balancer else probes.haproxy_servers(self.stats_url, timeout=0.3)
            if isinstance(servers, dict):
                self.balancer.append((now, servers))
            self.stop_event.wait(max(0.0, self.interval - (time.time() - now)))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)

    def first_balancer_leave(self, after: float, failed: str) -> float | None:
        """When the load balancer first showed the failed relay's server not
        UP (its check saw the fault): it sends no new session there since."""
        for at, servers in self.balancer:
            if at >= after and failed in servers and not str(servers[failed]).startswith("UP"):
                return at
        return None

    def first_balancer_switch(self, after: float, to: str) -> float | None:
        for at, servers in self.balancer:
            if at >= after and str(servers.get(to, "")).startswith("UP"):
                # The relays' own servers only: their backups are up all along.
                others = [n for n in self.pair.nodes if n != to and str(servers.get(n, "")).startswith("UP")]
                if not others:
                    return at
        return None


def vrrp_entries(log_tail: str) -> list[tuple[float, str]]:
    """(epoch seconds, state) of each transition in a relay's VRRP log
    (mailha.node.vrrp reads the notify script's line format)."""
    entries = []
    for transition in vrrp.parse_transitions(log_tail):
        at = transition.timestamp()
        if at is not None:
            entries.append((at, transition.state))
    return entries


def timeline_events(
    *,
    active: str,
    standby: str,
    fault_at: float,
    attempts,
    failed_log: list[tuple[float, str]],
    standby_log: list[tuple[float, str]],
    sampler: Sampler,
) -> list[tuple[str, float]]:
    """(event name, epoch seconds) of what happened after the fault, in the
    order the drill records them; an event that was not seen is left out."""
    found = []
    detected = [at for at, state in failed_log if at >= fault_at and state in ("FAULT", "BACKUP", "STOP")]
    moved = [at for at, state in standby_log if at >= fault_at and state == "MASTER"]
    candidates = detected[:1] + moved[:1]
    if candidates:
        found.append(("failure_detected", min(candidates)))
    if moved:
        found.append(("floating_ip_moved", moved[0]))
    after = sorted(a.finished for a in attempts if a.accepted and a.started >= fault_at and a.node == standby)
    if after:
        found.append(("first_accept_from_standby", after[0]))
    left = sampler.first_balancer_leave(fault_at, active)
    if left:
        found.append(("balancer_left_failed", left))
    switched = sampler.first_balancer_switch(fault_at, standby)
    if switched:
        found.append(("balancer_switched", switched))
    return found
