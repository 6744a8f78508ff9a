"""A relay's queue as an operator inspects it before deciding to release it.

Parsing is a pure function over `postcat -e` output (tested with crafted
text); `inspect` runs playbooks/queue-inspect.yml, which reads the queue
files directly, so it works on an isolated relay whose Postfix is stopped.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from mailha import project
from mailha.errors import MailhaError
from mailha.pair import Pair
from mailha.runner import run_playbook

HEADER = re.compile(r"^\*\*\* ENVELOPE RECORDS (\S+) \*\*\*$")
QUEUES = ("incoming", "active", "deferred", "hold")


@dataclass
class QueuedMessage:
    queue: str
    queue_id: str
    sender: str
    recipients: int
    size: int
    arrival: str  # ISO 8601, UTC
    age_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def parse_postcat(text: str, now: datetime | None = None) -> list[QueuedMessage]:
    """One QueuedMessage per envelope in `postcat -e` output; a truncated envelope is skipped."""
    now = now or datetime.now(UTC)
    messages: list[QueuedMessage] = []
    current: dict | None = None

    def close() -> None:
        if current and current.get("arrival") is not None:
            arrival = current["arrival"]
            messages.append(
                QueuedMessage(
                    queue=current["queue"],
                    queue_id=current["queue_id"],
                    sender=current.get("sender", ""),
                    recipients=current.get("recipients", 0),
                    size=current.get("size", 0),
                    arrival=arrival.isoformat().replace("+00:00", "Z"),
                    age_seconds=round(max(0.0, (now - arrival).total_seconds()), 1),
                )
            )

    for line in text.splitlines():
        header = HEADER.match(line.strip())
        if header:
            close()
            queue, _, queue_id = header.group(1).partition("/")
            current = {"queue": queue, "queue_id": queue_id.rsplit("/", 1)[-1]}
            continue
        if current is None or ":" not in line:
            continue
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "message_size":
            current["size"] = int(value.split()[0]) if value.split() and value.split()[0].isdigit() else 0
        elif key == "message_arrival_time":
            current["arrival"] = _arrival(value)
        elif key == "sender":
            current["sender"] = value or "<>"
        elif key == "recipient":
            current["recipients"] = current.get("recipients", 0) + 1
    close()
    return messages


def _arrival(value: str) -> datetime | None:
    # postcat prints ctime() in the relay's local time; the lab and the
    # role's hosts run in UTC.
    try:
        return datetime.strptime(" ".join(value.split()), "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC)
    except ValueError:
        return None


def inspect(pair: Pair, node: str) -> list[QueuedMessage]:
    pair.node(node)
    result = run_playbook(project.playbook("queue-inspect.yml"), pair.inventory_path, {"mailha_queue_node": node})
    if not result.ok:
        if result.unreachable:
            raise MailhaError(f"{node} is unreachable; its queue cannot be read")
        raise MailhaError(f"could not read the queue of {node}: {result.failure}")
    return parse_postcat(result.reports.get("Report: queue envelopes", ""))


def render_table(node: str, messages: list[QueuedMessage]) -> str:
    if not messages:
        return f"the queue of {node} is empty"
    lines = [f"{'queue':<9} {'id':<14} {'rcpts':>5} {'bytes':>8} {'age':>8}  sender"]
    for m in sorted(messages, key=lambda m: m.age_seconds, reverse=True):
        lines.append(f"{m.queue:<9} {m.queue_id:<14} {m.recipients:>5} {m.size:>8} {m.age_seconds:>7.0f}s  {m.sender}")
    total = sum(m.recipients for m in messages)
    lines.append(f"{len(messages)} messages, {total} recipients on {node}")
    return "\n".join(lines)
