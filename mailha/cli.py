"""The `mailha` command line.

One click group; each command is thin and calls a plain function that tests
can call directly. Every expected failure is a MailhaError: one line, a
non-zero exit code, no traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mailha import __version__, control_metrics, drill_report, events, isolation, terraform, textfile
from mailha import drill as drill_mod
from mailha import hcloud_costs as hcloud_costs_mod
from mailha import inventory as inventory_mod
from mailha import pair as pair_mod
from mailha import preflight as preflight_mod
from mailha import queue as queue_mod
from mailha import status as status_mod
from mailha import switch as switch_mod
from mailha import watch as watch_mod
from mailha.audit import AuditLog, check_directory, switch_lock
from mailha.errors import EXIT_FAILED, EXIT_STATUS_UNKNOWN, BadInput, MailhaError

CONTRACT_OUTPUT = "mailha"
DEFAULT_INVENTORY = Path("inventories/lab/hosts.yml")

# Options shared by several commands, defined once (patronictl style).
inventory_option = click.option(
    "-i",
    "--inventory",
    "inventory_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_INVENTORY,
    envvar="MAILHA_INVENTORY",
    show_default=True,
    help="Generated inventory of the pair (env MAILHA_INVENTORY).",
)
output_option = click.option(
    "-o",
    "--output",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
metrics_file_option = click.option(
    "--metrics-file",
    type=click.Path(path_type=Path),
    help="Also write the result for node_exporter's textfile collector to this *.prom file "
    "(monitoring/README.md); its directory must exist.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mailha")
def main() -> None:
    """Keep an email-marketing sending pair up: status, failover, failback, drills.

    Exit codes: 0 success, 1 the operation failed, 2 bad input (nothing changed),
    3 a drill breached a target (status: the inventory cannot be read), 4 a switch
    refused by its preflight (nothing changed).
    """


@main.command("inventory")
@click.option(
    "--terraform-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Terraform environment whose 'mailha' output to read.",
)
@click.option(
    "--from-json",
    "contract_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the output contract from a JSON file instead (as 'terraform output -json mailha' prints it).",
)
@click.option(
    "-i",
    "--inventory",
    "output_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_INVENTORY,
    envvar="MAILHA_INVENTORY",
    show_default=True,
    help="Inventory file to write, the one the other commands read (env MAILHA_INVENTORY).",
)
@click.option("--output", "old_output", hidden=True)
def inventory_command(
    terraform_dir: Path | None, contract_file: Path | None, output_path: Path, old_output: str | None
) -> None:
    """Write an Ansible inventory from an environment's output contract."""
    if old_output is not None:
        # --output is the output format everywhere else (-o table|json).
        raise BadInput(f"--output names the output format; write the inventory with --inventory {old_output}")
    if (terraform_dir is None) == (contract_file is None):
        raise BadInput("give exactly one of --terraform-dir or --from-json")
    if contract_file is not None:
        contract = read_contract_file(contract_file)
    else:
        contract = terraform.output(terraform_dir, CONTRACT_OUTPUT)
    changed = inventory_mod.write(inventory_mod.build(contract), output_path)
    click.echo(f"inventory {output_path}: {'written' if changed else 'unchanged'}")


@main.command("status")
@inventory_option
@output_option
@click.option(
    "--watch",
    "watch_interval",
    type=click.FloatRange(min=0.5, max=3600),
    is_flag=False,
    flag_value=watch_mod.DEFAULT_INTERVAL,
    default=None,
    metavar="[SECONDS]",
    help=f"Refresh every SECONDS (default {watch_mod.DEFAULT_INTERVAL:g}) until Ctrl-C: redrawn in place on a "
    "terminal, a separator and the table each round otherwise, one JSON document per line with --output json.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    help="With --watch: stop after this many rounds, with the exit code of the last.",
)
def status_command(inventory_path: Path, output_format: str, watch_interval: float | None, count: int | None) -> None:
    """Show the pair: roles, VRRP, floating IP, MTA health, queues, load balancer,
    DNS, and each relay's health level and median greeting time when its agent
    reports them ("-" otherwise).

    Exit code: 0 healthy, 1 degraded, 2 critical (split brain, no active node,
    a standby in FAULT, an active node whose MTA does not answer), 3 unknown:
    the inventory cannot be read. With --watch: 0 when ended with Ctrl-C;
    with --count, the last round's.
    """
    if count is not None and watch_interval is None:
        raise BadInput("--count needs --watch")
    try:
        pair = pair_mod.load(inventory_path)
    except MailhaError as exc:
        raise MailhaError(exc.message, exit_code=EXIT_STATUS_UNKNOWN) from None
    if watch_interval is not None:
        raise SystemExit(
            watch_mod.watch(
                lambda: status_mod.gather(pair),
                interval=watch_interval,
                count=count,
                as_json=output_format == "json",
                tty=sys.stdout.isatty(),
            )
        )
    topology = status_mod.gather(pair)
    render = status_mod.render_json if output_format == "json" else status_mod.render_table
    click.echo(render(topology))
    raise SystemExit(topology.exit_code)


@main.command("preflight")
@inventory_option
@output_option
@metrics_file_option
@click.option(
    "--check",
    "checks",
    multiple=True,
    type=click.Choice(preflight_mod.CHECKS),
    help="Run only this check (repeat for more); default: every check.",
)
def preflight_command(
    inventory_path: Path, output_format: str, metrics_file: Path | None, checks: tuple[str, ...]
) -> None:
    """Could the standby take over without the mail landing in spam? Changes nothing.

    For the floating IP and each relay: reverse DNS, SPF, DKIM, DMARC,
    blocklists, the TLS certificate on 25 and 587, the relays' settings,
    packages and signing keys compared, queue, spool and clocks. Each result
    is pass, warn or fail, with the reason and the fix.

    Exit code: 0 every check passes, 1 warnings, 2 a failure or a preflight
    that could not run (bad input, no answer from the name server), or
    --metrics-file could not be written (after the results are printed).
    """
    pair = pair_mod.load(inventory_path)
    try:
        report = preflight_mod.run(pair, checks or preflight_mod.CHECKS)
    except MailhaError as exc:
        # A scheduled preflight that cannot run is exported too: its exit code.
        if problem := _write_metrics(metrics_file, control_metrics.write_preflight, [], exc.exit_code):
            click.echo(f"Error: {problem}", err=True)
        events.publish_preflight(pair, exc.exit_code, [], exc.message)
        raise
    render = preflight_mod.render_json if output_format == "json" else preflight_mod.render_table
    click.echo(render(report))
    events.publish_preflight(pair, report.exit_code, report.results)
    if problem := _write_metrics(metrics_file, control_metrics.write_preflight, report.results, report.exit_code):
        raise BadInput(problem)
    raise SystemExit(report.exit_code)


def _write_metrics(path: Path | None, write: Callable[..., None], *args: Any) -> str | None:
    """Write a metrics file (when one was asked for) once the command's result
    is out; the one-line reason when it could not be written, for the caller
    to print."""
    if path is None:
        return None
    try:
        write(path, *args)
    except MailhaError as exc:
        return exc.message
    return None


def _switch_options(function):
    options = [
        inventory_option,
        output_option,
        click.option("--reason", default="", help="Why: recorded in the audit log (mailha history)."),
        click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation."),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Show the topology, preconditions, preflight and plan; change nothing. "
            "Exits 4 when the preflight would refuse the switch.",
        ),
        click.option(
            "--skip-preflight",
            is_flag=True,
            help="Do not run the target's preflight checks (recorded in mailha history). "
            "The lock and the other preconditions still apply.",
        ),
        click.option(
            "--mode",
            type=click.Choice(["auto", "planned", "forced"]),
            default="auto",
            show_default=True,
            help="planned: the active relay is up, drain it and hand its queue over; forced: proceed without it. "
            "auto picks planned when the active relay answers.",
        ),
        click.option(
            "--wait", "wait_lock", type=float, default=0.0, help="Seconds to wait for another switch to finish."
        ),
        click.option(
            "--quiesce-timeout",
            type=click.IntRange(min=1, max=3600),
            default=switch_mod.QUIESCE_TIMEOUT,
            show_default=True,
            help="Seconds a planned switch waits for the active relay's deliveries in flight to end; "
            "past it the switch is rescued (nothing moves) and says so.",
        ),
        # Tests only: fail on purpose at one point of the switch to prove the rescue.
        click.option("--fail-at", type=click.Choice(switch_mod.FAILURE_POINTS), hidden=True),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@main.command("failover")
@_switch_options
@click.option(
    "--isolate",
    is_flag=True,
    help="The active relay may be compromised: fence it (no sending, no floating IP, its queue kept), "
    "rotate the DKIM key, and make the standby active. --mode is ignored.",
)
def failover_command(
    inventory_path,
    output_format,
    reason,
    yes,
    dry_run,
    skip_preflight,
    mode,
    wait_lock,
    quiesce_timeout,
    fail_at,
    isolate,
) -> None:
    """Make the standby the active relay.

    Shows the topology and the preconditions, runs the preflight checks of
    the standby and the floating IP (those of the active relay are left out),
    asks, then drains the active relay at the load balancer, moves the
    floating IP, hands the queue over, updates DNS, and ends with a test
    message that must be delivered. A preflight check that fails refuses the
    switch, exit code 4, nothing changed; warnings are shown and do not
    refuse; --skip-preflight switches anyway. With --isolate the active relay
    is fenced instead, without a preflight (README, "Isolating a compromised
    relay").
    """
    if isolate:
        isolation.run_isolate(
            pair_mod.load(inventory_path),
            reason,
            yes=yes,
            dry_run=dry_run,
            as_json=output_format == "json",
            wait_lock=wait_lock,
        )
        return
    _switch(
        "failover",
        inventory_path,
        output_format,
        reason,
        yes,
        dry_run,
        skip_preflight,
        mode,
        wait_lock,
        quiesce_timeout,
        fail_at,
    )


@main.command("failback")
@_switch_options
def failback_command(
    inventory_path, output_format, reason, yes, dry_run, skip_preflight, mode, wait_lock, quiesce_timeout, fail_at
) -> None:
    """Return service to the primary (the inventory's MASTER relay).

    Refuses while the primary is unhealthy, while a queue hand-over is
    pending, or within the hold-down time after the last switch; and, exit
    code 4, when a preflight check of the primary or the floating IP fails
    (--skip-preflight switches anyway).
    """
    _switch(
        "failback",
        inventory_path,
        output_format,
        reason,
        yes,
        dry_run,
        skip_preflight,
        mode,
        wait_lock,
        quiesce_timeout,
        fail_at,
    )


def _switch(
    command,
    inventory_path,
    output_format,
    reason,
    yes,
    dry_run,
    skip_preflight,
    mode,
    wait_lock,
    quiesce_timeout,
    fail_at,
) -> None:
    switch_mod.run_switch(
        pair_mod.load(inventory_path),
        command,
        reason,
        yes=yes,
        dry_run=dry_run,
        skip_preflight=switch_mod.SKIP_PREFLIGHT if skip_preflight else "",
        mode=mode,
        as_json=output_format == "json",
        wait_lock=wait_lock,
        quiesce_timeout=quiesce_timeout,
        fail_at=fail_at,
    )


@main.command("history")
@inventory_option
@output_option
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many records.")
def history_command(inventory_path: Path, output_format: str, limit: int) -> None:
    """The audit log, newest first: every failover, failback, hand-over and drill.

    Stored as JSON lines in $MAILHA_STATE_DIR/history.jsonl (default
    /var/lib/mailha/<environment>/history.jsonl).
    """
    pair = pair_mod.load(inventory_path)
    records = AuditLog(pair.state_dir).read()[:limit]
    if output_format == "json":
        click.echo(json.dumps(records, indent=2))
        return
    if not records:
        click.echo(f"no switches recorded yet in {AuditLog(pair.state_dir).path}")
        return
    for record in records:
        details = record.get("details", {})
        started, command, result, operator = (
            _printable(record[k]) for k in ("started", "command", "result", "operator")
        )
        target = f" -> {_printable(details['target'])}" if "target" in details else ""
        reason = _printable(record.get("reason") or "-")
        click.echo(f"{started}  {command}{target}  {result}  {record.get('seconds', 0):.1f}s  {operator}  {reason}")
        preflight = _preflight_line(details.get("preflight"))
        if preflight:
            click.echo(f"    preflight: {preflight}")
        for step in record.get("steps", []):
            click.echo(f"    {_printable(step['result']):<7} {step['seconds']:>6.1f}s  {_printable(step['name'])}")


def _preflight_line(preflight: object) -> str:
    """How a switch's preflight went, from its audit record: skipped (why), or its verdict and counts."""
    if not isinstance(preflight, dict) or "status" not in preflight:
        return ""
    if preflight["status"] == "ran":
        counts = preflight.get("summary") if isinstance(preflight.get("summary"), dict) else {}
        shown = ", ".join(f"{_printable(counts.get(level, 0))} {level}" for level in ("pass", "warn", "fail"))
        return f"{_printable(preflight.get('verdict', '?'))} ({shown})"
    return f"{_printable(preflight['status'])} ({_printable(preflight.get('why', ''))})"


def _printable(value: object) -> str:
    """A history field on one line: the file is edited by people, and a reason is free text."""
    return "".join(c if c.isprintable() else "?" for c in str(value))


@main.command("drill")
@inventory_option
@output_option
@click.option("--scenario", type=click.Choice(list(drill_mod.SCENARIOS)), required=True)
@click.option("--rate", type=click.FloatRange(min=0.1, max=200), default=20, show_default=True, help="Messages/s.")
@click.option(
    "--duration",
    type=click.FloatRange(min=5, max=600),
    default=20,
    show_default=True,
    help="Seconds of traffic; manual-failover keeps it up through the whole switch and a few seconds after.",
)
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), help="Report directory.")
@metrics_file_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def drill_command(inventory_path, output_format, scenario, rate, duration, report_dir, metrics_file, yes) -> None:
    """Rehearse a failure under load and measure outage, loss and duplicates.

    Injects a real fault on the active relay, restores it, fails back, and
    reconciles every acknowledged message at the recipient side. Exit code:
    0 every target (SLO) met, 3 a target breached, 1 the drill could not run
    (or ran and met its targets, but --metrics-file could not be written),
    2 bad input (an unusable --report or --metrics-file: nothing was done).
    """
    pair = pair_mod.load(inventory_path)
    # Refused now rather than after the fault, when the files are written.
    if report_dir is not None:
        check_directory(report_dir, "report directory", "choose another --report")
    if metrics_file is not None:
        textfile.check_target(metrics_file, "--metrics-file")
    if not yes and not click.confirm(f"inject {scenario} on the active relay of {pair.environment} now?"):
        raise MailhaError("aborted: nothing was changed")
    settings = drill_mod.DrillSettings(
        scenario=scenario, rate=rate, duration=duration, report_dir=report_dir, slos=drill_mod.slos_from_settings(pair)
    )
    echo = (lambda _text: None) if output_format == "json" else click.echo
    # One drill at a time, and no operator's switch while a fault is injected:
    # the drill holds the switch lock too (its own switches re-enter it).
    with switch_lock(pair.state_dir, name="drill.lock"), switch_lock(pair.state_dir):
        try:
            report, code = drill_mod.run_drill(pair, settings, echo)
        except MailhaError:
            # A drill that stopped is a failed drill to the alert rules too.
            if problem := _write_metrics(metrics_file, control_metrics.write_drill, scenario, None):
                click.echo(f"Error: {problem}", err=True)
            raise
    if output_format == "json":
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        click.echo(drill_report.render_summary(report))
        if "files" in report:
            click.echo(f"report: {report['files']['html']}")
    if problem := _write_metrics(metrics_file, control_metrics.write_drill, scenario, report):
        raise MailhaError(problem, exit_code=code or EXIT_FAILED)
    raise SystemExit(code)


@main.group("queue")
def queue_group() -> None:
    """Queue operations."""


@queue_group.command("handover")
@inventory_option
@click.option("--node", help="Relay whose queue to hand over (default: the one a forced failover left pending).")
@click.option("--yes", "-y", is_flag=True, help="Release an isolated relay's queue (inspect it first).")
def handover_command(inventory_path: Path, node: str | None, yes: bool) -> None:
    """Hand a returned relay's queue over to the active relay.

    An isolated relay's queue is released only with --yes: it may hold an
    attacker's mail ('mailha queue inspect' lists it first).
    """
    pair = pair_mod.load(inventory_path)
    if node is not None:
        pair.node(node)  # BadInput for a name that is not one of the pair's, even an empty one
    switch_mod.run_handover(pair, node, release_isolated=yes)
    click.echo("queue handed over")


@queue_group.command("inspect")
@inventory_option
@output_option
@click.option("--node", required=True, help="Relay whose queue to list.")
def inspect_command(inventory_path: Path, output_format: str, node: str) -> None:
    """List a relay's queue without changing it: sender, recipients, size, age.

    Reads the queue files, so it works on an isolated relay whose Postfix is stopped.
    """
    pair = pair_mod.load(inventory_path)
    pair.node(node)
    messages = queue_mod.inspect(pair, node)
    if output_format == "json":
        click.echo(json.dumps([m.to_dict() for m in messages], indent=2))
    else:
        click.echo(queue_mod.render_table(node, messages))


@main.command("unisolate")
@inventory_option
@click.argument("node")
@click.option("--reason", required=True, help="Why the relay can be trusted again: recorded in mailha history.")
def unisolate_command(inventory_path: Path, node: str, reason: str) -> None:
    """Let a relay isolated by 'failover --isolate' back, once it has been rebuilt.

    Refuses while the relay is still the fenced host or its MTA is unhealthy.
    Its servers return to the load balancer; 'mailha failback' can follow.
    """
    isolation.run_unisolate(pair_mod.load(inventory_path), node, reason)
    click.echo(f"{node} is no longer isolated")


@main.command("hcloud-costs")
@click.option(
    "--tfvars",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The hcloud environment's terraform.tfvars: its location, server_type and load_balancer_type are priced "
    "(default: terraform/environments/hcloud/terraform.tfvars if it exists, else that environment's defaults).",
)
@click.option(
    "--api-endpoint",
    default=hcloud_costs_mod.API_ENDPOINT,
    show_default=True,
    envvar="HCLOUD_ENDPOINT",
    help="Hetzner Cloud API (env HCLOUD_ENDPOINT).",
)
@output_option
def hcloud_costs_command(tfvars: Path | None, api_endpoint: str, output_format: str) -> None:
    """What the Hetzner Cloud environment costs a month, read from the API now.

    Asks GET /pricing with the token in HCLOUD_TOKEN (a read-only token is
    enough) and prices what terraform/environments/hcloud makes: two relays,
    their primary IPv4 addresses, the floating IPv4 and the load balancer;
    traffic beyond the included volume is not counted. Exit code: 0 priced,
    1 the API failed or refused, 2 bad input.
    """
    if tfvars is None:
        default = Path("terraform/environments/hcloud/terraform.tfvars")
        tfvars = default if default.is_file() else None
    settings = hcloud_costs_mod.settings_from_tfvars(tfvars)
    pricing = hcloud_costs_mod.fetch_pricing(os.environ.get("HCLOUD_TOKEN", ""), api_endpoint)
    result = hcloud_costs_mod.costs(pricing, settings)
    render = hcloud_costs_mod.render_json if output_format == "json" else hcloud_costs_mod.render_table
    click.echo(render(result))


def read_contract_file(path: Path) -> object:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path} is not UTF-8 text (byte {exc.start + 1})") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path} is not JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise BadInput(f"{path} is not the output contract: its JSON is nested too deeply") from None


if __name__ == "__main__":  # pragma: no cover
    main()
