"""`mailha status`: the topology at a glance, from network probes only.

For each node: designated role, VRRP state, whether it holds the floating IP,
MTA health (a real SMTP greeting from here), queue counts and the oldest
message's age (from the node's health agent); the load balancer's view of
each backend; what the authoritative DNS answers for the sending host.
Verdict: healthy (exit 0), degraded (1) or critical (2).
"""

from __future__ import annotations

import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from mailha import fencing, names, probes
from mailha.errors import MailhaError
from mailha.pair import Pair

HEALTHY, DEGRADED, CRITICAL = "healthy", "degraded", "critical"
# HAProxy's status of a server whose health check a switch turned off.
LB_PINNED = "no check"
# The backup server of each relay (roles/haproxy, haproxy_standby_fallback).
LB_STANDBY_SUFFIX = "-standby"
EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, CRITICAL: 2}


@dataclass
class NodeView:
    name: str
    address: str
    role: str  # primary / standby (designated)
    vrrp_state: str
    holds_floating_ip: bool | None
    smtp_ok: bool
    smtp_ms: float
    smtp_detail: str
    agent_ok: bool
    healthy: bool | None
    drained: bool | None
    queue: dict[str, int] | None
    queue_oldest_age_seconds: float | None
    balancer_state: str
    # Why agent_ok is False: "unreachable", or what is wrong with its answer.
    agent_problem: str = ""
    # Fenced by `mailha failover --isolate`: {since, reason, operator}, else None.
    isolated: dict | None = None
    # direct / hand-over / hold (ROUTES), None when the agent does not say.
    route: str | None = None
    # Why the agent judges the MTA unhealthy (mailha-health's reason).
    health_reason: str = ""
    # Why the agent made its relay stand down (a split brain it lost), else None.
    demoted_reason: str | None = None
    # The agent's health level, the median of its recent SMTP greeting
    # times and why it is degraded, when it reports them (DISPLAY_FIELDS):
    # shown, and "degraded" is a DEGRADED finding.
    health_level: str | None = None
    greeting_latency_median_seconds: float | None = None
    degraded_reasons: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        """Healthy in the one sense every command uses (failback, drills): the
        agent answers and judges the MTA healthy, and the MTA greets."""
        return self.agent_ok and bool(self.healthy) and self.smtp_ok

    @property
    def not_ready_reason(self) -> str:
        if not self.agent_ok:
            return f"its health agent is {self.agent_problem or 'unreachable'}"
        if not self.smtp_ok:
            return f"its MTA does not greet: {self.smtp_detail}"
        if not self.healthy:
            return f"its health agent reports it unhealthy: {self.health_reason or 'no reason given'}"
        return ""


@dataclass
class Topology:
    environment: str
    floating_ip: str
    sending_host: str
    nodes: list[NodeView]
    holders: list[str]
    balancer: dict[str, Any]
    dns: dict[str, Any]
    problems: list[dict[str, str]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        severities = {p["severity"] for p in self.problems}
        return CRITICAL if CRITICAL in severities else DEGRADED if DEGRADED in severities else HEALTHY

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def node(self, name: str) -> NodeView:
        return next(n for n in self.nodes if n.name == name)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict
        return data


def gather(pair: Pair) -> Topology:
    """Probe every part concurrently; each probe is bounded by the probe timeout."""
    timeout = float(pair.settings["mailha_probe_timeout"])
    port = pair.settings["mailha_agent_port"]
    balancer_address = pair.balancer.get("mailha_address")
    stats_url = f"http://{balancer_address}:{pair.settings['mailha_haproxy_stats_port']}/;csv"
    with ThreadPoolExecutor(max_workers=8) as pool:
        smtp = {n: pool.submit(probes.smtp_greeting, node.address, 25, timeout) for n, node in pair.nodes.items()}
        agent = {
            n: pool.submit(probes.get_json, f"http://{node.address}:{port}/status", timeout)
            for n, node in pair.nodes.items()
        }
        servers = None if pair.managed_balancer else pool.submit(probes.haproxy_servers, stats_url, timeout)
        answer = pool.submit(probes.dns_a, pair.sending_host, pair.nameserver, timeout)
    primary = pair.designated_primary()
    documents = {name: agent_status(agent[name].result()) for name in pair.nodes}
    lb_servers = servers.result() if servers is not None else managed_balancer_view(documents)
    try:
        isolated, isolation_error = fencing.marks(pair), None
    except MailhaError as exc:
        isolated, isolation_error = {}, str(exc)
    views = []
    for name, node in pair.nodes.items():
        probe = smtp[name].result()
        doc, agent_problem = documents[name]
        agent_ok = doc is not None
        views.append(
            NodeView(
                name=name,
                address=node.address,
                role="primary" if name == primary else "standby",
                vrrp_state=doc["vrrp_state"] if agent_ok else "UNKNOWN",
                holds_floating_ip=doc["holds_floating_ip"] if agent_ok else None,
                smtp_ok=probe.ok,
                smtp_ms=round(probe.seconds * 1000, 1),
                smtp_detail=probe.detail,
                agent_ok=agent_ok,
                healthy=doc["healthy"] if agent_ok else None,
                drained=doc["drained"] if agent_ok else None,
                queue=doc["queue"] if agent_ok else None,
                queue_oldest_age_seconds=doc["queue_oldest_age_seconds"] if agent_ok else None,
                balancer_state=lb_servers.get(name, "ABSENT") if isinstance(lb_servers, dict) else "UNKNOWN",
                agent_problem=agent_problem,
                isolated=isolated.get(name),
                route=doc.get("route") if agent_ok else None,
                health_reason=str((doc.get("health") or {}).get("reason", ""))[:200] if agent_ok else "",
                demoted_reason=doc.get("demoted_reason")[:300] if agent_ok and doc.get("demoted_reason") else None,
                health_level=doc["health_level"] if agent_ok else None,
                greeting_latency_median_seconds=doc["greeting_latency_median_seconds"] if agent_ok else None,
                degraded_reasons=doc["degraded_reasons"] if agent_ok else (),
            )
        )
    dns_answer = answer.result()
    topology = Topology(
        environment=pair.environment,
        floating_ip=pair.floating_ip,
        sending_host=pair.sending_host,
        nodes=views,
        holders=[v.name for v in views if v.holds_floating_ip],
        balancer={
            "address": balancer_address,
            "kind": pair.balancer.get("kind", "haproxy"),
            "servers": lb_servers if isinstance(lb_servers, dict) else {},
            "error": None if isinstance(lb_servers, dict) else lb_servers,
        },
        dns={
            "name": pair.sending_host,
            "answer": dns_answer if isinstance(dns_answer, list) else [],
            "error": None if isinstance(dns_answer, list) else dns_answer,
        },
    )
    topology.problems = assess(topology, int(pair.settings["mailha_queue_deferred_warning"]))
    if isolation_error:
        topology.problems.insert(0, {"severity": CRITICAL, "problem": isolation_error})
    return topology


VRRP_STATE = re.compile(r"[A-Z][A-Z_]{0,15}")
# How a relay routes its mail (mailha-postfix-role): it delivers, it hands
# over to the floating IP, or it holds its mail during a switch.
ROUTES = ("direct", "hand-over", "hold")
QUEUE_NAME = re.compile(r"[a-z][a-z_]{0,15}")
MAX_QUEUES = 16


def _count(value: object) -> bool:
    return type(value) is int and value >= 0


def _age(value: object) -> bool:
    return value is None or (type(value) in (int, float) and math.isfinite(value) and value >= 0)


# The fields of the agent's /status (roles/mail_health, status_document) that
# status reads, each with its check and what it must be.
AGENT_FIELDS = {
    "vrrp_state": (lambda v: isinstance(v, str) and VRRP_STATE.fullmatch(v), "a VRRP state such as MASTER"),
    "holds_floating_ip": (lambda v: isinstance(v, bool), "true or false"),
    "healthy": (lambda v: isinstance(v, bool), "true or false"),
    "drained": (lambda v: isinstance(v, bool), "true or false"),
    "queue": (
        lambda v: (
            isinstance(v, dict)
            and len(v) <= MAX_QUEUES
            and all(isinstance(k, str) and QUEUE_NAME.fullmatch(k) and _count(c) for k, c in v.items())
        ),
        "an object of queue names and message counts",
    ),
    "queue_oldest_age_seconds": (_age, "null or a number of seconds"),
    "route": (lambda v: v is None or v in ROUTES, f"one of {', '.join(ROUTES)}"),
    "health": (lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("reason", ""), str)), "an object"),
    "demoted_reason": (lambda v: v is None or isinstance(v, str), "null or a text"),
    "active": (lambda v: v is None or isinstance(v, bool), "true or false"),
}
# Fields an agent may leave out (an older agent, or no route file yet).
OPTIONAL_AGENT_FIELDS = {"queue_oldest_age_seconds", "route", "health", "demoted_reason", "active"}
HEALTH_LEVEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,23}")


def _health_level(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and HEALTH_LEVEL.fullmatch(value) else None


def _seconds(value: object) -> float | None:
    return float(value) if type(value) in (int, float) and math.isfinite(value) and value >= 0 else None


def _reasons(value: object) -> tuple[str, ...]:
    """At most 5 one-line reasons of at most 200 characters each."""
    if not isinstance(value, list):
        return ()
    return tuple(" ".join(v.split())[:200] for v in value[:5] if isinstance(v, str))


# Fields only shown (status --watch): newer agents report them, older ones
# do not. A value that is absent or not of the expected shape shows as "-"
# and, unlike AGENT_FIELDS, never makes the whole answer unreadable.
DISPLAY_FIELDS = {
    "health_level": _health_level,
    "greeting_latency_median_seconds": _seconds,
    "degraded_reasons": _reasons,
}


def queues_empty(pair: Pair, timeout: float = 1.0) -> bool:
    """Every relay's agent answers, and counts no message in any of its queues.

    It asks for a reading taken now (fresh=1): the counts the agents share
    between their answers may be a second old, and a message handed over
    within that second would be counted as delivered before it was."""
    port = pair.settings["mailha_agent_port"]
    for node in pair.nodes.values():
        document, _ = agent_status(probes.get_json(f"http://{node.address}:{port}/status?fresh=1", timeout))
        if document is None or sum(document["queue"].values()) > 0:
            return False
    return True


def managed_balancer_view(documents: dict[str, tuple[dict[str, Any] | None, str]]) -> dict[str, str]:
    """What a managed load balancer (kind hcloud) sends to, as its own health
    check decides: UP for a relay whose agent answers active (200 on /active),
    DOWN for one that does not, UNKNOWN when its agent cannot be read. Its
    check runs every few seconds, so the balancer follows this view within
    that interval; the cloud's API is not asked (it needs the project's token)."""
    view = {}
    for name, (document, _) in documents.items():
        if document is None or document.get("active") is None:
            view[name] = "UNKNOWN"
        else:
            view[name] = "UP" if document["active"] else "DOWN"
    return view


def agent_status(answer: probes.HttpJson) -> tuple[dict[str, Any] | None, str]:
    """The checked fields of a health agent's /status, or (None, why the answer cannot be used).

    The answer comes over the network: anything but the expected shape makes
    the agent "unreadable", a finding like an unreachable agent, never an error."""
    if not answer.reachable:
        return None, "unreachable"
    if answer.error:
        return None, f"answer unreadable: {answer.error}"[:200]
    if answer.status != 200:
        return None, f"answer unreadable: HTTP status {answer.status}"
    document = answer.document
    if not isinstance(document, dict):
        return None, f"answer unreadable: a JSON {names.json_kind(document)}, not an object"
    for key, (valid, wanted) in AGENT_FIELDS.items():
        if key not in document and key not in OPTIONAL_AGENT_FIELDS:
            return None, f"answer unreadable: {key} is missing"
        if not valid(document.get(key)):
            return None, f"answer unreadable: {key} is not {wanted}"
    checked = {key: document.get(key) for key in AGENT_FIELDS}
    return checked | {key: clean(document.get(key)) for key, clean in DISPLAY_FIELDS.items()}, ""


INTERRUPTED = "a switch did not finish; 'mailha failover' completes it, 'mailha failback' undoes it"


def switch_leftovers(n: NodeView) -> list[tuple[str, str]]:
    """(severity, finding) for each thing an interrupted switch left on this relay:
    its mail held, the load balancer pinned to it (health check off) or draining it.
    A fenced relay is left that way on purpose."""
    if n.isolated is not None:
        return []
    found = []
    if n.route == "hold":
        found.append((CRITICAL, f"{n.name} holds its mail (nothing it queues is sent)"))
    if n.balancer_state == LB_PINNED:
        found.append((DEGRADED, f"the load balancer is pinned to {n.name}, its health check off"))
    elif n.balancer_state.startswith("DRAIN"):
        found.append((DEGRADED, f"{n.name} is drained at the load balancer"))
    return found


def assess(t: Topology, deferred_warning: int) -> list[dict[str, str]]:
    """The problems an operator must know about, most severe first."""
    problems: list[dict[str, str]] = []

    def add(severity: str, text: str) -> None:
        problems.append({"severity": severity, "problem": text})

    for n in t.nodes:
        if n.isolated is not None:
            add(
                CRITICAL,
                f"{n.name} is ISOLATED as possibly compromised since {n.isolated.get('since', '?')} "
                f"({n.isolated.get('reason') or 'no reason given'}): rebuild it, then 'mailha unisolate {n.name}'",
            )
    fenced = {n.name for n in t.nodes if n.isolated is not None}
    unknown = [n.name for n in t.nodes if not n.agent_ok and n.name not in fenced]
    if len(t.holders) > 1:
        add(CRITICAL, f"split brain: the floating IP is on {' and '.join(t.holders)}")
    elif not t.holders and not unknown:
        add(CRITICAL, "no node holds the floating IP: sending is down")
    for n in t.nodes:
        if n.name in fenced:
            continue  # down and unreachable on purpose
        if not n.agent_ok:
            severity = CRITICAL if len(unknown) == len(t.nodes) else DEGRADED
            problem = n.agent_problem or "unreachable"
            add(severity, f"{n.name}: health agent {problem} ({n.address}); its VRRP state and queue are unknown")
        if n.name in t.holders and not n.smtp_ok:
            add(CRITICAL, f"{n.name} holds the floating IP but its MTA does not greet: {n.smtp_detail}")
        if n.name not in t.holders and n.demoted_reason:
            # It takes over as soon as the peer stops holding the IP or fails.
            add(DEGRADED, f"{n.name} stands down ({n.demoted_reason}): VRRP between the relays is cut")
        elif n.name not in t.holders and n.vrrp_state == "FAULT":
            add(CRITICAL, f"{n.name} is in FAULT: no standby can take over")
        elif n.name not in t.holders and not n.smtp_ok:
            add(DEGRADED, f"{n.name} (standby) MTA does not greet: {n.smtp_detail}")
        if n.health_level == "degraded":
            # Slow or backed up, still serving (the agent's header, "Degraded").
            add(DEGRADED, f"{n.name} is degraded: {'; '.join(n.degraded_reasons) or 'see its agent'}")
        if n.drained:
            add(DEGRADED, f"{n.name} is drained at its health agent")
        for severity, finding in switch_leftovers(n):
            add(severity, f"{finding}: {INTERRUPTED}")
        if n.queue and n.queue.get("deferred", 0) > deferred_warning:
            add(DEGRADED, f"{n.name} has {n.queue['deferred']} deferred messages")
        if n.name not in t.holders and n.queue and sum(n.queue.values()) > 0 and n.agent_ok:
            add(DEGRADED, f"{n.name} does not hold the floating IP but has {sum(n.queue.values())} queued messages")
    if len(t.holders) == 1:
        holder = t.holders[0]
        primary = next(n.name for n in t.nodes if n.role == "primary")
        if holder != primary:
            add(DEGRADED, f"{holder} is active but {primary} is the primary: failed over; 'mailha failback' returns")
        if t.balancer["error"] is None:
            # The relays' own servers; "<relay>-standby" backups (used only
            # while no relay is up) do not count as sending.
            states = {n.name: t.balancer["servers"].get(n.name, "ABSENT") for n in t.nodes}
            if not str(states.get(holder, "")).startswith(("UP", LB_PINNED)):
                add(DEGRADED, f"the load balancer does not send to the active node {holder} ({states.get(holder)})")
            others = [n for n, s in states.items() if n != holder and str(s).startswith(("UP", LB_PINNED))]
            if others:
                add(DEGRADED, f"the load balancer also sends to {', '.join(others)}, which is not active")
    # A managed balancer has no disabled state: the isolated relay must not
    # pass its check (fenced, its agent does not answer).
    out = ("MAINT", "ABSENT") if t.balancer.get("kind", "haproxy") == "haproxy" else ("DOWN", "UNKNOWN", "ABSENT")
    if t.balancer["error"] is None:
        for name in sorted(fenced):
            for server in (name, f"{name}{LB_STANDBY_SUFFIX}"):
                state = str(t.balancer["servers"].get(server, "ABSENT"))
                if not state.startswith(out):
                    add(CRITICAL, f"the load balancer has not disabled the isolated {server} ({state})")
    if t.balancer["error"] is not None:
        add(DEGRADED, f"load balancer statistics unreadable: {t.balancer['error']}")
    if t.dns["error"] is not None:
        add(DEGRADED, f"DNS: {t.sending_host} does not resolve at the authoritative server: {t.dns['error']}")
    elif t.dns["answer"] != [t.floating_ip]:
        add(DEGRADED, f"DNS: {t.sending_host} answers {t.dns['answer']}, not the floating IP {t.floating_ip}")
    order = {CRITICAL: 0, DEGRADED: 1}
    return sorted(problems, key=lambda p: order[p["severity"]])


def _queue_text(n: NodeView) -> str:
    if n.queue is None:
        return "?"
    return f"{n.queue.get('active', 0)}/{n.queue.get('deferred', 0)}/{n.queue.get('hold', 0)}"


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def _latency_text(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def render_table(t: Topology) -> str:
    header = [
        "NODE",
        "ROLE",
        "VRRP",
        "FLOATING-IP",
        "MTA",
        "ROUTE",
        "QUEUE a/d/h",
        "OLDEST",
        "LB",
        "HEALTH",
        "GREETING p50",
    ]
    rows = [header]
    for n in t.nodes:
        holds = "?" if n.holds_floating_ip is None else ("yes" if n.holds_floating_ip else "no")
        mta = f"ok {n.smtp_ms:.0f}ms" if n.smtp_ok else "DOWN"
        rows.append(
            [
                n.name,
                n.role,
                "ISOLATED" if n.isolated is not None else n.vrrp_state,
                holds,
                mta,
                n.route or "?",
                _queue_text(n),
                _age_text(n.queue_oldest_age_seconds),
                n.balancer_state,
                n.health_level or "-",
                _latency_text(n.greeting_latency_median_seconds),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [f"mailha {t.environment}: floating IP {t.floating_ip} ({t.sending_host})"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    answer = ", ".join(t.dns["answer"]) if t.dns["error"] is None else f"error: {t.dns['error']}"
    lines.append(f"DNS {t.dns['name']} -> {answer}")
    if t.balancer.get("kind", "haproxy") != "haproxy":
        managed = f"LB {t.balancer['address']} ({t.balancer['kind']}, managed)"
        lines.append(f"{managed}: sends to the relay answering /active (column LB)")
    for p in t.problems:
        lines.append(f"{p['severity'].upper()}: {p['problem']}")
    lines.append(f"verdict: {t.verdict}")
    return "\n".join(lines)


def render_json(t: Topology) -> str:
    return json.dumps(t.to_dict(), indent=2, sort_keys=True)
