"""The audit log and the switch lock.

Every failover, failback and drill appends one JSON object per line to
`<state dir>/history.jsonl`: time, operator, command, reason, result and
each step with its duration and result. `mailha history` reads it back.
The state directory is `$MAILHA_STATE_DIR`, or `/var/lib/mailha/<environment>`.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import math
import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from mailha import names
from mailha.errors import BadInput, MailhaError

STATE_ROOT = Path("/var/lib/mailha")


def state_dir(environment: str) -> Path:
    """$MAILHA_STATE_DIR, else /var/lib/mailha/<environment>; BadInput when it cannot be a directory.

    The environment name becomes a path component, so it must match
    names.ENVIRONMENT (no '/', no '..'): the directory can never leave STATE_ROOT."""
    configured = os.environ.get("MAILHA_STATE_DIR")
    if configured:
        path = Path(configured)
    else:
        rule = names.environment_problem(environment)
        if rule is not None:
            raise BadInput(
                f"environment {names.shown(environment)} cannot name a state directory: it {rule}; "
                "regenerate the inventory with 'mailha inventory'"
            )
        path = STATE_ROOT / environment
    check_directory(path, "state directory", "set MAILHA_STATE_DIR to a directory")
    return path


def check_directory(path: Path, what: str, remedy: str) -> None:
    """BadInput unless `path` is a directory or can become one (its nearest existing ancestor is a directory)."""
    for candidate in (path, *path.parents):
        try:
            mode = candidate.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise BadInput(f"{what} {path}: cannot look at {candidate}: {exc.strerror}; {remedy}") from None
        if not stat.S_ISDIR(mode):
            raise BadInput(f"{what} {path} cannot be used: {candidate} is not a directory; {remedy}")
        return


def make_state_dir(directory: Path) -> None:
    """Create the state directory (mode 0750) or say in one line why it cannot be."""
    check_directory(directory, "state directory", "set MAILHA_STATE_DIR to a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise BadInput(
            f"cannot create the state directory {directory}: {exc.strerror}; "
            "create it for this user or set MAILHA_STATE_DIR to a directory you can write"
        ) from None


def warn(text: str) -> None:
    click.echo(f"warning: {text}", err=True)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def operator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass
class Step:
    name: str
    result: str = "pending"  # ok, failed, skipped
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Record:
    command: str
    reason: str
    environment: str
    started: str = field(default_factory=now_iso)
    operator: str = field(default_factory=operator)
    finished: str = ""
    result: str = "running"
    seconds: float = 0.0
    steps: list[Step] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def parse_time(value: object) -> datetime | None:
    """An audit timestamp (ISO 8601 with a zone, as now_iso writes it), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


# A record dated further ahead than this is damaged, not a clock a little fast.
FUTURE_TOLERANCE = timedelta(days=1)
REQUIRED_TEXT = ("command", "started", "operator", "result")


def record_problem(record: object, now: datetime) -> str | None:
    """Why a decoded history line cannot be used, or None: the fields readers index must be there and typed."""
    if not isinstance(record, dict):
        return f"a JSON {names.json_kind(record)}, not an object"
    for key in REQUIRED_TEXT:
        if key not in record:
            return f"the key {key!r} is missing"
        if not isinstance(record[key], str) or not record[key]:
            return f"{key} is {names.shown(record[key], 40)}, not a text"
    for key in ("started", "finished"):
        value = record.get(key, "")
        if key == "finished" and value == "":
            continue
        when = parse_time(value)
        if when is None:
            return f"{key} is {names.shown(value, 40)}, not a timestamp like 2025-01-31T12:00:00.000Z"
        if when > now + FUTURE_TOLERANCE:
            return f"{key} {value} is in the future"
    if not _number(record.get("seconds", 0)):
        return f"seconds is {names.shown(record.get('seconds'), 40)}, not a number"
    if not isinstance(record.get("reason", ""), str | None):
        return "reason is not a text"
    if not isinstance(record.get("details", {}), dict):
        return "details is not an object"
    steps = record.get("steps", [])
    if not isinstance(steps, list):
        return "steps is not an array"
    for number, step in enumerate(steps, 1):
        if not (
            isinstance(step, dict)
            and isinstance(step.get("name"), str)
            and isinstance(step.get("result"), str)
            and _number(step.get("seconds"))
        ):
            return f"step {number} is not an object with a name, a result and seconds"
    return None


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def written_at(record: dict) -> datetime:
    """When a checked record was appended: it is written once the command finished."""
    return parse_time(record.get("finished")) or parse_time(record["started"])


@dataclass
class LastSwitch:
    """The last successful failover or failback, as the failback hold-down counts it."""

    when: datetime
    damaged_line: int | None = None  # a damaged line counted as a switch, so the hold-down fails closed

    def age(self) -> float:
        return max(0.0, (datetime.now(UTC) - self.when).total_seconds())


class AuditLog:
    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / "history.jsonl"

    def append(self, record: Record) -> None:
        make_state_dir(self.directory)
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                handle.write(record.to_json() + "\n")
        except OSError as exc:
            raise MailhaError(
                f"cannot write the audit record of this {record.command} ({record.result}) to {self.path}: "
                f"{exc.strerror}"
            ) from None

    def scan(self, on_damage: Callable[[str], None] = warn) -> list[tuple[int, dict | None]]:
        """(line number, record) in file order; None for a damaged line, which `on_damage` hears about."""
        try:
            data = self.path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise BadInput(f"cannot read the history {self.path}: {exc.strerror}") from None
        now = datetime.now(UTC)
        lines: list[tuple[int, dict | None]] = []
        for number, raw in enumerate(data.split(b"\n"), 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                problem = record_problem(record, now)
            except UnicodeDecodeError as exc:
                problem = f"not UTF-8 (byte {exc.start + 1})"
            except (ValueError, RecursionError):
                problem = "not JSON"
            if problem is not None:
                on_damage(f"{self.path} line {number} skipped: {problem}")
                lines.append((number, None))
            else:
                lines.append((number, record))
        return lines

    def read(self, on_damage: Callable[[str], None] = warn) -> list[dict]:
        """Readable records, newest first; each damaged line is skipped with a warning naming it."""
        return [record for _number, record in reversed(self.scan(on_damage)) if record is not None]

    def last_switch(self, on_damage: Callable[[str], None] = warn) -> LastSwitch | None:
        """The last successful failover or failback, for the failback hold-down; None when there was none.

        Fails closed: a damaged line newer than every readable switch may have
        been a switch, so it counts as one written at the latest time it can
        have been: when the next readable record was written, or, for the last
        line, the file's modification time."""
        lines = self.scan(on_damage)
        if not lines:
            return None
        try:
            latest = datetime.fromtimestamp(self.path.stat().st_mtime, UTC)
        except OSError:
            latest = datetime.now(UTC)
        for number, record in reversed(lines):
            if record is None:
                return LastSwitch(latest, damaged_line=number)
            if record["command"] in ("failover", "failback") and record["result"] == "ok":
                return LastSwitch(written_at(record))
            latest = written_at(record)
        return None


# Locks this process holds, by path: a drill holds the switch lock for its
# whole run, and the switches it runs itself take it again without waiting.
_HELD: dict[Path, int] = {}


@contextlib.contextmanager
def switch_lock(directory: Path, wait: float = 0.0, name: str = "switch.lock") -> Iterator[None]:
    """Hold the lock that lets one failover/failback (or, by name, one drill) run at a time.

    Re-entrant within a process: a holder that takes it again goes on at once."""
    make_state_dir(directory)
    path = (directory / name).resolve()
    if _HELD.get(path):
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    try:
        # errors="replace": the holder's line is only shown, whatever bytes it holds
        handle = open(path, "a+", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise BadInput(
            f"cannot open the lock {path}: {exc.strerror}; set MAILHA_STATE_DIR to a directory you can write"
        ) from None
    with handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another mailha command"
                    what = "a drill" if name == "drill.lock" else "a switch"
                    raise MailhaError(
                        f"{what} is already running ({holder}); wait for it, or retry with --wait SECONDS"
                    ) from None
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} {operator()} since {now_iso()}\n")
        handle.flush()
        _HELD[path] = 1
        try:
            yield
        finally:
            _HELD.pop(path, None)
            handle.seek(0)
            handle.truncate()
