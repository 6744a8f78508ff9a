"""What the control host exports about drills and preflights (node_exporter textfile).

The alert rules (monitoring/prometheus/mailha-rules.yml) read these names;
tests/unit/test_monitoring.py holds the rules and the dashboard to them.

Drill (one file for every scenario, `mailha drill --metrics-file`): a run
replaces its own scenario's series and keeps the others'. When the run
failed, the time of the last success is carried over from the file, so
"no successful drill in seven days" survives a failing one.

Preflight (`mailha preflight --metrics-file`): each run replaces the file.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mailha import textfile
from mailha.preflight.result import EXIT_CODES, Result

DRILL_LAST_RUN = "mailha_drill_last_run_timestamp_seconds"
DRILL_LAST_SUCCESS = "mailha_drill_last_success"
DRILL_LAST_SUCCESS_TIME = "mailha_drill_last_success_timestamp_seconds"
DRILL_OUTAGE = "mailha_drill_last_outage_seconds"
DRILL_LOST = "mailha_drill_lost_messages"
DRILL_DUPLICATED = "mailha_drill_duplicated_messages"
PREFLIGHT_LAST_RUN = "mailha_preflight_last_run_timestamp_seconds"
PREFLIGHT_CHECK_STATUS = "mailha_preflight_check_status"
PREFLIGHT_EXIT_CODE = "mailha_preflight_exit_code"

_DRILL_HELP = {
    DRILL_LAST_RUN: "When the last drill of this scenario ended (Unix time), passed or not.",
    DRILL_LAST_SUCCESS: "1 when the last drill of this scenario met every target (SLO), 0 when it did not or stopped.",
    DRILL_LAST_SUCCESS_TIME: "When a drill of this scenario last met every target (Unix time).",
    DRILL_OUTAGE: "Outage clients saw in the last drill of this scenario, seconds (worst target).",
    DRILL_LOST: "Acknowledged messages that never arrived in the last drill of this scenario.",
    DRILL_DUPLICATED: "Messages that arrived more than once in the last drill of this scenario.",
}
_PREFLIGHT_HELP = {
    PREFLIGHT_LAST_RUN: "When the last mailha preflight ended (Unix time).",
    PREFLIGHT_CHECK_STATUS: "A preflight check's result for one subject: 0 pass, 1 warn, 2 fail (worst of several).",
    PREFLIGHT_EXIT_CODE: "Exit code of the last mailha preflight: 0 pass, 1 warnings, 2 a failure or it could not run.",
}
NAMES = (*_DRILL_HELP, *_PREFLIGHT_HELP)


def drill_families(
    scenario: str, report: Mapping[str, Any] | None, previous: Iterable[textfile.Sample], now: float | None = None
) -> list[textfile.Family]:
    """The drill file after one run of `scenario`.

    report: the drill's report (mailha.drill_report.build_report), or None
    when the drill stopped before it had one; then it counts as failed and
    no figures are exported for the scenario (an old figure would describe
    another run). previous: the file's samples before this run.
    """
    now = time.time() if now is None else now
    families = {name: textfile.Family(name, text) for name, text in _DRILL_HELP.items()}
    previous = list(previous)
    textfile.keep(previous, families, unless={"scenario": scenario})
    passed = bool(report is not None and report["verdict"]["passed"])
    families[DRILL_LAST_RUN].add(now, scenario=scenario)
    families[DRILL_LAST_SUCCESS].add(int(passed), scenario=scenario)
    if passed:
        families[DRILL_LAST_SUCCESS_TIME].add(now, scenario=scenario)
    else:
        families[DRILL_LAST_SUCCESS_TIME].samples += [
            s for s in previous if s.name == DRILL_LAST_SUCCESS_TIME and s.label("scenario") == scenario
        ]
    if report is not None:
        figures = report["figures"]
        families[DRILL_OUTAGE].add(float(figures["outage_seconds"]), scenario=scenario)
        families[DRILL_LOST].add(int(figures["lost"]), scenario=scenario)
        families[DRILL_DUPLICATED].add(int(figures["duplicated"]), scenario=scenario)
    return list(families.values())


def preflight_families(results: Iterable[Result], exit_code: int, now: float | None = None) -> list[textfile.Family]:
    """The preflight file after one run: each (check, subject) at its worst
    level (SPF and the blocklists give several results per subject)."""
    now = time.time() if now is None else now
    families = {name: textfile.Family(name, text) for name, text in _PREFLIGHT_HELP.items()}
    worst: dict[tuple[str, str], int] = {}
    for result in results:
        key = (result.check, result.subject)
        worst[key] = max(worst.get(key, 0), EXIT_CODES[result.level])
    for (check, subject), status in worst.items():
        families[PREFLIGHT_CHECK_STATUS].add(status, check=check, subject=subject)
    families[PREFLIGHT_LAST_RUN].add(now)
    families[PREFLIGHT_EXIT_CODE].add(exit_code)
    return list(families.values())


def write_drill(path: Path, scenario: str, report: Mapping[str, Any] | None) -> None:
    textfile.write(path, drill_families(scenario, report, textfile.read(path)))


def write_preflight(path: Path, results: Iterable[Result], exit_code: int) -> None:
    textfile.write(path, preflight_families(results, exit_code))
