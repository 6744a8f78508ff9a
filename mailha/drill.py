"""`mailha drill`: rehearse a failure on a live pair and measure it.

1. Steady state first: a healthy pair, one holder of the floating IP, test mail flows.
2. Bounded campaign traffic through the load balancer and the floating IP,
   every attempt recorded with its time, reply and the relay that answered.
3. The fault, and a timeline: injected, detected (keepalived's transition log),
   floating IP moved, first 250 after the fault, load balancer switched.
4. Restore the failed relay, hand its queue over, fail back, wait for empty queues.
5. Reconcile by Message-ID at the recipient side: lost, duplicated, DKIM of the standby's mail.
6. Steady state again. Report (report.json, report.html), audit record, SLO verdict.

This module orchestrates; the faults are mailha.faults (one class per
scenario, asked by name), the sampling and the timeline mailha.drill_sampler,
the DKIM check mailha.drill_dkim, the report mailha.drill_report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailha import drill_dkim, drill_report, events, faults, probes
from mailha import status as status_mod
from mailha import switch as switch_mod
from mailha.audit import AuditLog, Record, Step, now_iso
from mailha.drill_sampler import Sampler, timeline_events, vrrp_entries
from mailha.errors import BadInput, MailhaError
from mailha.faults import MANUAL_FAILOVER, Fault
from mailha.hosts import RecipientSide, hosts_for, recipient_side
from mailha.node import vrrp
from mailha.pair import Pair
from mailha.traffic import Target, TrafficGenerator, build_message, message_id, new_run_id, submit

# Every scenario (mailha.faults lists them): the CLI's choices and the benchmarks read them from here.
SCENARIOS = faults.SCENARIOS

DEFAULT_SLOS = {"max_outage_seconds": 2.0, "max_lost": 0, "max_duplicated": 0}
# Upper bound on the traffic of a manual-failover drill beyond --duration.
SWITCH_BUDGET = 300.0
# A drill's switches do not run the preflight (README, "Drills"): its restore
# must bring the pair back whatever a check says, it checks its own steady
# state before the fault, and the preflight's playbook and lookups would eat
# into the switch's measured budget. Each switch's audit record says so.
DRILL_SKIPS_PREFLIGHT = "drill"
# After the restore, the pair has settled when the same one relay holds the
# floating IP at two readings this far apart.
SETTLE_SECONDS = 1.0


@dataclass
class DrillSettings:
    scenario: str
    rate: float = 20.0
    duration: float = 20.0
    report_dir: Path | None = None
    slos: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SLOS))
    settle_timeout: float = 180.0


class Drill:
    def __init__(self, pair: Pair, settings: DrillSettings, echo: Callable[[str], None]):
        faults.check_scenario(settings.scenario)
        self.pair = pair
        self.settings = settings
        self.echo = echo
        self.hosts = hosts_for(pair)
        # A host fault, or None for manual-failover: a planned switch, which
        # leaves no host to restore (the failback brings the pair back).
        self.fault: Fault | None = (
            None if settings.scenario == MANUAL_FAILOVER else faults.fault_for(settings.scenario, self.hosts)
        )
        problem = self.fault.problem() if self.fault is not None else None
        if problem is not None:
            raise BadInput(f"drill {settings.scenario}: {problem}")
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
        """(epoch seconds, state) of the last 200 transitions the relay logged."""
        return vrrp_entries(self.hosts.exec(target, "tail", "-n", "200", vrrp.LOG_FILE, check=False).stdout)

    # -- faults ----------------------------------------------------------
    def inject(self, active: str) -> None:
        self.event("fault_injected")
        if self.fault is not None:
            self.fault.inject(self.hosts.targets[active])
        else:
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
        if self.fault is not None:
            self.fault.restore(self.hosts.targets[failed], self.wait, failed)
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

    def settled_holder(self) -> list[str]:
        """The one relay that held the floating IP at two readings SETTLE_SECONDS apart."""
        seen: list[list[str]] = []

        def settled() -> list[str] | None:
            seen.append(status_mod.gather(self.pair).holders)
            return seen[-1] if len(seen) > 1 and len(seen[-1]) == 1 and seen[-1] == seen[-2] else None

        return self.wait(settled, 60, "one holder of the floating IP", SETTLE_SECONDS)

    def restore_or_say(self, failed: str) -> None:
        """Restore after a failure: never raises, says what is left to do if it cannot."""
        try:
            self.step(f"restore {failed}", lambda: self.restore(failed))
        except MailhaError as exc:
            left = self.fault.left_to_do(failed) if self.fault is not None else f"restore {failed}"
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
        planned = self.fault is None
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
            if self.fault is not None and self.fault.splits_the_pair:
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
        # A relay cut off by a partition kept the floating IP and, healed,
        # may take it back by priority a moment later: the hand-over is
        # decided once one relay has held it through two readings.
        holders = self.step("wait until one relay holds the floating IP", self.settled_holder)
        if not planned and holders != [active]:
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
        dkim_results = drill_dkim.check_dkim(
            attempts, entries, standby, read=self.sink.raw, resolver=probes.resolver(self.pair.nameserver, timeout=3)
        )
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
        has_vrrp_log = self.fault is None or self.fault.has_vrrp_log
        failed_log = self.vrrp_log(self.hosts.targets[active]) if has_vrrp_log else []
        standby_log = self.vrrp_log(self.hosts.targets[standby])
        for name, at in timeline_events(
            active=active,
            standby=standby,
            fault_at=fault_at,
            attempts=attempts,
            failed_log=failed_log,
            standby_log=standby_log,
            sampler=sampler,
        ):
            self.event(name, at)

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
