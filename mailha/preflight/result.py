"""One finding of `mailha preflight` and what the findings add up to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

PASS, WARN, FAIL = "pass", "warn", "fail"
LEVELS = (PASS, WARN, FAIL)
# 0 every check passes, 1 warnings only, 2 a failure: the same codes as
# `mailha status` (healthy, degraded, critical), so one scheduler rule serves both.
EXIT_CODES = {PASS: 0, WARN: 1, FAIL: 2}


@dataclass
class Result:
    check: str  # reverse-dns, spf, dkim, ... (CHECKS in mailha.preflight.report)
    subject: str  # what was checked: the floating IP, a relay, a domain, "relays"
    level: str  # pass, warn or fail
    reason: str  # what was found, one sentence
    fix: str = ""  # what to do about it; empty when it passes
    details: list[str] = field(default_factory=list)  # each difference, each lookup, ...

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {self.level!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def worst(results: Iterable[Result]) -> str:
    levels = {r.level for r in results}
    return FAIL if FAIL in levels else WARN if WARN in levels else PASS


def exit_code(results: Iterable[Result]) -> int:
    return EXIT_CODES[worst(results)]
