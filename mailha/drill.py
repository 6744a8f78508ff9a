"""`mailha drill`: rehearse a failure on a live pair and measure it.

1. Steady state first: a healthy pair, one holder of the floating IP, test mail flows.
2. Bounded campaign traffic through the load balancer and the floating IP,
   every attempt recorded with its time, reply and the relay that answered.
3. The fault, and a timeline: injected, detected (keepalived's transition log),
   floating IP moved, first 250 after the fault, load balancer switched.
4. Restore the failed relay, hand its queue over, fail back, wait for empty queues.
5. Reconcile by Message-ID at the recipient side: lost, duplicated, DKIM of the standby's mail.
6. Steady state again. Report (report.json, report.html), audit record, SLO verdict.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim

from mailha import drill_report, events, probes
from mailha import status as status_mod
from mailha import switch as switch_mod
from mailha.audit import AuditLog, Record, Step, now_iso
from mailha.errors import MailhaError
from mailha.lab import MASTER_PROCESS, PodmanHosts, RecipientSide, recipient_side
from mailha.node import vrrp
from mailha.pair import Pair
from mailha.traffic import Target, TrafficGenerator, build_message, message_id, new_run_id, submit

SCENARIOS = ("mta-crash", "host-down", "network-partition", "keepalived-crash", "vrrp-blocked", "manual-failover")
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
DEFAULT_SLOS = {"max_outage_seconds": 2.0, "max_lost": 0, "max_duplicated": 0}
# Upper bound on the traffic of a manual-failover drill beyond --duration.
SWITCH_BUDGET = 300.0
# A drill's switches do not run the preflight (README, "Drills"): its restore
# must bring the pair back whatever a check says, it checks its own steady
# state before the fault, and the preflight's playbook and lookups would eat
# into the switch's measured budget. Each switch's audit record says so.
DRILL_SKIPS_PREFLIGHT = "drill"


@dataclass
class DrillSettings:
    scenario: str
    rate: float = 20.0
    duration: float = 20.0
    report_dir: Path | None = None
    slos: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SLOS))
    settle_timeout: float = 180.0


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
            held = []
            for name, url in self.urls.items():
                code, document = probes.http_json(url, timeout=0.3)
                if code == 200 and isinstance(document, dict) and document.get("holds_floating_ip"):
                    held.append(name)
            holder = held[0] if len(held) == 1 else ("split" if held else None)
            self.holders.append((now, holder))
            servers = probes.haproxy_servers(self.stats_url, timeout=0.3)
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


class Drill:
    def __init__(self, pair: Pair, settings: DrillSettings, echo: Callable[[str], None]):
        if settings.scenario not in SCENARIOS:
            raise MailhaError(f"unknown scenario {settings.scenario!r}; choose one of {', '.join(SCENARIOS)}")
        self.pair = pair
        self.settings = settings
        self.echo = echo
        self.hosts = PodmanHosts(pair)
        self.sink: RecipientSide = recipient_side(pair, self.hosts)
        self.events: list[dict[str, Any]] = []
        self.steps: list[Step] = []

    # -- helpers ---------------------------------------------------------
    @staticmethod
    def quiet(_text: str) -> None:
        """The switch's own progress and tables: the drill reports its steps instead."""

    def event(self, name: str, at: float | None = None) -> None:
        self.events.append({"name": name, "at": at if at is not None else time.time()})

    def step(self, name: str, action: Callable[[], Any]) -> Any:
        began = time.monotonic()
        self.echo(f"  {name} ...")
        try:
            value = action()
        except MailhaError as exc:
            self.steps.append(Step(name, "failed", round(time.monotonic() - began, 2), exc.message))
            raise
        self.steps.append(Step(name, "ok", round(time.monotonic() - began, 2)))
        return value

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
        value = probes.poll(predicate, timeout, interval)
        if not value:
            raise MailhaError(f"drill: timed out after {timeout:.0f}s waiting for {what}")
        return value

    def send_and_confirm(self, subject: str) -> None:
        msg_id = message_id(new_run_id(), 0, self.pair.settings["mailha_test_sender"].rsplit("@", 1)[1])
        message = build_message(
            msg_id, self.pair.settings["mailha_test_sender"], self.pair.settings["mailha_test_recipient"], subject
        )
        reply = submit(Target(self.pair.balancer["mailha_address"], 25), message)
        if reply.code != 250:
            raise MailhaError(f"test message refused by the load balancer: {reply.code} {reply.text}")
        self.wait(lambda: self.sink.counts({msg_id})[0][msg_id] >= 1, 90, "the test message at the recipient side")

    def steady_state(self, when: str) -> status_mod.Topology:
        topology = status_mod.gather(self.pair)
        if topology.verdict != status_mod.HEALTHY or len(topology.holders) != 1:
            problems = "; ".join(p["problem"] for p in topology.problems) or "no single holder"
            raise MailhaError(f"steady state {when} the drill is not met: {problems}")
        self.send_and_confirm(f"mailha drill steady state {when}")
        return topology

    def vrrp_log(self, target: str) -> list[tuple[float, str]]:
        """(epoch seconds, state) of the last 200 transitions the relay logged
        (mailha.node.vrrp reads the notify script's line format)."""
        out = self.hosts.exec(target, "tail", "-n", "200", vrrp.LOG_FILE, check=False).stdout
        entries = []
        for transition in vrrp.parse_transitions(out):
            at = transition.timestamp()
            if at is not None:
                entries.append((at, transition.state))
        return entries

    # -- faults ----------------------------------------------------------
    def inject(self, active: str) -> None:
        target = self.hosts.targets[active]
        scenario = self.settings.scenario
        self.event("fault_injected")
        if scenario == "mta-crash":
            self.hosts.exec(target, "pkill", "-9", "-f", MASTER_PROCESS)
        elif scenario == "host-down":
            self.hosts.podman("stop", "-t", "0", target)
        elif scenario == "network-partition":
            self.hosts.link(target, up=False)
        elif scenario == "keepalived-crash":
            self.hosts.exec(target, "pkill", "-9", "-x", "keepalived")
        elif scenario == "vrrp-blocked":
            self.hosts.exec(target, "nft", VRRP_BLOCK)
        elif scenario == "manual-failover":
            switch_mod.run_switch(
                self.pair,
                "failover",
                "drill manual-failover",
                yes=True,
                dry_run=False,
                echo=self.quiet,
                skip_preflight=DRILL_SKIPS_PREFLIGHT,
            )
        # The fault's command has returned: the fault is in place. Between
        # the two events it was being made (a host takes a moment to stop).
        self.event("fault_in_place")

    def restore(self, failed: str) -> None:
        target = self.hosts.targets[failed]
        scenario = self.settings.scenario
        if scenario == "mta-crash":
            self.hosts.exec(target, "systemctl", "restart", "postfix@-.service")
        elif scenario == "host-down":
            self.hosts.podman("start", target)
            self.wait(lambda: self.hosts.booted(target), 120, f"{failed} to boot")
        elif scenario == "network-partition":
            self.hosts.link(target, up=True)
        elif scenario == "keepalived-crash":
            self.hosts.exec(target, "systemctl", "restart", "keepalived")
        elif scenario == "vrrp-blocked":
            self.hosts.exec(target, "nft", f"delete table inet {VRRP_BLOCK_TABLE}")
        self.event("restored")

    def claimed_after(self, name: str, since: float) -> bool:
        """`name` logged a MASTER transition after `since`."""
        return any(at >= since and state == "MASTER" for at, state in self.vrrp_log(self.hosts.targets[name]))

    def gave_up_after(self, name: str, since: float) -> bool:
        """`name` claimed the floating IP after `since` and left MASTER again."""
        states = [state for at, state in self.vrrp_log(self.hosts.targets[name]) if at >= since]
        return "MASTER" in states and states[-1] != "MASTER"

    def healthy(self, name: str) -> bool:
        """The failback's own test (NodeView.ready), so a drill never waits for less."""
        return status_mod.gather(self.pair).node(name).ready

    def wait_healthy(self, name: str, timeout: float = 120) -> None:
        def check() -> None:
            if not probes.poll(lambda: self.healthy(name), timeout, 0.5):
                reason = status_mod.gather(self.pair).node(name).not_ready_reason
                raise MailhaError(f"drill: {name} is not healthy after {timeout:.0f}s: {reason}")

        self.step(f"wait until {name} is healthy", check)

    def restore_or_say(self, failed: str) -> None:
        """Restore after a failure: never raises, says what is left to do if it cannot."""
        try:
            self.step(f"restore {failed}", lambda: self.restore(failed))
        except MailhaError as exc:
            left = {
                "mta-crash": f"start Postfix on {failed} (systemctl restart postfix@-.service)",
                "host-down": f"start the host {failed}",
                "network-partition": f"bring the network link of {failed} up",
                "keepalived-crash": f"start keepalived on {failed}",
                "vrrp-blocked": f"nft delete table inet {VRRP_BLOCK_TABLE} on {failed}",
            }.get(self.settings.scenario, f"restore {failed}")
            self.echo(f"  could not restore {failed} ({exc.message}); left to do: {left}")

    def fail_back(self) -> None:
        topology = status_mod.gather(self.pair)
        primary = next(n.name for n in self.pair.nodes.values() if n.designated_state == "MASTER")
        if topology.holders == [primary]:
            self.pair.set_designated_primary(primary)
            return
        hold_down = float(self.pair.settings["mailha_failback_hold_down_seconds"])
        age = switch_mod.last_switch_age(AuditLog(self.pair.state_dir))
        if age is not None and age < hold_down:
            self.echo(f"  waiting {hold_down - age:.0f}s for the failback hold-down")
            time.sleep(hold_down - age + 0.5)
        switch_mod.run_switch(
            self.pair,
            "failback",
            "drill restore",
            yes=True,
            dry_run=False,
            echo=self.quiet,
            skip_preflight=DRILL_SKIPS_PREFLIGHT,
        )

    # -- the drill -------------------------------------------------------
    def run(self) -> dict[str, Any]:
        settings = self.settings
        started = time.time()
        self.echo(f"drill {settings.scenario}: rate {settings.rate}/s for {settings.duration:.0f}s")
        before = self.step("check the steady state", lambda: self.steady_state("before"))
        active = before.holders[0]
        standby = self.pair.peer(active).name
        balancer, floating = self.pair.balancer["mailha_address"], self.pair.floating_ip
        # A planned switch takes tens of seconds: its traffic runs until the
        # switch is over and a lead-out after it (bounded by SWITCH_BUDGET).
        planned = settings.scenario == "manual-failover"
        seconds = settings.duration + (SWITCH_BUDGET if planned else 0)
        traffic = TrafficGenerator(
            targets=[Target(balancer, 25), Target(floating, 25)],
            rate=settings.rate,
            max_messages=int(settings.rate * seconds) + 1,
            max_seconds=seconds,
            sender=self.pair.settings["mailha_test_sender"],
            recipient="subscriber@" + self.pair.settings["mailha_test_recipient"].rsplit("@", 1)[1],
            node_tags=self.pair.node_tags(),
        )
        sampler = Sampler(self.pair)
        sampler.start()
        traffic.start()
        fault_at = 0.0
        try:
            time.sleep(min(3.0, settings.duration / 3))
            self.step(f"inject {settings.scenario} on {active}", lambda: self.inject(active))
            fault_at = next(e["at"] for e in reversed(self.events) if e["name"] == "fault_injected")
            if settings.scenario == "vrrp-blocked":
                # The standby hears no advert and turns MASTER beside the
                # active relay; the pair must settle on one holder by itself.
                self.step(
                    f"wait until {standby} claims the floating IP beside {active}",
                    lambda: self.wait(lambda: self.claimed_after(standby, fault_at), 30, "the second claim", 0.2),
                )
                self.step(
                    "wait until one relay holds the floating IP again",
                    lambda: self.wait(
                        lambda: (
                            (self.gave_up_after(standby, fault_at) or self.gave_up_after(active, fault_at))
                            and sampler.holders
                            and sampler.holders[-1][1] not in (None, "split")
                        ),
                        30,
                        "one holder",
                        0.2,
                    ),
                )
            else:
                self.step(
                    f"wait until {standby} holds the floating IP",
                    lambda: self.wait(
                        lambda: sampler.holders and sampler.holders[-1][1] == standby, 30, "the move", 0.1
                    ),
                )
            if planned:
                time.sleep(min(5.0, settings.duration / 3))
                attempts = traffic.stop()
            else:
                attempts = traffic.wait()
        finally:
            traffic.stop()
            # Whatever failed after the fault, the relay is restored (or the
            # error says what is left to do).
            if fault_at and not planned and "restored" not in {e["name"] for e in self.events}:
                self.restore_or_say(active)
        self.wait_healthy(active)
        if not planned and status_mod.gather(self.pair).holders != [active]:
            self.step(
                f"hand the queue of {active} over", lambda: switch_mod.run_handover(self.pair, active, echo=self.quiet)
            )
            # The hand-over restarts a crashed MTA: healthy again before the failback checks it.
            self.wait_healthy(active)
        self.step("fail back", self.fail_back)
        self.step(
            "wait for empty queues",
            lambda: self.wait(lambda: status_mod.queues_empty(self.pair), settings.settle_timeout, "queues"),
        )
        sampler.stop()
        self.timeline(active, standby, fault_at, attempts, sampler)

        wanted = {a.message_id for a in attempts}
        counts, entries = self.step("count at the recipient side", lambda: self.sink.counts(wanted))
        dkim_results = self.check_dkim(attempts, entries, standby)
        cut = self.cut_in_flight(started, counts)
        # A relay demoted by a split brain, or one just failed back, settles
        # within seconds; the steady state is judged once it had the chance.
        self.step(
            "wait for a healthy pair",
            lambda: probes.poll(lambda: status_mod.gather(self.pair).verdict == status_mod.HEALTHY, 60, 1.0) or True,
        )
        self.step("check the steady state again", lambda: self.steady_state("after"))
        report = drill_report.build_report(
            scenario=settings.scenario,
            started=started,
            fault_at=fault_at,
            attempts=attempts,
            delivered=dict(counts),
            dkim=dkim_results,
            holder_samples=sampler.holders,
            events=sorted(self.events, key=lambda e: e["at"]),
            slos=settings.slos,
            cut_in_flight=cut,
            config={
                "rate": settings.rate,
                "duration": settings.duration,
                "active_before": active,
                "standby_before": standby,
                "environment": self.pair.environment,
                "steps": [vars(s) for s in self.steps],
            },
        )
        return report

    def timeline(self, active: str, standby: str, fault_at: float, attempts, sampler: Sampler) -> None:
        failed_log = [] if self.settings.scenario == "host-down" else self.vrrp_log(self.hosts.targets[active])
        standby_log = self.vrrp_log(self.hosts.targets[standby])
        detected = [at for at, state in failed_log if at >= fault_at and state in ("FAULT", "BACKUP", "STOP")]
        moved = [at for at, state in standby_log if at >= fault_at and state == "MASTER"]
        candidates = detected[:1] + moved[:1]
        if candidates:
            self.event("failure_detected", min(candidates))
        if moved:
            self.event("floating_ip_moved", moved[0])
        after = sorted(a.finished for a in attempts if a.accepted and a.started >= fault_at and a.node == standby)
        if after:
            self.event("first_accept_from_standby", after[0])
        left = sampler.first_balancer_leave(fault_at, active)
        if left:
            self.event("balancer_left_failed", left)
        switched = sampler.first_balancer_switch(fault_at, standby)
        if switched:
            self.event("balancer_switched", switched)

    def cut_in_flight(self, since: float, delivered: dict[str, int]) -> set[str]:
        """Duplicates whose first copy's 250 never reached a relay (drill_report.cut_in_flight)."""
        logs = [
            self.hosts.exec(
                target, "journalctl", "-q", "-o", "cat", f"--since=@{int(since)}", "SYSLOG_FACILITY=2", check=False
            ).stdout
            for target in self.hosts.targets.values()
        ]
        internal = [node.address for node in self.pair.nodes.values()] + [self.pair.floating_ip]
        return drill_report.cut_in_flight(logs, delivered, internal)

    def check_dkim(self, attempts, entries: dict[str, dict], standby: str, sample: int = 10) -> dict[str, bool]:
        """Verify the DKIM signature of up to `sample` messages the standby accepted."""
        resolver = probes.resolver(self.pair.nameserver, timeout=3)

        def dnsfunc(name, timeout=5):
            name = name.decode() if isinstance(name, bytes) else name
            return b"".join(b"".join(r.strings) for r in resolver.resolve(name, "TXT"))

        results = {}
        served = [a.message_id for a in attempts if a.accepted and a.node == standby and a.message_id in entries]
        for msg_id in served[:sample]:
            raw = self.sink.raw(entries[msg_id]["file"])
            try:
                results[msg_id] = bool(dkim.verify(raw, dnsfunc=dnsfunc))
            except dkim.DKIMException:
                results[msg_id] = False
        return results


def run_drill(pair: Pair, settings: DrillSettings, echo: Callable[[str], None]) -> tuple[dict[str, Any], int]:
    """Run a drill, write its report, append the audit record; (report, exit code)."""
    drill = Drill(pair, settings, echo)
    record = Record(command="drill", reason=settings.scenario, environment=pair.environment)
    began = time.monotonic()
    try:
        report = drill.run()
    except MailhaError as exc:
        record.result, record.steps, record.finished = "failed", drill.steps, now_iso()
        record.details = {"scenario": settings.scenario, "failure": exc.message}
        AuditLog(pair.state_dir).append(record)
        events.publish_drill(pair, record)
        if any(step.name.startswith("inject ") for step in drill.steps):
            # After the fault: the pair may be failed over or still degraded.
            raise MailhaError(
                f"drill {settings.scenario} stopped after the fault: {exc.message}. "
                "The pair is left as 'mailha status' shows; finish by hand "
                "('mailha queue handover', 'mailha failback') before the next drill"
            ) from exc
        raise
    record.seconds = round(time.monotonic() - began, 2)
    record.steps, record.finished = drill.steps, now_iso()
    passed = report["verdict"]["passed"]
    record.result = "ok" if passed else "slo-breached"
    record.details = {"scenario": settings.scenario, "figures": report.get("figures", {})}
    if settings.report_dir is not None:
        json_path, html_path = drill_report.write_report(settings.report_dir, report)
        report["files"] = {"json": str(json_path), "html": str(html_path)}
        record.details["report"] = str(settings.report_dir)
    AuditLog(pair.state_dir).append(record)
    events.publish_drill(pair, record, report)
    return report, 0 if passed else 3


def slos_from_settings(pair: Pair) -> dict[str, float]:
    slos = dict(DEFAULT_SLOS)
    for key in DEFAULT_SLOS:
        value = pair.settings.get(f"mailha_drill_{key}")
        if value is not None:
            slos[key] = value
    return slos


def today_dir(base: Path, scenario: str) -> Path:
    return base / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{scenario}"
