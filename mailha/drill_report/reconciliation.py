"""What the relays acknowledged against what the recipient side stored.

Attempts come as `mailha.traffic.Attempt`, an object with the same fields,
or a dict read back from report.json; `_attempts` reads any of them into
one shape, in the order they started.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from mailha.traffic import Attempt

# One attempt as traffic.py records it; dicts (from report.json) are read into it.
_Attempt = Attempt

# What Postfix's smtp client logs when a connection broke between sending
# the message and reading the reply (RFC 1047).
MAY_BE_SENT_TWICE = "message may be sent more than once"


def _attempt(item: Any) -> _Attempt:
    """An Attempt, an Attempt-like object or a dict, as one read-only shape."""
    get = item.get if isinstance(item, Mapping) else lambda name, default=None: getattr(item, name, default)
    code = get("code")
    return _Attempt(
        seq=int(get("seq")),
        message_id=str(get("message_id")),
        target=str(get("target")),
        started=float(get("started")),
        finished=float(get("finished")),
        code=int(code) if code is not None else None,
        reply=str(get("reply", "") or ""),
        node=get("node"),
    )


def _attempts(attempts: Iterable[Any]) -> list[_Attempt]:
    return sorted((_attempt(a) for a in attempts), key=lambda a: (a.started, a.seq))


def _count(value: Any) -> int:
    """A figure given as a count or as the ids it counts."""
    return len(value) if isinstance(value, list | tuple | set | frozenset) else int(value)


def cut_in_flight(
    relay_logs: Iterable[str], delivered: Mapping[str, int], internal_addresses: Iterable[str]
) -> set[str]:
    """Message-IDs the recipient side holds more copies of than the relays
    saw confirmed: a delivery whose 250 never reached a relay (RFC 1047).

    relay_logs: each relay's Postfix log since the drill began (journalctl
    -o cat, mail facility). A copy is confirmed by a `status=sent` line to
    an address outside internal_addresses (the relays and the floating IP:
    a hand-over is not a delivery). Two ways a copy goes unconfirmed:
    the relay logged "message may be sent more than once" (its connection
    broke after the data went out), or it logged nothing because it was
    stopped between the recipient's 250 and its own record (host-down).
    A relay's log that lost its last lines to the stop makes a confirmed
    copy look unconfirmed; the figure still counts against max_duplicated.
    """
    internal = {f"[{address}]" for address in internal_addresses}
    confirmed: Counter = Counter()
    flagged: set[str] = set()
    for log in relay_logs:
        ids: dict[str, str] = {}
        sent: Counter = Counter()
        cut: set[str] = set()
        for line in log.splitlines():
            queue_id, _, rest = line.partition(": ")
            if rest.startswith("message-id="):
                ids[queue_id] = rest.removeprefix("message-id=").strip()
            elif MAY_BE_SENT_TWICE in rest:
                cut.add(queue_id)
            elif "status=sent" in rest and rest.startswith("to=<"):
                relay = rest.partition("relay=")[2].partition(",")[0]
                if not any(address in relay for address in internal):
                    sent[queue_id] += 1
        flagged |= {ids[q] for q in cut if q in ids}
        for queue_id, count in sent.items():
            if queue_id in ids:
                confirmed[ids[queue_id]] += count
    duplicated = {mid for mid, copies in delivered.items() if copies > 1}
    return (flagged & duplicated) | {mid for mid in duplicated if delivered[mid] > confirmed[mid]}


def reconcile(attempts: Iterable[Any], delivered: Mapping[str, int]) -> dict[str, Any]:
    """Compare what the relays acknowledged with what the recipient side stored.

    lost: acknowledged (250 after DATA) but never stored. duplicated: stored
    more than once. unexpected: stored although the client never saw a 250
    (e.g. a timeout after the relay had queued it): not loss, but the client
    will probably send it again. foreign: stored ids this drill never sent.
    """
    views = _attempts(attempts)
    acknowledged = {a.message_id for a in views if a.accepted}
    submitted_ids = {a.message_id for a in views}
    stored = {msg_id: int(n) for msg_id, n in delivered.items() if int(n) > 0}
    no_reply = sum(1 for a in views if a.code is None)
    return {
        "submitted": len(views),
        "acknowledged": len(acknowledged),
        "refused": sum(1 for a in views if not a.accepted),
        "no_reply": no_reply,
        "delivered": len(stored.keys() & submitted_ids),
        "lost": sorted(acknowledged - stored.keys()),
        "duplicated": sorted(msg_id for msg_id in stored.keys() & submitted_ids if stored[msg_id] > 1),
        "extra_copies": sum(n - 1 for msg_id, n in stored.items() if msg_id in submitted_ids and n > 1),
        "unexpected": sorted((stored.keys() & submitted_ids) - acknowledged),
        "foreign": sorted(stored.keys() - submitted_ids),
    }
