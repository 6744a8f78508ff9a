"""The control host's events: a switch, a failback, a drill, a preflight.

Each goes through mailha.node.events.emit (one syslog line; the webhooks
through a spool), with the settings of the pair's mailha.yml:
mailha_events_webhook_urls, mailha_events_webhook_secret_file (relative
to the secrets directory), mailha_events_timeout,
mailha_events_max_attempts, mailha_events_max_age_seconds and
mailha_events_backoff_max_seconds. The spool
is <state dir>/events. After spooling, the command starts the deliverer
(`python -m mailha.node events deliver --until-empty`) in a session of its
own and does not wait for it: the command ends when its work does, whatever
the receiver does. That deliverer retries with backoff until the spool is
empty; when one already works the spool, the new one leaves at once (the
running one takes the new event). The fields come from the audit record
(mailha.audit), the drill's report and the preflight's report.

Nothing here raises: an event that cannot be spooled costs one stderr line,
never the command's result.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from mailha.audit import Record
from mailha.node import events as node_events
from mailha.node import files
from mailha.pair import Pair

CONFIG_NAME = "events.conf"
SPOOL_NAME = "events"


def node_settings(pair: Pair) -> dict[str, Any]:
    """The deliverer's settings (mailha.node.events.DEFAULTS' keys) from the pair's."""
    settings = pair.settings
    secret = settings.get("mailha_events_webhook_secret_file", "")
    return dict(
        node_events.DEFAULTS,
        webhook_urls=list(settings.get("mailha_events_webhook_urls", [])),
        spool_directory=str(pair.state_dir / SPOOL_NAME),
        webhook_secret_file=str(pair.secrets_dir / secret) if secret else "",
        timeout=float(settings.get("mailha_events_timeout", node_events.DEFAULTS["timeout"])),
        max_attempts=int(settings.get("mailha_events_max_attempts", node_events.DEFAULTS["max_attempts"])),
        max_age_seconds=float(settings.get("mailha_events_max_age_seconds", node_events.DEFAULTS["max_age_seconds"])),
        backoff_max_seconds=float(
            settings.get("mailha_events_backoff_max_seconds", node_events.DEFAULTS["backoff_max_seconds"])
        ),
    )


def config_text(settings: dict[str, Any]) -> str:
    """events.conf for the deliverer the command starts."""
    lines = ["# Written by the mailha CLI from the pair's mailha.yml; rewritten at every event."]
    for key, value in settings.items():
        text = ",".join(value) if isinstance(value, list) else f"{value:g}" if isinstance(value, float) else value
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"


def start_deliverer(config_path: Path) -> None:
    """`deliver --until-empty` in a session of its own; not waited for."""
    subprocess.Popen(  # our own interpreter and module, no shell
        [sys.executable, "-m", "mailha.node", "events", "deliver", "--until-empty", "--config", str(config_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def publish(pair: Pair, kind: str, **fields: Any) -> dict | None:
    """Emit one event with the pair's settings and start the deliverer when
    it was spooled; the event, or None. Never raises."""
    try:
        settings = node_settings(pair)
        fields.setdefault("environment", pair.environment)
    except Exception as exc:  # an event never fails the command
        print(f"mailha: events: {exc}", file=sys.stderr)
        settings = dict(node_events.DEFAULTS)
    event = node_events.emit(kind, settings=settings, **fields)
    if event is None or not settings["webhook_urls"]:
        return event
    try:
        config_path = Path(settings["spool_directory"]).parent / CONFIG_NAME
        files.replace_file(str(config_path), config_text(settings), mode=0o600)
        start_deliverer(config_path)
    except OSError as exc:
        waits = f"event {event['id']} waits in the spool"
        print(f"mailha: events: the deliverer did not start ({exc}); {waits}", file=sys.stderr)
    return event


def switch_event(record: Record) -> tuple[str, dict[str, Any]]:
    """(kind, fields) of a failover's or failback's audit record."""
    details = record.details
    kind = "failback" if record.command == "failback" else "switch"
    return kind, {
        "command": record.command,
        "source": details.get("source"),
        "target": details.get("target"),
        "mode": details.get("mode"),
        "result": record.result,
        "seconds": record.seconds,
        "who": record.operator,
        "reason": record.reason,
    }


def publish_switch(pair: Pair, record: Record) -> dict | None:
    kind, fields = switch_event(record)
    return publish(pair, kind, **fields)


def _count(value: Any) -> int | None:
    if isinstance(value, list | tuple | set | dict):
        return len(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def drill_event(record: Record, report: dict | None) -> dict[str, Any]:
    """The drill event's fields: its audit record and, when it ran to the end, its report."""
    figures = (report or {}).get("figures", {}) if isinstance(report, dict) else {}
    verdict = (report or {}).get("verdict", {}) if isinstance(report, dict) else {}
    return {
        "scenario": record.details.get("scenario", record.reason),
        "result": record.result,
        "passed": bool(verdict.get("passed")) if verdict else False,
        "outage": figures.get("outage_seconds"),
        "lost": _count(figures.get("lost")),
        "duplicated": _count(figures.get("duplicated")),
        "seconds": record.seconds,
        "who": record.operator,
        "failure": record.details.get("failure"),
    }


def publish_drill(pair: Pair, record: Record, report: dict | None = None) -> dict | None:
    return publish(pair, "drill", **drill_event(record, report))


def preflight_event(exit_code: int, results: list, error: str | None = None) -> dict[str, Any]:
    """The preflight event's fields: the exit code and the count of each level."""
    counts = {level: 0 for level in ("pass", "warn", "fail")}
    for result in results:
        counts[result.level] = counts.get(result.level, 0) + 1
    fields: dict[str, Any] = {"exit_code": exit_code, **counts}
    if error:
        fields["error"] = error
    return fields


def publish_preflight(pair: Pair, exit_code: int, results: list, error: str | None = None) -> dict | None:
    return publish(pair, "preflight", **preflight_event(exit_code, results, error))
