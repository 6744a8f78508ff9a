"""Run the project's playbooks through ansible-runner, streaming progress.

Tasks named "Step: ..." or "Precondition: ..." are the units an operator
follows: each is reported when it ends, with its duration and result, and
kept for the audit log. Everything else runs quietly.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ansible_runner

from mailha.audit import Step
from mailha.errors import MailhaError

REPORTED_PREFIXES = ("Step:", "Precondition:")
OUTPUT_PREFIX = "Report:"


@dataclass
class HostReport:
    """A "Report: ..." task's standard output on one host, and when the task
    ran there by the controller's clock (ansible-runner's start and end)."""

    stdout: str
    started: datetime | None = None
    ended: datetime | None = None


@dataclass
class PlaybookResult:
    status: str
    rc: int
    steps: list[Step] = field(default_factory=list)
    failure: str = ""
    unreachable: list[str] = field(default_factory=list)
    # Standard output of the tasks named "Report: ...", by task name: what a
    # playbook hands back to the CLI (a queue listing, for example).
    reports: dict[str, str] = field(default_factory=dict)
    # The same, per host: {task name: {host: HostReport}}, for a task every host runs.
    host_reports: dict[str, dict[str, HostReport]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0


def _message(res: dict[str, Any]) -> str:
    # A loop says only "One or more items failed": the first failed item says why.
    failed_items = [r for r in res.get("results", []) if isinstance(r, dict) and r.get("failed")]
    if failed_items:
        item = failed_items[0]
        return f"{item.get('item', '?')}: {_message(item)}"
    # A failed command says why on stderr; its "msg" is only "non-zero return code".
    keys = ("stderr", "msg", "stdout") if res.get("msg") == "non-zero return code" else ("msg", "stderr", "stdout")
    for key in keys:
        value = res.get(key)
        if value:
            text = " ".join(str(value).split())
            return text[:400]
    return "failed"


def _event_time(value: Any) -> datetime | None:
    """ansible-runner's ISO 8601 times (UTC), aware; None when absent or unreadable."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# on_retry(task, host, attempt, retries, result): a task retried `until` a
# condition holds (waits that can take minutes), after each failed attempt.
RetryCallback = Callable[[str, str, int, int, dict[str, Any]], None]


class _Progress:
    def __init__(self, on_step: Callable[[Step, str], None] | None, on_retry: RetryCallback | None = None):
        self.on_step = on_step
        self.on_retry = on_retry
        # {step name: (its task, when it started)}: a playbook that imports
        # another (isolate.yml, switch.yml) can run two tasks of one name.
        self.started: dict[str, tuple[str, float]] = {}
        self.steps: dict[str, Step] = {}
        self.failure = ""
        self.unreachable: list[str] = []
        self.reports: dict[str, str] = {}
        self.host_reports: dict[str, dict[str, HostReport]] = {}

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {})
        name = (data.get("task") or "").strip()
        reported = name.startswith(REPORTED_PREFIXES)
        if kind == "playbook_on_task_start" and reported:
            task = str(data.get("task_uuid") or name)
            if self.started.get(name, ("", 0.0))[0] != task:
                self.started[name] = (task, time.monotonic())
        elif kind == "runner_retry" and reported and self.on_retry:
            res = data.get("res", {}) or {}
            attempt, retries = res.get("attempts"), res.get("retries")
            if isinstance(attempt, int) and isinstance(retries, int):
                self.on_retry(name, data.get("host", "?"), attempt, retries, res)
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable"):
            host = data.get("host", "?")
            res = data.get("res", {}) or {}
            if kind == "runner_on_unreachable":
                self.unreachable.append(host)
            failed = kind == "runner_on_failed" and not data.get("ignore_errors")
            if failed and not self.failure:
                self.failure = f"{name or 'a task'} on {host}: {_message(res)}"
            if reported:
                self._record(name, kind, host, res, failed)
            if kind == "runner_on_ok" and name.startswith(OUTPUT_PREFIX):
                self.reports[name] = str(res.get("stdout", ""))
                self.host_reports.setdefault(name, {})[host] = HostReport(
                    str(res.get("stdout", "")), _event_time(data.get("start")), _event_time(data.get("end"))
                )
        return True

    def _record(self, name: str, kind: str, host: str, res: dict, failed: bool) -> None:
        result = {"runner_on_ok": "ok", "runner_on_skipped": "skipped"}.get(kind, "failed")
        if kind == "runner_on_failed" and not failed:
            result = "ok"
        step = self.steps.get(name)
        if step is None:
            step = self.steps[name] = Step(name=name, result=result)
        elif result == "failed" or step.result == "skipped":
            step.result = result
        now = time.monotonic()
        step.seconds = round(now - self.started.get(name, ("", now))[1], 2)
        if result == "failed":
            step.detail = f"{host}: {_message(res)}"
        if self.on_step:
            self.on_step(step, host)


def run_playbook(
    playbook: Path,
    inventory: Path,
    extravars: dict[str, Any] | None = None,
    tags: str | None = None,
    on_step: Callable[[Step, str], None] | None = None,
    on_retry: RetryCallback | None = None,
    limit: str | None = None,
) -> PlaybookResult:
    """Run one playbook (on the hosts `limit` names, as --limit; default all); never
    raises for a failed play, only for a runner that cannot start."""
    repo = playbook.resolve().parent.parent
    bin_dir = str(Path(sys.executable).parent)
    env = {
        "ANSIBLE_CONFIG": str(repo / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(repo / "lab" / "containers.conf")),
    }
    progress = _Progress(on_step, on_retry)
    with tempfile.TemporaryDirectory(prefix="mailha-runner-") as private:
        try:
            result = ansible_runner.run(
                private_data_dir=private,
                playbook=str(playbook.resolve()),
                inventory=str(inventory.resolve()),
                extravars=extravars or {},
                tags=tags,
                limit=limit,
                envvars=env,
                quiet=True,
                event_handler=progress,
                settings={"suppress_ansible_output": True},
            )
        except Exception as exc:  # ansible-runner raises bare exceptions for setup problems
            raise MailhaError(f"could not start ansible-playbook: {exc}") from None
    failure = progress.failure
    if not failure and (result.status != "successful" or result.rc != 0):
        # A syntax error or a missing file fails before any task runs.
        failure = f"ansible-playbook {playbook.name} ended {result.status} (rc {result.rc}) before any task failed"
    return PlaybookResult(
        status=result.status,
        rc=result.rc,
        steps=list(progress.steps.values()),
        failure=failure,
        unreachable=sorted(set(progress.unreachable)),
        reports=progress.reports,
        host_reports=progress.host_reports,
    )
