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
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mailha.errors import BadInput, MailhaError


def state_dir(environment: str) -> Path:
    configured = os.environ.get("MAILHA_STATE_DIR")
    return Path(configured) if configured else Path("/var/lib/mailha") / environment


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


class AuditLog:
    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / "history.jsonl"

    def append(self, record: Record) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        with open(self.path, "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(record.to_json() + "\n")

    def read(self) -> list[dict]:
        """Records, newest first. A damaged line is reported, not skipped silently."""
        if not self.path.exists():
            return []
        records = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise BadInput(f"{self.path} line {number} is not JSON; move the file aside to continue") from None
        return list(reversed(records))


@contextlib.contextmanager
def switch_lock(directory: Path, wait: float = 0.0, name: str = "switch.lock") -> Iterator[None]:
    """Hold the lock that lets one failover/failback (or, by name, one drill) run at a time."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o750)
    path = directory / name
    with open(path, "a+", encoding="utf-8") as handle:
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
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
