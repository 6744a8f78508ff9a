"""Failover and failback: one function for both, as patronictl does.

Print the topology, decide the target and the mode, check preconditions
(the playbook's "Precondition:" tasks), run the preflight checks of the
target and the floating IP (a failure refuses the switch unless
--skip-preflight), print the plan, ask unless --yes,
take the switch lock, run the playbook with live progress, record everything
in the audit log, and print the topology again. A failed step stops the run
and says what state the pair is in and which command continues or rolls back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NoReturn

import click

from mailha import events, fencing, project
from mailha import preflight as preflight_mod
from mailha import status as status_mod
from mailha.audit import AuditLog, Record, Step, now_iso, switch_lock
from mailha.errors import EXIT_PREFLIGHT_REFUSED, MailhaError
from mailha.pair import Pair
from mailha.preflight.result import FAIL, PASS
from mailha.runner import PlaybookResult, run_playbook

PLAYBOOKS = {
    "failover": "failover.yml",
    "failback": "failback.yml",
    "handover": "handover.yml",
    "reconcile": "reconcile.yml",
}
QUIESCE_TIMEOUT = 120
# Where switch.yml's test hooks can fail on purpose (mailha_switch_fail_at).
FAILURE_POINTS = ("hold", "drain", "quiesce", "release", "handover", "balancer", "dns", "message")
RESCUE_PREFIX = "Step: rescue:"
PLAN = [
    "drain the source relay at the load balancer (the target takes new submissions at once)",
    "set VRRP priorities that survive a keepalived restart; release the floating IP on the source",
    "wait until the target holds the floating IP",
    "hand the source relay's queue over and count it empty",
    "return the load balancer to its health checks",
    "point the active-relay DNS record at the target by RFC 2136 (TSIG) and verify it",
    "send a test message through the load balancer; the target must deliver it",
]
FORCED_SKIPS = {0, 3}  # forced mode does not touch the source's load balancer slot or queue
# A managed load balancer (mailha_load_balancer_kind hcloud) is no host to
# pin or drain: it sends to whichever relay answers /active.
MANAGED_PLAN = {
    0: "leave the managed load balancer to its health check: it sends to the relay answering /active",
    4: "wait until only the target answers /active, the managed load balancer's health check",
}
HCLOUD_DNS_PLAN = (
    "point the active-relay DNS record at the target through the Hetzner Cloud API, read it back and wait"
    " until the authoritative server answers it"
)


def plan_steps(pair: Pair) -> list[str]:
    """The switch's steps as switch.yml takes them for this pair's load balancer and DNS."""
    steps = [MANAGED_PLAN.get(n, text) if pair.managed_balancer else text for n, text in enumerate(PLAN)]
    if pair.vars.get("mailha_dns_updates", "rfc2136") == "hcloud":
        steps[5] = HCLOUD_DNS_PLAN
    return steps


SKIP_PREFLIGHT = "--skip-preflight"


@dataclass
class SwitchOutcome:
    command: str
    target: str
    source: str
    mode: str
    dry_run: bool
    preconditions: list[Step] = field(default_factory=list)
    # The preflight of the target: preflight_summary() and every result, or why it was skipped.
    preflight: dict | None = None
    steps: list[Step] = field(default_factory=list)
    result: str = "pending"
    message: str = ""
    seconds: float = 0.0
    before: dict | None = None
    after: dict | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def pending_handover_path(pair: Pair) -> Path:
    return pair.state_dir / "pending-handover.json"


def pending_handover(pair: Pair) -> str | None:
    path = pending_handover_path(pair)
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return "unknown"
    node = document.get("node") if isinstance(document, dict) else None
    return node if isinstance(node, str) and node else "unknown"


def last_switch_age(log: AuditLog) -> float | None:
    """Seconds since the last successful failover or failback, or None; a damaged
    line that may have been one counts as one (AuditLog.last_switch fails closed)."""
    last = log.last_switch()
    return None if last is None else last.age()


def unfinished(topology: status_mod.Topology) -> list[str]:
    """What an interrupted switch left behind (status.switch_leftovers of each relay)."""
    return [finding for n in topology.nodes for _severity, finding in status_mod.switch_leftovers(n)]


def choose(pair: Pair, command: str, topology: status_mod.Topology, mode: str) -> tuple[str, str, str]:
    """(target, source, mode) of the switch, or MailhaError saying why it cannot be done.

    Mode "reconcile": the floating IP is already on the target, but a switch was
    interrupted there; putting the pair in order is all that is left to do."""
    holders = topology.holders
    primary = pair.designated_primary()
    if command == "failback":
        target = next(n.name for n in pair.nodes.values() if n.designated_state == "MASTER")
    elif len(holders) == 1 and holders[0] != primary:
        # keepalived already moved the floating IP on its own: make that switch
        # complete and durable (priorities, DNS, test message) without the old
        # primary, whose queue is handed over when it is back.
        target = holders[0]
        if mode == "planned":
            raise MailhaError(
                f"{target} is already active after an automatic failover from {primary}; "
                "a planned failover needs the old primary active, use --mode forced (or auto)"
            )
        mode = "forced"
    elif len(holders) == 1:
        target = pair.peer(holders[0]).name
    else:
        target = pair.peer(primary).name
    source = pair.peer(target).name
    if holders == [target] and target == primary:
        if unfinished(topology):
            return target, source, "reconcile"
        raise MailhaError(f"{target} is already the active relay; nothing to {command}")
    if mode == "auto":
        view = topology.node(source)
        mode = "planned" if view.agent_ok and view.smtp_ok and source in holders else "forced"
    return target, source, mode


def refuse_failback(pair: Pair, topology: status_mod.Topology, target: str, log: AuditLog) -> None:
    # First: the hand-over also restarts a crashed primary's MTA.
    pending = pending_handover(pair)
    if pending:
        raise MailhaError(
            f"refusing failback: the queue of {pending} has not been handed over; run 'mailha queue handover' first"
        )
    view = topology.node(target)
    if not view.ready:
        raise MailhaError(f"refusing failback: the primary {target} is not healthy: {view.not_ready_reason}")
    hold_down = float(pair.settings["mailha_failback_hold_down_seconds"])
    age = last_switch_age(log)
    if age is not None and age < hold_down:
        raise MailhaError(
            f"refusing failback: the last switch was {age:.0f}s ago, within the hold-down of {hold_down:.0f}s; "
            f"retry in {hold_down - age:.0f}s"
        )


def echo_step(echo: Callable[[str], None]) -> Callable[[Step, str], None]:
    marks = {"ok": "ok  ", "failed": "FAIL", "skipped": "skip"}

    def show(step: Step, host: str) -> None:
        echo(f"  [{marks.get(step.result, step.result)}] {step.name} ({host}, {step.seconds:.1f}s)")
        if step.result == "failed" and step.detail:
            echo(f"         {step.detail}")

    return show


def echo_retry(
    echo: Callable[[str], None], every: int = 5, clock: Callable[[], float] = time.monotonic
) -> Callable[[str, str, int, int, dict], None]:
    """A countdown for the long waits, every `every` attempts.

    The quiesce (one attempt a second until its timeout in seconds) says how
    many deliveries are still open and how long it has waited; other waits
    say which attempt of how many.
    """
    started: dict[tuple[str, str], float] = {}

    def show(name: str, host: str, attempt: int, retries: int, res: dict) -> None:
        key = (name, host)
        if attempt <= 1 or key not in started:
            started[key] = clock()
        if attempt % every:
            return
        lines = res.get("stdout_lines")
        # The quiesce lists the delivery sessions still open, one per line.
        if "in flight" in name and isinstance(lines, list):
            waited = clock() - started[key]
            echo(f"         waiting ({host}): {len(lines)} still in delivery, {waited:.0f} s of {retries} s")
            return
        echo(f"         waiting ({host}): attempt {attempt} of {retries}")

    return show


def end_dry_run(outcome: SwitchOutcome, as_json: bool, echo: Callable[[str], None]) -> None:
    outcome.result, outcome.message = "dry-run", "dry run: nothing was changed"
    echo(outcome.message)
    if as_json:
        click.echo(outcome.to_json())


def preflight_summary(report: preflight_mod.Report, target: str) -> dict:
    """What the audit record keeps of a preflight that ran: its verdict, the
    counts of pass, warn and fail, and each finding that did not pass."""
    document = report.to_dict()
    return {
        "status": "ran",
        "relay": target,
        "verdict": report.verdict,
        "summary": document["summary"],
        "findings": [f"{r.level} {r.check} {r.subject}: {r.reason}" for r in report.results if r.level != PASS],
    }


def refuse(outcome: SwitchOutcome, message: str, as_json: bool, exit_code: int | None = None) -> NoReturn:
    """End a switch that changed nothing: the outcome says so (as JSON too), then one line."""
    outcome.result, outcome.message = "refused", message
    if as_json:
        click.echo(outcome.to_json())
    raise MailhaError(message, exit_code=exit_code)


def check_preflight(
    pair: Pair, outcome: SwitchOutcome, skip: str, *, dry_run: bool, as_json: bool, echo: Callable[[str], None]
) -> None:
    """The preflight checks that concern the target and the floating IP: a check
    that fails refuses the switch (EXIT_PREFLIGHT_REFUSED), warnings are shown.

    The source relay's own checks, and parity and the clocks (which compare it
    with the target), are left out: the source may be down, which is often why
    the switch is made, and the playbook's preconditions compare the relays'
    settings already. `skip` says why it does not run ("--skip-preflight", or
    "drill"); the audit record says so too."""
    target, command = outcome.target, outcome.command
    if skip:
        outcome.preflight = {"status": "skipped", "why": skip}
        echo(f"Preflight of {target}: skipped ({skip})")
        return
    echo(f"Preflight of {target} and the floating IP:")
    verb = f"dry run: {command} to {target} would be refused" if dry_run else f"refusing {command} to {target}"
    anyway = f"rerun with {SKIP_PREFLIGHT} to switch anyway; nothing was changed"
    try:
        report = preflight_mod.run(pair, for_relays=[target])
    except MailhaError as exc:
        outcome.preflight = {"status": "could not run", "why": exc.message}
        message = f"{verb}: the preflight could not run: {exc.message}; {anyway}"
        refuse(outcome, message, as_json, EXIT_PREFLIGHT_REFUSED)
    for line in preflight_mod.render_table(report).splitlines():
        echo(f"  {line}")
    outcome.preflight = preflight_summary(report, target) | {"results": [r.to_dict() for r in report.results]}
    failed = [r for r in report.results if r.level == FAIL]
    if failed:
        found = "; ".join(f"{r.check} {r.subject}: {r.reason}{f' (fix: {r.fix})' if r.fix else ''}" for r in failed)
        refuse(outcome, f"{verb}: preflight failed: {found}; {anyway}", as_json, EXIT_PREFLIGHT_REFUSED)


def check_and_plan(
    pair: Pair,
    playbook: Path,
    extravars: dict,
    outcome: SwitchOutcome,
    plan: list[str],
    question: str,
    *,
    yes: bool,
    dry_run: bool,
    as_json: bool,
    confirm: Callable[[str], bool],
    echo: Callable[[str], None],
    skip_preflight: str = "",
) -> bool:
    """Run the playbook's "Precondition:" tasks and the target's preflight, print the
    plan and ask. False after a dry run; MailhaError when a precondition or a
    preflight check fails (a dry run too: it shows what would be refused), or
    the operator declines."""
    checks = run_playbook(playbook, pair.inventory_path, extravars, tags="preconditions", on_step=echo_step(echo))
    outcome.preconditions = checks.steps
    if not checks.ok:
        refuse(outcome, f"a precondition failed: {checks.failure}; nothing was changed", as_json)
    check_preflight(pair, outcome, skip_preflight, dry_run=dry_run, as_json=as_json, echo=echo)
    echo("Plan:")
    for line in plan:
        echo(f"  {line}")
    if dry_run:
        end_dry_run(outcome, as_json, echo)
        return False
    if not yes and not confirm(question):
        raise MailhaError("aborted: nothing was changed")
    return True


def run_switch(
    pair: Pair,
    command: str,
    reason: str,
    *,
    yes: bool,
    dry_run: bool,
    mode: str = "auto",
    as_json: bool = False,
    wait_lock: float = 0.0,
    quiesce_timeout: int = QUIESCE_TIMEOUT,
    fail_at: str | None = None,
    confirm: Callable[[str], bool] = lambda text: click.confirm(text, default=False),
    echo: Callable[[str], None] | None = None,
    skip_preflight: str = "",
) -> SwitchOutcome:
    """Run a failover or failback. Progress goes to `echo` (default: the
    terminal, or nothing with `as_json`); `as_json` prints the outcome as JSON.
    `skip_preflight` says why the target's preflight does not run (check_preflight).

    Everything is decided under the switch lock, from the topology read there:
    a second switch that waited for the lock sees what the first one did."""
    echo = echo or ((lambda _text: None) if as_json else click.echo)
    log = AuditLog(pair.state_dir)
    with switch_lock(pair.state_dir, wait=wait_lock):
        before = status_mod.gather(pair)
        echo(status_mod.render_table(before))
        target, source, mode = choose(pair, command, before, mode)
        if mode == "reconcile":
            return reconcile(pair, command, reason, before, target, log, dry_run=dry_run, as_json=as_json, echo=echo)
        fencing.refuse_if_isolated(pair, target, command)
        if command == "failback":
            refuse_failback(pair, before, target, log)
        outcome = SwitchOutcome(command, target, source, mode, dry_run, before=before.to_dict())
        playbook = project.playbook(PLAYBOOKS[command])
        extravars = {
            "mailha_switch_to": target,
            "mailha_switch_mode": mode,
            "mailha_switch_quiesce_timeout": quiesce_timeout,
        }
        if fail_at:
            extravars["mailha_switch_fail_at"] = fail_at

        echo(f"\n{command}: make {target} the active relay ({mode}; source {source}). Preconditions:")
        plan = [
            f"{number + 1}. {text}{' (skipped: forced)' if mode == 'forced' and number in FORCED_SKIPS else ''}"
            for number, text in enumerate(plan_steps(pair))
        ]
        go = check_and_plan(
            pair,
            playbook,
            extravars,
            outcome,
            plan,
            f"{command} to {target} now?",
            yes=yes,
            dry_run=dry_run,
            as_json=as_json,
            confirm=confirm,
            echo=echo,
            skip_preflight=skip_preflight,
        )
        if not go:
            return outcome

        record = Record(command=command, reason=reason, environment=pair.environment)
        preflight = {k: v for k, v in (outcome.preflight or {}).items() if k != "results"}
        record.details = {"target": target, "source": source, "mode": mode, "preflight": preflight}
        began = time.monotonic()
        echo("Switching:")
        result = run_playbook(
            playbook, pair.inventory_path, extravars, on_step=echo_step(echo), on_retry=echo_retry(echo)
        )
        outcome.steps = result.steps
        outcome.seconds = record.seconds = round(time.monotonic() - began, 2)
        record.steps = outcome.preconditions + result.steps
        record.finished = now_iso()
        _conclude(pair, outcome, record, result)
        return finish(
            pair, outcome, record, log, f"{command} to {target} done in {outcome.seconds:.1f}s", as_json, echo
        )


def reconcile(
    pair: Pair,
    command: str,
    reason: str,
    before: status_mod.Topology,
    target: str,
    log: AuditLog,
    *,
    dry_run: bool,
    as_json: bool,
    echo: Callable[[str], None],
) -> SwitchOutcome:
    """The floating IP is on `target` already, but an interrupted switch left
    relays holding mail or the load balancer pinned: put the pair in order."""
    left = unfinished(before)
    outcome = SwitchOutcome(command, target, pair.peer(target).name, "reconcile", dry_run, before=before.to_dict())
    echo(f"\n{command}: {target} holds the floating IP, but a switch did not finish: {'; '.join(left)}.")
    echo("Plan: route each relay by the floating IP, favour its holder, return the load balancer to its checks.")
    if dry_run:
        end_dry_run(outcome, as_json, echo)
        return outcome
    record = Record(command=command, reason=reason or "finish an interrupted switch", environment=pair.environment)
    record.details = {"target": target, "mode": "reconcile", "unfinished": left}
    began = time.monotonic()
    result = run_playbook(
        project.playbook(PLAYBOOKS["reconcile"]),
        pair.inventory_path,
        {"mailha_reconcile_skip": sorted(fencing.marks(pair))},
        on_step=echo_step(echo),
    )
    outcome.steps = record.steps = result.steps
    outcome.seconds = record.seconds = round(time.monotonic() - began, 2)
    record.finished = now_iso()
    if result.ok:
        outcome.result = record.result = "ok"
        pair.set_designated_primary(target)
    else:
        outcome.result = record.result = "failed"
        outcome.message = f"{command}: putting the pair in order failed: {result.failure}"
    return finish(pair, outcome, record, log, f"{target} is active and in order", as_json, echo)


def finish(
    pair: Pair,
    outcome: SwitchOutcome,
    record: Record,
    log: AuditLog,
    done: str,
    as_json: bool,
    echo: Callable[[str], None],
) -> SwitchOutcome:
    """Record the run, show the topology after it, and say how it ended: `done`, or its failure."""
    log.append(record)
    events.publish_switch(pair, record)
    after = status_mod.gather(pair)
    outcome.after = after.to_dict()
    echo("")
    echo(status_mod.render_table(after))
    if as_json:
        click.echo(outcome.to_json())
    if outcome.result != "ok":
        raise MailhaError(outcome.message)
    echo(done)
    return outcome


def _conclude(pair: Pair, outcome: SwitchOutcome, record: Record, result: PlaybookResult) -> None:
    if result.ok:
        outcome.result = record.result = "ok"
        pair.set_designated_primary(outcome.target)
        if outcome.mode == "forced":
            pending_handover_path(pair).write_text(json.dumps({"node": outcome.source, "since": now_iso()}) + "\n")
        return
    done = [s.name for s in result.steps if s.result == "ok"]
    failed = next((s.name for s in result.steps if s.result == "failed"), "a step")
    outcome.result = record.result = "failed"
    record.details["failure"] = result.failure
    if any(s.name.startswith(RESCUE_PREFIX) for s in result.steps):
        # switch.yml's rescue put the pair in order: the holder is active.
        # Read before finish() shows the topology, which names the designated primary.
        holders = status_mod.gather(pair).holders
        if len(holders) == 1:
            pair.set_designated_primary(holders[0])
        state = f"{holders[0]} is active and delivers" if len(holders) == 1 else f"holders: {holders or 'none'}"
        record.details["rescued"] = True
        outcome.message = (
            f"{outcome.command} failed: {result.failure}. The pair was rescued: {state}; "
            "the load balancer follows its health checks (see 'mailha status'). "
            f"Retry 'mailha {outcome.command} --yes' once the cause is fixed"
        )
        return
    moved = any("holds the floating IP" in name for name in done)
    state = (
        f"the floating IP is on {outcome.target}, later steps did not run"
        if moved
        else f"the floating IP did not move; {outcome.source} should still be active"
    )
    outcome.message = (
        f"{outcome.command} stopped at '{failed}': {result.failure}. State: {state} (see 'mailha status'). "
        f"Continue with 'mailha {outcome.command} --yes', or roll back with "
        f"'mailha {'failback' if outcome.command == 'failover' else 'failover'} --yes'"
    )


def run_handover(
    pair: Pair,
    node: str | None,
    as_json: bool = False,
    echo: Callable[[str], None] | None = None,
    release_isolated: bool = False,
) -> PlaybookResult:
    """Hand a returned relay's queue over to the active relay and clear the pending mark.

    An isolated relay's queue may hold an attacker's mail: it is released only
    with `release_isolated` (the operator's --yes after 'mailha queue inspect')."""
    echo = echo or ((lambda _text: None) if as_json else click.echo)
    pending = pending_handover(pair)
    name = node or pending
    if name is None:
        raise MailhaError("no queue hand-over is pending; name the relay with --node to run one anyway")
    pair.node(name)
    isolated = name in fencing.marks(pair)
    if isolated and not release_isolated:
        raise MailhaError(
            f"{name} is isolated as possibly compromised and its queue may hold an attacker's mail: "
            f"inspect it with 'mailha queue inspect --node {name}', then release it with --yes"
        )
    log = AuditLog(pair.state_dir)
    record = Record(command="queue-handover", reason=f"hand over the queue of {name}", environment=pair.environment)
    record.details = {"node": name, "isolated": isolated}
    began = time.monotonic()
    with switch_lock(pair.state_dir):
        result = run_playbook(
            project.playbook(PLAYBOOKS["handover"]),
            pair.inventory_path,
            {"mailha_handover_from": name, "mailha_handover_isolated": isolated},
            on_step=echo_step(echo),
        )
    record.steps, record.seconds, record.finished = result.steps, round(time.monotonic() - began, 2), now_iso()
    record.result = "ok" if result.ok else "failed"
    log.append(record)
    if not result.ok:
        if result.unreachable:
            raise MailhaError(f"{name} is unreachable; start it and retry 'mailha queue handover'")
        raise MailhaError(f"queue hand-over from {name} failed: {result.failure}")
    if pending == name:
        pending_handover_path(pair).unlink(missing_ok=True)
    return result
