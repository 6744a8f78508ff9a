"""What a drill measured, judged against its targets, as JSON, HTML and text.

Pure functions over the data a drill records (mailha.drill):

- attempts: every submission (`mailha.traffic.Attempt`, or a dict with the
  same fields): seq, message_id, target "host:port", started and finished
  (epoch seconds), code (None when no reply), reply, node (the relay that
  greeted, or None);
- delivered: message_id -> copies stored at the recipient side;
- dkim: message_id -> whether the stored copy carries a valid signature;
- holder_samples: (epoch, holder) where holder is a node name, None (nobody
  holds the floating IP) or "split" (both do);
- events: {"name", "at"} such as fault_injected, failure_detected,
  floating_ip_moved, first_accept_after_fault, balancer_switched, restored;
  any may be missing;
- slos: {"max_outage_seconds", "max_lost", "max_duplicated"} and optionally
  "max_unsigned" and "max_split_seconds".

build_report() turns them into one JSON-serialisable document that holds
everything the HTML page draws, so a report.json alone can be rendered again
with write_report().
"""

from __future__ import annotations

import html
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailha.traffic import Attempt

SCHEMA = "mailha-drill-report/1"
SPLIT = "split"
NO_ANSWER = "no answer"  # a refused attempt no relay greeted (connection refused, timeout)
UNKNOWN_NODE = "unknown"  # an accepted attempt whose greeting named no node
KNOWN_SLOS = ("max_outage_seconds", "max_lost", "max_duplicated", "max_unsigned", "max_split_seconds")


# One attempt as traffic.py records it; dicts (from report.json) are read into it.
_Attempt = Attempt


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
    return len(value) if isinstance(value, list | tuple | set | frozenset) else int(value)


# --- reconciliation -------------------------------------------------------


# What Postfix's smtp client logs when a connection broke between sending
# the message and reading the reply (RFC 1047).
MAY_BE_SENT_TWICE = "message may be sent more than once"


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


# --- outage -----------------------------------------------------------------


def _first_outage(views: Sequence[_Attempt], fault_at: float | None) -> dict[str, Any]:
    """First failure at/after the fault and the first acceptance after it.

    An attempt still in flight when the fault was injected counts (it failed
    because of it), but the outage never starts before the fault itself.
    """
    since = -math.inf if fault_at is None else fault_at
    first_failure = next((a for a in views if not a.accepted and a.finished >= since), None)
    if first_failure is None:
        return {"seconds": 0.0, "start": None, "end": None, "recovered": True, "failed": 0}
    start = max(first_failure.started, since)
    recovery = next((a for a in views if a.accepted and a.started > first_failure.started), None)
    if recovery is None:
        # Mail never came back while we watched: a lower bound.
        end = max(a.finished for a in views)
        failed = sum(1 for a in views if not a.accepted and a.started >= first_failure.started)
        return {"seconds": round(end - start, 3), "start": start, "end": None, "recovered": False, "failed": failed}
    failed = sum(1 for a in views if not a.accepted and first_failure.started <= a.started < recovery.started)
    return {
        "seconds": round(max(recovery.started - start, 0.0), 3),
        "start": start,
        "end": recovery.started,
        "recovered": True,
        "failed": failed,
    }


def outage(attempts: Iterable[Any], fault_at: float | None) -> dict[str, Any]:
    """The outage clients saw: from the start of the first attempt that was not
    accepted (at or after `fault_at`) to the start of the first accepted one
    after it, in seconds; 0.0 when nothing failed.

    `seconds` takes all targets together; `per_target` repeats it for each
    target alone, and `worst_target_seconds` is the longest of those, which
    is what a client using only that target saw (with one target, the same).
    `failed_after_fault` counts every failure after the fault, including
    any later outage (a failback).
    """
    views = _attempts(attempts)
    overall = _first_outage(views, fault_at)
    by_target: dict[str, list[_Attempt]] = defaultdict(list)
    for attempt in views:
        by_target[attempt.target].append(attempt)
    per_target = {target: _first_outage(items, fault_at) for target, items in sorted(by_target.items())}
    for target, items in by_target.items():
        # Every refusal a client of this target saw, the fault's or a failback's.
        per_target[target]["refused"] = sum(1 for a in items if not a.accepted)
    since = -math.inf if fault_at is None else fault_at
    return {
        **overall,
        "fault_at": fault_at,
        "worst_target_seconds": max((o["seconds"] for o in per_target.values()), default=0.0),
        "recovered_everywhere": all(o["recovered"] for o in per_target.values()),
        "failed_after_fault": sum(1 for a in views if not a.accepted and a.finished >= since),
        "per_target": per_target,
    }


# --- verdict ---------------------------------------------------------------


_COUNTED_SLOS = {
    "max_lost": ("lost", "acknowledged message(s) never arrived"),
    "max_duplicated": ("duplicated", "message(s) arrived more than once"),
    "max_unsigned": ("unsigned", "delivered message(s) checked without a valid DKIM signature"),
}


def _slo_breach(slo: str, limit: Any, figures: Mapping[str, Any]) -> str | None:
    """The breach of one target, or None when it is met (or its figure is absent)."""
    if slo == "max_outage_seconds":
        seconds = float(figures["outage_seconds"])
        return f"outage {seconds:.2f} s exceeds max_outage_seconds {float(limit):g} s" if seconds > limit else None
    if slo == "max_split_seconds":
        seconds = float(figures.get("split_seconds", 0.0))
        if seconds > float(limit):
            return f"both relays held the floating IP for {seconds:.2f} s (max {float(limit):g} s, {slo})"
        return None
    figure, what = _COUNTED_SLOS[slo]
    if figure in figures and _count(figures[figure]) > int(limit):
        return f"{_count(figures[figure])} {what} (max {int(limit)}, {slo})"
    return None


def verdict(figures: Mapping[str, Any], slos: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """(passed, breaches). Each breach is one sentence an operator can act on.

    figures: outage_seconds, lost, duplicated (counts or lists of ids), and
    optionally recovered, submitted, unsigned, split_seconds. Mail that never
    came back, or no traffic at all, fails whatever the targets. An SLO key
    not in KNOWN_SLOS is refused: a misspelt target must not pass silently.
    """
    unknown = sorted(set(slos) - set(KNOWN_SLOS))
    if unknown:
        raise ValueError(f"unknown SLO {', '.join(unknown)}; known: {', '.join(KNOWN_SLOS)}")
    breaches: list[str] = []
    if "submitted" in figures and _count(figures["submitted"]) == 0:
        breaches.append("no submission was recorded: the drill measured nothing")
    if figures.get("recovered") is False:
        breaches.append(
            f"mail did not come back: nothing was accepted in the {float(figures['outage_seconds']):.2f} s "
            "after the first failure"
        )
    breaches += [b for slo in KNOWN_SLOS if slo in slos and (b := _slo_breach(slo, slos[slo], figures))]
    return not breaches, breaches


# --- the report ------------------------------------------------------------


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
    250 never reached a relay (see cut_in_flight()). A duplicate among them
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


# --- rendering -------------------------------------------------------------

PALETTE = ("#2b6cb0", "#2f855a", "#6b46c1", "#b7791f", "#2c7a7b", "#97266d")
REFUSED_COLOUR = "#c53030"
NOBODY_COLOUR = "#a0aec0"


def _nodes(report: Mapping[str, Any]) -> list[str]:
    names = set()
    for bucket in report["timeline"]["series"]["buckets"]:
        names.update(bucket["accepted"])
        names.update(n for n in bucket["refused"] if n != NO_ANSWER)
    names.update(s["holder"] for s in report["timeline"]["holders"] if s["holder"] not in (None, SPLIT))
    names.discard(UNKNOWN_NODE)
    return sorted(names) + ([UNKNOWN_NODE] if any(UNKNOWN_NODE in b["accepted"] for b in _buckets(report)) else [])


def _buckets(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return report["timeline"]["series"]["buckets"]


def _colours(report: Mapping[str, Any]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(_nodes(report))}


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f} s"


def _duplicated_text(f: Mapping[str, Any]) -> str:
    cut = f.get("duplicated_cut_in_flight", 0)
    return str(f["duplicated"]) + (f" ({cut} cut in flight: 250 lost)" if cut else "")


def _figure_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, target) rows shared by the HTML page and the terminal summary."""
    f, slos = report["figures"], report["slos"]

    def target(key: str, unit: str = "") -> str:
        if key not in slos:
            return ""
        met = _slo_breach(key, slos[key], f) is None and (key != "max_outage_seconds" or f["recovered"])
        return f"≤ {slos[key]:g}{unit} {'met' if met else 'BREACHED'}"

    outage_text = _seconds(f["outage_seconds"]) + ("" if f["recovered"] else " (not recovered)")
    return [
        ("outage seen by clients", outage_text, target("max_outage_seconds", " s")),
        ("acknowledged, never arrived (lost)", str(f["lost"]), target("max_lost")),
        ("arrived more than once (duplicated)", _duplicated_text(f), target("max_duplicated")),
        ("arrived without a 250 (unexpected)", str(f["unexpected"]), ""),
        ("submitted", str(f["submitted"]), ""),
        ("acknowledged (250)", str(f["acknowledged"]), ""),
        ("refused or failed", f"{f['refused']} ({f['no_reply']} without reply)", ""),
        ("delivered", str(f["delivered"]), ""),
        ("DKIM valid / checked", f"{f['dkim_valid']} / {f['dkim_checked']}", target("max_unsigned")),
        ("failure detected after", _seconds(f["detection_seconds"]), ""),
        ("floating IP moved after", _seconds(f["floating_ip_moved_seconds"]), ""),
        ("first acceptance after", _seconds(f["first_accept_seconds"]), ""),
        ("balancer switched after", _seconds(f["balancer_switched_seconds"]), ""),
        ("both relays held the IP", _seconds(f["split_seconds"]), target("max_split_seconds", " s")),
    ]


def render_summary(report: Mapping[str, Any]) -> str:
    """The verdict and the figures as a terminal table."""
    verdict_ = report["verdict"]
    lines = [
        f"drill {report.get('scenario') or '-'}  {report.get('started') or ''}",
        f"verdict: {'PASSED' if verdict_['passed'] else 'FAILED'}",
    ]
    lines += [f"  breach: {breach}" for breach in verdict_["breaches"]]
    rows = _figure_rows(report)
    width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    lines.append("")
    lines += [f"  {name:<{width}}  {value:>{value_width}}  {slo}".rstrip() for name, value, slo in rows]
    events = report["timeline"]["events"]
    if events:
        reference = "the fault" if report["timeline"]["origin_is_fault"] else "the start"
        lines += ["", f"timeline (seconds from {reference}):"]
        lines += [f"  {e['offset']:+9.3f}  {e['name']}" for e in events]
    per_target = report["outage"]["per_target"]
    if len(per_target) > 1:
        lines += ["", "outage per target:"]
        lines += [
            f"  {target:<22} {_seconds(o['seconds'])}, {o['refused']} refused"
            f"{'' if o['recovered'] else ' (not recovered)'}"
            for target, o in per_target.items()
        ]
    return "\n".join(lines)


def _svg_timeline(report: Mapping[str, Any]) -> str:
    """Submissions per second stacked by result and coloured by node, the
    floating-IP holder band, the outage window and the events."""
    timeline = report["timeline"]
    series = timeline["series"]
    buckets, bucket_seconds = series["buckets"], series["bucket_seconds"]
    colours = _colours(report)
    pattern = {name: f"refused-{i}" for i, name in enumerate(colours)}
    esc = html.escape
    width, left, right = 1100, 60, 20
    plot_width = width - left - right
    x_min = min([timeline["first_offset"]] + [b["from"] for b in buckets])
    x_max = max(timeline["last_offset"], buckets[-1]["from"] + bucket_seconds if buckets else x_min + 1)
    x_max = max(x_max, x_min + 1)

    def x(offset: float) -> float:
        return left + (offset - x_min) / (x_max - x_min) * plot_width

    # The outage gets the first label row; event labels take the first row
    # below where they fit, so that close events (detection 0.6 s after the
    # fault) stay readable.
    window = report["outage"]["window"]
    outage_text = ""
    if window["start_offset"] is not None:
        where = f" on {window['target']}" if window.get("target") else ""
        if window["recovered"]:
            outage_text = (
                f"mail stopped{where} at {window['start_offset']:+.2f}s for {window['seconds']:.2f} s, "
                f"back at {window['end_offset']:+.2f}s"
            )
        else:
            outage_text = f"mail stopped{where} at {window['start_offset']:+.2f}s and did not come back"
    rows_end: list[float] = []
    placed = []
    for event in timeline["events"]:
        label = f"{event['name']} {event['offset']:+.2f}s"
        ex, span = x(event["offset"]), len(label) * 6.2 + 8
        # Near the right edge the label goes to the left of its mark.
        anchor_end = ex + span > width - right
        begin, finish = (ex - span, ex) if anchor_end else (ex, ex + span)
        row = next((i for i, end in enumerate(rows_end) if end < begin), None)
        if row is None:
            rows_end.append(0.0)
            row = len(rows_end) - 1
        rows_end[row] = finish
        placed.append((event, label, row, anchor_end))
    outage_y = 40
    rows_top = outage_y + 10
    top = rows_top + 16 * len(rows_end) + 8
    plot_height = 240
    band_top = top + plot_height + 14
    band_height = 22
    axis_y = band_top + band_height + 18
    legend_y = axis_y + 30
    height = legend_y + 14

    peak = max((sum(b["accepted"].values()) + sum(b["refused"].values()) for b in buckets), default=0)
    y_max = max(1.0, peak / bucket_seconds)
    step = 10 ** math.floor(math.log10(y_max))
    while y_max / step > 6:
        step *= 2
    y_max = math.ceil(y_max / step) * step

    def y(rate: float) -> float:
        return top + plot_height - rate / y_max * plot_height

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="drill timeline" font-family="sans-serif" '
        'font-size="11">',
        "<defs>",
        '<pattern id="split" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        f'<rect width="8" height="8" fill="{REFUSED_COLOUR}"/><rect width="4" height="8" fill="#1a202c"/></pattern>',
    ]
    for name, colour in colours.items():
        parts.append(
            f'<pattern id="{pattern[name]}" width="6" height="6" patternUnits="userSpaceOnUse" '
            f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{REFUSED_COLOUR}"/>'
            f'<rect width="2" height="6" fill="{colour}"/></pattern>'
        )
    parts.append("</defs>")
    parts.append(
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">Submissions per second '
        f'<tspan font-weight="normal" fill="#4a5568">(bars of {bucket_seconds} s, stacked by result, '
        "coloured by the relay that answered)</tspan></text>"
    )

    # Grid and axes.
    tick = 0.0
    while tick <= y_max + 1e-9:
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#e2e8f0"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
        tick += step

    # Stacked bars: accepted by node at the bottom, refused above.
    used = set()
    bar_width = max(plot_width / max(len(buckets), 1) - 1, 1)
    for bucket in buckets:
        x0, level = x(bucket["from"]), 0.0
        segments = [(n, c, colours.get(n, PALETTE[0]), "accepted") for n, c in sorted(bucket["accepted"].items())]
        segments += [
            (n, c, REFUSED_COLOUR if n == NO_ANSWER else f"url(#{pattern[n]})", "refused")
            for n, c in sorted(bucket["refused"].items())
        ]
        for node, count, fill, result in segments:
            used.add((result, node))
            rate = count / bucket_seconds
            y0, y1 = y(level + rate), y(level)
            title = f"{bucket['from']:+.0f}s: {count} {result} ({node})"
            parts.append(
                f'<rect class="{result}" x="{x0 + 0.5:.1f}" y="{y0:.1f}" width="{bar_width:.1f}" '
                f'height="{max(y1 - y0, 0.5):.1f}" fill="{fill}"><title>{esc(title)}</title></rect>'
            )
            level += rate
    parts.append(
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_height}" stroke="#4a5568"/>'
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_height}" y2="{top + plot_height}" stroke="#4a5568"/>'
    )

    # Holder band.
    parts.append(
        f'<text x="{left - 6}" y="{band_top + 9}" text-anchor="end" font-size="10">floating</text>'
        f'<text x="{left - 6}" y="{band_top + 20}" text-anchor="end" font-size="10">IP</text>'
        f'<rect x="{left}" y="{band_top}" width="{plot_width}" height="{band_height}" fill="#f7fafc" stroke="#cbd5e0"/>'
    )
    for segment in timeline["holders"]:
        holder = segment["holder"]
        fill = "url(#split)" if holder == SPLIT else NOBODY_COLOUR if holder is None else colours[holder]
        name = "both (split)" if holder == SPLIT else "nobody" if holder is None else holder
        used.add(("holder", "split" if holder == SPLIT else "nobody" if holder is None else "node"))
        x0, x1 = x(segment["from"]), x(segment["to"])
        parts.append(
            f'<rect class="holder" x="{x0:.1f}" y="{band_top}" width="{max(x1 - x0, 1):.1f}" height="{band_height}" '
            f'fill="{fill}"><title>{esc(name)} {segment["from"]:+.2f}s to {segment["to"]:+.2f}s</title></rect>'
        )
        if x1 - x0 > 8 * len(name) + 8:
            parts.append(
                f'<text x="{(x0 + x1) / 2:.1f}" y="{band_top + 15}" text-anchor="middle" fill="white" '
                f'font-weight="bold">{esc(name)}</text>'
            )

    # Time axis.
    span = x_max - x_min
    x_step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 1e9) if span / s <= 12)
    tick = math.ceil(x_min / x_step) * x_step
    reference = "fault" if timeline["origin_is_fault"] else "start"
    while tick <= x_max:
        parts.append(
            f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{band_top + band_height}" '
            f'y2="{band_top + band_height + 4}" stroke="#4a5568"/>'
            f'<text x="{x(tick):.1f}" y="{axis_y}" text-anchor="middle">{tick:+g}s</text>'
        )
        tick += x_step
    parts.append(
        f'<text x="{width - right}" y="{axis_y + 14}" text-anchor="end" fill="#4a5568">'
        f"seconds from the {reference}</text>"
    )

    # The outage over the bars: a translucent window with a bracket above the
    # plot, at least a few pixels wide however short it was.
    if outage_text:
        start = window["start_offset"]
        end = window["end_offset"] if window["end_offset"] is not None else x_max
        x0, x1 = x(start), max(x(end), x(start) + 4)
        parts.append(
            f'<g class="outage"><title>{esc(outage_text)}</title>'
            f'<rect x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{plot_height}" fill="{REFUSED_COLOUR}" '
            f'fill-opacity="0.25" stroke="{REFUSED_COLOUR}" stroke-width="1.5"/>'
            f'<rect x="{x0:.1f}" y="{outage_y + 4}" width="{x1 - x0:.1f}" height="5" fill="{REFUSED_COLOUR}"/>'
            f'<text x="{min(x0, width - right - len(outage_text) * 7.2):.1f}" y="{outage_y}" '
            f'fill="{REFUSED_COLOUR}" font-size="13" font-weight="bold">{esc(outage_text)}</text></g>'
        )
    else:
        parts.append(
            f'<text class="no-outage" x="{left}" y="{outage_y}" fill="#2f855a" font-size="13" font-weight="bold">'
            "no submission failed</text>"
        )

    # Event marks over everything, labels in their rows.
    for event, label, row, anchor_end in placed:
        ex = x(event["offset"])
        label_y = rows_top + 16 * row + 12
        text_x, anchor = (ex - 3, "end") if anchor_end else (ex + 3, "start")
        parts.append(
            f'<g class="event"><line x1="{ex:.1f}" x2="{ex:.1f}" y1="{label_y + 3}" y2="{band_top + band_height}" '
            f'stroke="#1a202c" stroke-dasharray="4 3"/>'
            f'<text x="{text_x:.1f}" y="{label_y}" text-anchor="{anchor}">{esc(label)}</text></g>'
        )

    # Legend: only what the chart shows.
    entries = [(colour, f"accepted by {name}") for name, colour in colours.items() if ("accepted", name) in used]
    entries += [(f"url(#{pattern[n]})", f"refused by {n}") for n in colours if ("refused", n) in used]
    entries += [(REFUSED_COLOUR, "no answer")] if ("refused", NO_ANSWER) in used else []
    entries += [(NOBODY_COLOUR, "IP held by nobody")] if ("holder", "nobody") in used else []
    entries += [("url(#split)", "IP on both relays")] if ("holder", "split") in used else []
    lx = left
    for fill, text in entries:
        parts.append(
            f'<rect x="{lx}" y="{legend_y - 10}" width="12" height="12" fill="{fill}"/>'
            f'<text x="{lx + 16}" y="{legend_y}">{esc(text)}</text>'
        )
        lx += 16 + len(text) * 6.2 + 14
    parts.append("</svg>")
    return "\n".join(parts)


_CSS = """
body { font-family: sans-serif; margin: 24px; color: #1a202c; }
h1 { font-size: 20px; margin: 0 0 4px; }
.verdict { padding: 12px 16px; border-radius: 6px; margin: 12px 0 20px; color: white; }
.verdict.passed { background: #2f855a; } .verdict.failed { background: #c53030; }
.verdict strong { font-size: 18px; } .verdict ul { margin: 6px 0 0; }
table { border-collapse: collapse; margin: 8px 0 20px; }
td, th { border-bottom: 1px solid #e2e8f0; padding: 4px 12px 4px 0; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #718096; } code { font-size: 12px; }
"""


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i in numeric else ''}>{esc(str(cell))}</td>" for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained page: verdict, figures, the timeline chart, details."""
    esc = html.escape
    passed = report["verdict"]["passed"]
    breaches = "".join(f"<li>{esc(b)}</li>" for b in report["verdict"]["breaches"])
    reconciliation = report["reconciliation"]
    timeline = report["timeline"]
    reference = "fault" if timeline["origin_is_fault"] else "start"
    sections = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>mailha drill {esc(str(report.get('scenario')))}: {'passed' if passed else 'FAILED'}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Drill {esc(str(report.get('scenario') or '-'))}</h1>",
        f'<div class="muted">{esc(str(report.get("started")))} to {esc(str(report.get("finished")))}</div>',
        f'<div class="verdict {"passed" if passed else "failed"}"><strong>{"PASSED" if passed else "FAILED"}'
        f"</strong>{f'<ul>{breaches}</ul>' if breaches else ' every target met'}</div>",
        _table(("figure", "value", "target"), _figure_rows(report), numeric=(1,)),
        _svg_timeline(report),
        "<h2>Timeline</h2>"
        + _table(
            (f"seconds from the {reference}", "event", "time (UTC)"),
            [(f"{e['offset']:+.3f}", e["name"], e["iso"]) for e in timeline["events"]],
            numeric=(0,),
        ),
        "<h2>Outage per target</h2>"
        + _table(
            ("target", "outage", "failed attempts", "came back"),
            [
                (t, _seconds(o["seconds"]), o["failed"], "yes" if o["recovered"] else "no")
                for t, o in report["outage"]["per_target"].items()
            ],
            numeric=(1, 2),
        ),
    ]
    for key, title in (
        ("lost", "Lost (acknowledged, never arrived)"),
        ("duplicated", "Duplicated (arrived more than once)"),
        ("unexpected", "Unexpected (arrived without a 250: not loss, a client would resend them)"),
        ("unsigned", "Without a valid DKIM signature"),
    ):
        ids = reconciliation.get(key, [])
        if ids:
            shown = "".join(f"<li><code>{esc(i)}</code></li>" for i in ids[:50])
            more = f"<li>... and {len(ids) - 50} more (report.json)</li>" if len(ids) > 50 else ""
            sections.append(f"<h2>{esc(title)}: {len(ids)}</h2><ul>{shown}{more}</ul>")
    sections.append(
        "<h2>Targets and configuration</h2>"
        + _table(("setting", "value"), [(k, v) for k, v in report["slos"].items()])
        + _table(
            ("setting", "value"),
            [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in report["config"].items()],
        )
    )
    sections.append("</body></html>")
    return "\n".join(sections)


def write_report(directory: Path | str, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write report.json and a self-contained report.html into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "report.json", directory / "report.html"
    document = {k: v for k, v in report.items() if k != "files"}
    json_path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    html_path.write_text(render_html(document), encoding="utf-8")
    return json_path, html_path
