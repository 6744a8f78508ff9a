"""The drill's report document: every figure, the timeline, targets and verdict.

build_report() turns what a drill recorded into one JSON-serialisable
document that holds everything the HTML page draws, so a report.json alone
can be rendered again (mailha.drill_report.render.write_report). Times in
the timeline are seconds from the fault (or from the first record when
there was none); epoch values are kept alongside.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailha.drill_report.outage_verdict import outage, verdict
from mailha.drill_report.reconciliation import _Attempt, _attempts, reconcile

SCHEMA = "mailha-drill-report/1"
SPLIT = "split"
NO_ANSWER = "no answer"  # a refused attempt no relay greeted (connection refused, timeout)
UNKNOWN_NODE = "unknown"  # an accepted attempt whose greeting named no node


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _holder_segments(samples: Sequence[tuple[float, str | None]], end: float) -> list[dict[str, Any]]:
    """Merge samples into [from, to) segments of one holder; the last lasts until `end`."""
    ordered = sorted(samples, key=lambda s: s[0])
    segments: list[dict[str, Any]] = []
    for index, (at, holder) in enumerate(ordered):
        until = ordered[index + 1][0] if index + 1 < len(ordered) else max(end, at)
        if segments and segments[-1]["holder"] == holder:
            segments[-1]["to"] = until
        else:
            segments.append({"from": at, "to": until, "holder": holder})
    return segments


def _series(views: Sequence[_Attempt], origin: float, start: float, end: float) -> dict[str, Any]:
    """Submissions per bucket, by result and node. Buckets are 1 s, wider for long drills."""
    bucket = max(1, math.ceil((end - start) / 300))
    count = max(1, math.ceil((end - start) / bucket))
    buckets = [
        {"from": round(start - origin + i * bucket, 3), "accepted": Counter(), "refused": Counter()}
        for i in range(count)
    ]
    for attempt in views:
        index = min(int((attempt.started - start) // bucket), count - 1)
        if attempt.accepted:
            buckets[index]["accepted"][attempt.node or UNKNOWN_NODE] += 1
        else:
            buckets[index]["refused"][attempt.node or NO_ANSWER] += 1
    return {
        "bucket_seconds": bucket,
        "buckets": [{**b, "accepted": dict(b["accepted"]), "refused": dict(b["refused"])} for b in buckets],
    }


def _window(outage_figures: Mapping[str, Any], origin: float) -> dict[str, Any]:
    """The outage the chart shades: the worst target's, which the headline figure is."""
    per_target = outage_figures["per_target"]
    target = max(per_target, key=lambda t: per_target[t]["seconds"], default=None)
    chosen = per_target[target] if target is not None and per_target[target]["start"] is not None else outage_figures
    return {
        "target": target if len(per_target) > 1 and chosen is not outage_figures else None,
        "seconds": chosen["seconds"],
        "recovered": chosen["recovered"],
        "start_offset": _offset(chosen["start"], origin),
        "end_offset": _offset(chosen["end"], origin),
    }


def _first_not_none(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _offset(at: float | None, origin: float) -> float | None:
    return None if at is None else round(at - origin, 3)


def build_report(
    *,
    attempts: Iterable[Any],
    delivered: Mapping[str, int],
    dkim: Mapping[str, bool],
    holder_samples: Sequence[tuple[float, str | None]],
    events: Sequence[Mapping[str, Any]],
    slos: Mapping[str, Any],
    config: Mapping[str, Any],
    scenario: str | None = None,
    started: float | None = None,
    fault_at: float | None = None,
    cut_in_flight: Iterable[str] = (),
) -> dict[str, Any]:
    """Every figure of a drill, its timeline, configuration, targets and verdict.

    cut_in_flight: Message-IDs with a delivery to the recipient side whose
    250 never reached a relay (reconciliation.cut_in_flight). A duplicate among them
    is explained; it still counts against max_duplicated.

    fault_at defaults to the fault_injected event. Times in the timeline,
    series and holder band are seconds relative to the fault (or to the
    first record when there was none); epoch values are kept alongside.
    """
    views = _attempts(attempts)
    events = sorted(({"name": str(e["name"]), "at": float(e["at"])} for e in events), key=lambda e: e["at"])
    event_at = {e["name"]: e["at"] for e in reversed(events)}  # the first of each name
    if fault_at is None:
        fault_at = event_at.get("fault_injected")
    samples = [(float(at), holder) for at, holder in holder_samples]
    times = [a.started for a in views] + [a.finished for a in views] + [e["at"] for e in events]
    times += [at for at, _ in samples]
    first = min(times, default=started or time.time())
    last = max(times, default=first)
    origin = fault_at if fault_at is not None else first

    reconciliation = reconcile(views, delivered)
    cut = set(cut_in_flight)
    reconciliation["duplicated_cut_in_flight"] = sorted(set(reconciliation["duplicated"]) & cut)
    outage_figures = outage(views, fault_at)
    checked = {msg_id: bool(ok) for msg_id, ok in dkim.items()}
    unsigned = sorted(msg_id for msg_id, ok in checked.items() if not ok)
    holders = _holder_segments(samples, last)
    split_seconds = sum(s["to"] - s["from"] for s in holders if s["holder"] == SPLIT)
    nobody_seconds = sum(s["to"] - s["from"] for s in holders if s["holder"] is None)

    def since_fault(name: str) -> float | None:
        at = event_at.get(name)
        return None if at is None or fault_at is None else round(at - fault_at, 3)

    figures = {
        "submitted": reconciliation["submitted"],
        "acknowledged": reconciliation["acknowledged"],
        "refused": reconciliation["refused"],
        "no_reply": reconciliation["no_reply"],
        "delivered": reconciliation["delivered"],
        "lost": len(reconciliation["lost"]),
        "duplicated": len(reconciliation["duplicated"]),
        "duplicated_cut_in_flight": len(reconciliation["duplicated_cut_in_flight"]),
        "extra_copies": reconciliation["extra_copies"],
        "unexpected": len(reconciliation["unexpected"]),
        "foreign": len(reconciliation["foreign"]),
        "outage_seconds": outage_figures["worst_target_seconds"],
        "outage_all_targets_seconds": outage_figures["seconds"],
        "refused_by_target": {t: o["refused"] for t, o in outage_figures["per_target"].items()},
        "recovered": outage_figures["recovered_everywhere"],
        "failed_during_outage": outage_figures["failed"],
        "failed_after_fault": outage_figures["failed_after_fault"],
        "dkim_checked": len(checked),
        "dkim_valid": len(checked) - len(unsigned),
        "unsigned": len(unsigned),
        "split_seconds": round(split_seconds, 3),
        "nobody_holds_seconds": round(nobody_seconds, 3),
        "detection_seconds": since_fault("failure_detected"),
        "floating_ip_moved_seconds": since_fault("floating_ip_moved"),
        "first_accept_seconds": _first_not_none(
            since_fault("first_accept_after_fault"),
            since_fault("first_accept_from_standby"),
            _offset(outage_figures["end"], fault_at) if fault_at is not None else None,
        ),
        "balancer_switched_seconds": since_fault("balancer_switched"),
        "restored_seconds": since_fault("restored"),
    }
    passed, breaches = verdict(figures, slos)
    return _jsonable(
        {
            "schema": SCHEMA,
            "scenario": scenario or config.get("scenario"),
            "started": _iso(started if started is not None else first),
            "finished": _iso(last),
            "generated": _iso(time.time()),
            "verdict": {"passed": passed, "breaches": breaches},
            "slos": dict(slos),
            "figures": figures,
            "reconciliation": {**reconciliation, "unsigned": unsigned},
            "outage": {
                **outage_figures,
                "start_offset": _offset(outage_figures["start"], origin),
                "end_offset": _offset(outage_figures["end"], origin),
                "window": _window(outage_figures, origin),
            },
            "timeline": {
                "origin": origin,
                "origin_is_fault": fault_at is not None,
                "first_offset": round(first - origin, 3),
                "last_offset": round(last - origin, 3),
                "events": [{**e, "iso": _iso(e["at"]), "offset": _offset(e["at"], origin)} for e in events],
                "holders": [
                    {"holder": s["holder"], "from": _offset(s["from"], origin), "to": _offset(s["to"], origin)}
                    for s in holders
                ],
                "series": _series(views, origin, first, last),
            },
            "config": dict(config),
            "attempts": [
                {
                    "seq": a.seq,
                    "message_id": a.message_id,
                    "target": a.target,
                    "started": a.started,
                    "finished": a.finished,
                    "code": a.code,
                    "reply": a.reply,
                    "node": a.node,
                }
                for a in views
            ],
        }
    )
