"""How long clients saw mail stop, and the verdict against the drill's targets."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mailha.drill_report.reconciliation import _Attempt, _attempts, _count

KNOWN_SLOS = ("max_outage_seconds", "max_lost", "max_duplicated", "max_unsigned", "max_split_seconds")


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
