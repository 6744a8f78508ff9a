"""A drill's report for people: the terminal summary, the HTML page, the files.

The page comes from templates/report.html.j2 (with timeline.svg.j2), fed by
mailha.drill_report.layout; autoescaping is on, so node names, event names
and Message-IDs can never become markup.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from mailha.drill_report.layout import figure_rows, page_layout, seconds


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mailha.drill_report", "templates"),
        autoescape=True,  # every template is HTML or SVG
        undefined=jinja2.StrictUndefined,  # a field the layout lacks is a bug, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_summary(report: Mapping[str, Any]) -> str:
    """The verdict and the figures as a terminal table."""
    verdict_ = report["verdict"]
    lines = [
        f"drill {report.get('scenario') or '-'}  {report.get('started') or ''}",
        f"verdict: {'PASSED' if verdict_['passed'] else 'FAILED'}",
    ]
    lines += [f"  breach: {breach}" for breach in verdict_["breaches"]]
    rows = figure_rows(report)
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
            f"  {target:<22} {seconds(o['seconds'])}, {o['refused']} refused"
            f"{'' if o['recovered'] else ' (not recovered)'}"
            for target, o in per_target.items()
        ]
    return "\n".join(lines)


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained page: verdict, figures, the timeline chart, details."""
    return _templates().get_template("report.html.j2").render(page=page_layout(report))


def write_report(directory: Path | str, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write report.json and a self-contained report.html into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "report.json", directory / "report.html"
    document = {k: v for k, v in report.items() if k != "files"}
    json_path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    html_path.write_text(render_html(document), encoding="utf-8")
    return json_path, html_path
