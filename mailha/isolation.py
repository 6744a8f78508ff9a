"""Failover for a relay that may be compromised: fence it, rotate what it held.

`mailha failover --isolate` makes the standby active and fences the suspect
(playbooks/isolate.yml). The suspect stays ISOLATED in the state directory
(`isolated.json`) until `mailha unisolate` after it was rebuilt: status shows
it as critical, a switch to it and a failback are refused, and its queue is
released only by `mailha queue handover --node X --yes`.

The mark is written before the playbook runs and kept if the run fails: a
half-fenced relay is still a suspect. A run that ends well adds `finished`
to it. Run again after a failed run, `mailha failover --isolate` resumes
the unfinished isolation (the same suspect, even though the floating IP
may have moved to its peer already) instead of fencing the active relay.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import click

from mailha import project
from mailha import status as status_mod
from mailha.audit import AuditLog, Record, now_iso, operator, switch_lock
from mailha.errors import BadInput, MailhaError
from mailha.fencing import marks, refuse_if_isolated, write_marks
from mailha.pair import Pair
from mailha.runner import run_playbook
from mailha.switch import SwitchOutcome, check_and_plan, echo_step, finish

PLAN = [
    "mark the suspect isolated (here and on the host: site.yml refuses to converge it until it is rebuilt)",
    "stop its MTA (its queue stays, unsent) and, for good, keepalived and its health agent: "
    "the floating IP moves to the standby",
    "hold its whole queue; load the isolation firewall: SSH from the operators only, nothing out",
    "disable its servers in the load balancer's configuration",
    "rotate the DKIM key: a new selector on the controller, published in DNS, installed on the standby; "
    "the old selector removed from DNS",
    "make the standby's role durable, point the active-relay DNS record at it, send a test message",
]


def choose_suspect(current: dict[str, dict], holders: list[str], designated_primary: str) -> tuple[str, bool]:
    """(the relay to isolate, whether this resumes an isolation a failed run
    left unfinished). Without one: the relay holding the floating IP, else
    the designated primary."""
    unfinished = sorted(node for node, mark in current.items() if not mark.get("finished"))
    if unfinished:
        return unfinished[0], True
    return (holders[0] if len(holders) == 1 else designated_primary), False


def run_isolate(
    pair: Pair,
    reason: str,
    *,
    yes: bool,
    dry_run: bool,
    as_json: bool = False,
    wait_lock: float = 0.0,
    confirm: Callable[[str], bool] = lambda text: click.confirm(text, default=False),
    echo: Callable[[str], None] | None = None,
) -> SwitchOutcome:
    """Fence the active relay as possibly compromised and make its peer active."""
    echo = echo or ((lambda _text: None) if as_json else click.echo)
    before = status_mod.gather(pair)
    echo(status_mod.render_table(before))
    isolated = marks(pair)
    suspect, resuming = choose_suspect(isolated, before.holders, pair.designated_primary())
    target = pair.peer(suspect).name
    if resuming:
        echo(f"Resuming the isolation of {suspect} that a run left unfinished ({isolated[suspect].get('since')}).")
    else:
        refuse_if_isolated(pair, suspect, f"to isolate {suspect} again")
    refuse_if_isolated(pair, target, f"to isolate {suspect}: its peer would be the only relay left and")
    outcome = SwitchOutcome("failover", target, suspect, "isolate", dry_run, before=before.to_dict())
    playbook = project.playbook("isolate.yml")
    extravars = {"mailha_isolate": suspect, "mailha_isolate_reason": reason}

    echo(f"\nfailover --isolate: fence {suspect} as possibly compromised, make {target} active. Preconditions:")
    plan = [f"{number + 1}. {text}" for number, text in enumerate(PLAN)]
    plan.append(f"The queue of {suspect} is NOT handed over: inspect it with 'mailha queue inspect --node {suspect}'.")
    go = check_and_plan(
        pair,
        playbook,
        extravars,
        outcome,
        plan,
        f"isolate {suspect} and fail over to {target} now?",
        yes=yes,
        dry_run=dry_run,
        as_json=as_json,
        confirm=confirm,
        echo=echo,
    )
    if not go:
        return outcome

    log = AuditLog(pair.state_dir)
    record = Record(command="failover", reason=reason, environment=pair.environment)
    record.details = {"target": target, "source": suspect, "mode": "isolate", "isolated": suspect, "resumed": resuming}
    began = time.monotonic()
    with switch_lock(pair.state_dir, wait=wait_lock):
        current = marks(pair)
        if not resuming:
            current[suspect] = {"since": now_iso(), "reason": reason, "operator": operator()}
            write_marks(pair, current)
        echo("Isolating:")
        result = run_playbook(playbook, pair.inventory_path, extravars, on_step=echo_step(echo))
    outcome.steps = record.steps = outcome.preconditions + result.steps
    outcome.seconds = record.seconds = round(time.monotonic() - began, 2)
    record.finished = now_iso()
    if result.ok:
        outcome.result = record.result = "ok"
        pair.set_designated_primary(target)
        current = marks(pair)
        current[suspect]["finished"] = now_iso()
        write_marks(pair, current)
    else:
        outcome.result = record.result = "failed"
        record.details["failure"] = result.failure
        outcome.message = (
            f"isolation of {suspect} stopped: {result.failure}. {suspect} stays marked ISOLATED; "
            f"see 'mailha status', fix the cause and run 'mailha failover --isolate --yes' again: it resumes "
            f"the isolation of {suspect}"
        )
    return finish(
        pair, outcome, record, log, f"{suspect} isolated; {target} is active ({outcome.seconds:.1f}s)", as_json, echo
    )


def run_unisolate(pair: Pair, node: str, reason: str, echo: Callable[[str], None] = click.echo) -> None:
    """Let a rebuilt relay back: the playbook checks it is not the fenced host any more."""
    pair.node(node)
    if not reason.strip():
        raise BadInput("say why the relay can be trusted again with --reason (recorded in mailha history)")
    current = marks(pair)
    if node not in current:
        raise MailhaError(f"{node} is not isolated; nothing to do")
    record = Record(command="unisolate", reason=reason, environment=pair.environment)
    record.details = {"node": node, "isolated_since": current[node].get("since")}
    began = time.monotonic()
    with switch_lock(pair.state_dir):
        result = run_playbook(
            project.playbook("unisolate.yml"),
            pair.inventory_path,
            {"mailha_unisolate": node},
            on_step=echo_step(echo),
        )
        if result.ok:
            current = marks(pair)
            current.pop(node, None)
            write_marks(pair, current)
    record.steps, record.seconds, record.finished = result.steps, round(time.monotonic() - began, 2), now_iso()
    record.result = "ok" if result.ok else "failed"
    AuditLog(pair.state_dir).append(record)
    if not result.ok:
        raise MailhaError(f"{node} stays isolated: {result.failure}")
