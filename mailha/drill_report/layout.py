"""Where everything on the report page goes: the layout the templates place.

timeline_layout() turns a report's timeline into the SVG chart's geometry
(every coordinate, label and colour), page_layout() into the rows of every
table. The templates (templates/*.j2) only place what these compute, so
the arithmetic is tested here and the markup stays plain. Strings are left
raw: the templates escape them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailha.drill_report.document import NO_ANSWER, SPLIT, UNKNOWN_NODE
from mailha.drill_report.outage_verdict import _slo_breach

PALETTE = ("#2b6cb0", "#2f855a", "#6b46c1", "#b7791f", "#2c7a7b", "#97266d")
REFUSED_COLOUR = "#c53030"
NOBODY_COLOUR = "#a0aec0"
SPLIT_FILL = "url(#split)"

# The chart's frame, in pixels.
WIDTH, LEFT, RIGHT = 1100, 60, 20
PLOT_HEIGHT, BAND_HEIGHT = 240, 22
OUTAGE_Y, LABEL_ROW = 40, 16
CHAR_WIDTH = 6.2  # an 11 px sans-serif character, to keep labels apart
ID_LIST_LIMIT = 50  # ids shown per list on the page; report.json holds all


def _px(value: float) -> float:
    return round(value, 1)


# --- the chart ---------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """Hatching for the refusals of one node: red with its colour."""

    id: str
    colour: str


@dataclass(frozen=True)
class Bar:
    result: str  # accepted or refused: the element's class
    x: float
    y: float
    width: float
    height: float
    fill: str
    title: str


@dataclass(frozen=True)
class YTick:
    y: float
    label_y: float
    label: str


@dataclass(frozen=True)
class XTick:
    x: float
    label: str


@dataclass(frozen=True)
class HolderSegment:
    x: float
    width: float
    fill: str
    title: str
    label: str | None  # None when the name does not fit in the segment
    label_x: float


@dataclass(frozen=True)
class EventMark:
    x: float
    line_top: float
    label: str
    label_x: float
    label_y: float
    anchor: str  # start, or end near the right edge


@dataclass(frozen=True)
class OutageMark:
    text: str
    x: float
    width: float
    label_x: float


@dataclass(frozen=True)
class LegendEntry:
    x: float
    text_x: float
    fill: str
    text: str


@dataclass(frozen=True)
class Timeline:
    """The SVG chart: submissions per second, the holder band, the outage, the events."""

    width: int
    height: int
    left: int
    right: int  # x of the plot's right edge
    top: int
    bottom: int
    plot_width: int
    plot_height: int
    label_x: int  # right-aligned labels left of the plot
    caption: str
    outage_y: int
    outage_bar_y: int
    band_top: int
    band_bottom: int
    band_height: int
    band_label_y: tuple[int, int]
    band_text_y: int
    tick_bottom: int
    axis_y: int
    axis_caption_y: int
    axis_caption: str
    legend_y: int
    legend_box_y: int
    refused_colour: str
    nobody_colour: str
    patterns: list[Pattern] = field(default_factory=list)
    y_ticks: list[YTick] = field(default_factory=list)
    x_ticks: list[XTick] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    holders: list[HolderSegment] = field(default_factory=list)
    events: list[EventMark] = field(default_factory=list)
    outage: OutageMark | None = None
    legend: list[LegendEntry] = field(default_factory=list)


def _buckets(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return report["timeline"]["series"]["buckets"]


def _nodes(report: Mapping[str, Any]) -> list[str]:
    names = set()
    for bucket in _buckets(report):
        names.update(bucket["accepted"])
        names.update(n for n in bucket["refused"] if n != NO_ANSWER)
    names.update(s["holder"] for s in report["timeline"]["holders"] if s["holder"] not in (None, SPLIT))
    names.discard(UNKNOWN_NODE)
    return sorted(names) + ([UNKNOWN_NODE] if any(UNKNOWN_NODE in b["accepted"] for b in _buckets(report)) else [])


def colours(report: Mapping[str, Any]) -> dict[str, str]:
    """One colour per node, in name order, the same in bars, band and legend."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(_nodes(report))}


def outage_text(window: Mapping[str, Any]) -> str:
    """The chart's one line on the outage it shades; empty when nothing failed."""
    if window["start_offset"] is None:
        return ""
    where = f" on {window['target']}" if window.get("target") else ""
    if window["recovered"]:
        return (
            f"mail stopped{where} at {window['start_offset']:+.2f}s for {window['seconds']:.2f} s, "
            f"back at {window['end_offset']:+.2f}s"
        )
    return f"mail stopped{where} at {window['start_offset']:+.2f}s and did not come back"


def _label_rows(labels: Sequence[tuple[float, str]], right: float) -> list[tuple[int, bool]]:
    """(row, anchored at its end) for each (x, label): the first row where it
    fits, so that close events (detection 0.6 s after the fault) stay
    readable; near the right edge a label goes to the left of its mark."""
    rows_end: list[float] = []
    placed = []
    for ex, label in labels:
        span = len(label) * CHAR_WIDTH + 8
        anchor_end = ex + span > right
        begin, finish = (ex - span, ex) if anchor_end else (ex, ex + span)
        row = next((i for i, end in enumerate(rows_end) if end < begin), None)
        if row is None:
            rows_end.append(0.0)
            row = len(rows_end) - 1
        rows_end[row] = finish
        placed.append((row, anchor_end))
    return placed


def _rate_scale(peak_rate: float) -> tuple[float, float]:
    """(top of the y axis, tick step): a round step, at most 6 ticks."""
    y_max = max(1.0, peak_rate)
    step = 10 ** math.floor(math.log10(y_max))
    while y_max / step > 6:
        step *= 2
    return math.ceil(y_max / step) * step, step


def _time_step(span: float) -> float:
    """Seconds between time-axis ticks: a round number, at most 12 ticks."""
    return next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 1e9) if span / s <= 12)


def _holder_name(holder: str | None) -> str:
    return "both (split)" if holder == SPLIT else "nobody" if holder is None else holder


def timeline_layout(report: Mapping[str, Any]) -> Timeline:
    """Submissions per second stacked by result and coloured by node, the
    floating-IP holder band, the outage window and the events."""
    timeline = report["timeline"]
    series = timeline["series"]
    buckets, bucket_seconds = series["buckets"], series["bucket_seconds"]
    node_colours = colours(report)
    pattern = {name: f"refused-{i}" for i, name in enumerate(node_colours)}
    right = WIDTH - RIGHT
    plot_width = right - LEFT
    x_min = min([timeline["first_offset"]] + [b["from"] for b in buckets])
    x_max = max(timeline["last_offset"], buckets[-1]["from"] + bucket_seconds if buckets else x_min + 1)
    x_max = max(x_max, x_min + 1)

    def x(offset: float) -> float:
        return LEFT + (offset - x_min) / (x_max - x_min) * plot_width

    # The outage gets the first label row, the events the rows below it.
    labels = [(x(e["offset"]), f"{e['name']} {e['offset']:+.2f}s") for e in timeline["events"]]
    placed = _label_rows(labels, right)
    rows_top = OUTAGE_Y + 10
    top = rows_top + LABEL_ROW * (max((row for row, _ in placed), default=-1) + 1) + 8
    bottom = top + PLOT_HEIGHT
    band_top = bottom + 14
    band_bottom = band_top + BAND_HEIGHT
    axis_y = band_bottom + 18
    legend_y = axis_y + 30

    peak = max((sum(b["accepted"].values()) + sum(b["refused"].values()) for b in buckets), default=0)
    y_max, y_step = _rate_scale(peak / bucket_seconds)

    def y(rate: float) -> float:
        return bottom - rate / y_max * PLOT_HEIGHT

    y_ticks = []
    tick = 0.0
    while tick <= y_max + 1e-9:
        y_ticks.append(YTick(y=_px(y(tick)), label_y=_px(y(tick) + 4), label=f"{tick:g}"))
        tick += y_step

    # Stacked bars: accepted by node at the bottom, refused above.
    used: set[tuple[str, str]] = set()
    bars = []
    bar_width = max(plot_width / max(len(buckets), 1) - 1, 1)
    for bucket in buckets:
        x0, level = x(bucket["from"]), 0.0
        segments = [(n, c, node_colours.get(n, PALETTE[0]), "accepted") for n, c in sorted(bucket["accepted"].items())]
        segments += [
            (n, c, REFUSED_COLOUR if n == NO_ANSWER else f"url(#{pattern[n]})", "refused")
            for n, c in sorted(bucket["refused"].items())
        ]
        for node, count, fill, result in segments:
            used.add((result, node))
            rate = count / bucket_seconds
            y0, y1 = y(level + rate), y(level)
            bars.append(
                Bar(
                    result=result,
                    x=_px(x0 + 0.5),
                    y=_px(y0),
                    width=_px(bar_width),
                    height=_px(max(y1 - y0, 0.5)),
                    fill=fill,
                    title=f"{bucket['from']:+.0f}s: {count} {result} ({node})",
                )
            )
            level += rate

    holders = []
    for segment in timeline["holders"]:
        holder = segment["holder"]
        fill = SPLIT_FILL if holder == SPLIT else NOBODY_COLOUR if holder is None else node_colours[holder]
        name = _holder_name(holder)
        used.add(("holder", "split" if holder == SPLIT else "nobody" if holder is None else "node"))
        x0, x1 = x(segment["from"]), x(segment["to"])
        holders.append(
            HolderSegment(
                x=_px(x0),
                width=_px(max(x1 - x0, 1)),
                fill=fill,
                title=f"{name} {segment['from']:+.2f}s to {segment['to']:+.2f}s",
                label=name if x1 - x0 > 8 * len(name) + 8 else None,
                label_x=_px((x0 + x1) / 2),
            )
        )

    x_step = _time_step(x_max - x_min)
    x_ticks = []
    tick = math.ceil(x_min / x_step) * x_step
    while tick <= x_max:
        x_ticks.append(XTick(x=_px(x(tick)), label=f"{tick:+g}s"))
        tick += x_step

    # The outage over the bars, at least a few pixels wide however short it was.
    window = report["outage"]["window"]
    text = outage_text(window)
    mark = None
    if text:
        end = window["end_offset"] if window["end_offset"] is not None else x_max
        x0 = x(window["start_offset"])
        x1 = max(x(end), x0 + 4)
        label_x = max(LEFT, min(x0, right - len(text) * 7.2))
        mark = OutageMark(text=text, x=_px(x0), width=_px(x1 - x0), label_x=_px(label_x))

    events = []
    for (ex, label), (row, anchor_end) in zip(labels, placed, strict=True):
        label_y = rows_top + LABEL_ROW * row + 12
        events.append(
            EventMark(
                x=_px(ex),
                line_top=label_y + 3,
                label=label,
                label_x=_px(ex - 3 if anchor_end else ex + 3),
                label_y=label_y,
                anchor="end" if anchor_end else "start",
            )
        )

    # Legend: only what the chart shows.
    entries = [(c, f"accepted by {name}") for name, c in node_colours.items() if ("accepted", name) in used]
    entries += [(f"url(#{pattern[n]})", f"refused by {n}") for n in node_colours if ("refused", n) in used]
    entries += [(REFUSED_COLOUR, "no answer")] if ("refused", NO_ANSWER) in used else []
    entries += [(NOBODY_COLOUR, "IP held by nobody")] if ("holder", "nobody") in used else []
    entries += [(SPLIT_FILL, "IP on both relays")] if ("holder", "split") in used else []
    legend = []
    lx = float(LEFT)
    for fill, entry in entries:
        legend.append(LegendEntry(x=_px(lx), text_x=_px(lx + 16), fill=fill, text=entry))
        lx += 16 + len(entry) * CHAR_WIDTH + 14

    reference = "fault" if timeline["origin_is_fault"] else "start"
    return Timeline(
        width=WIDTH,
        height=legend_y + 14,
        left=LEFT,
        right=right,
        top=top,
        bottom=bottom,
        plot_width=plot_width,
        plot_height=PLOT_HEIGHT,
        label_x=LEFT - 6,
        caption=f"(bars of {bucket_seconds} s, stacked by result, coloured by the relay that answered)",
        outage_y=OUTAGE_Y,
        outage_bar_y=OUTAGE_Y + 4,
        band_top=band_top,
        band_bottom=band_bottom,
        band_height=BAND_HEIGHT,
        band_label_y=(band_top + 9, band_top + 20),
        band_text_y=band_top + 15,
        tick_bottom=band_bottom + 4,
        axis_y=axis_y,
        axis_caption_y=axis_y + 14,
        axis_caption=f"seconds from the {reference}",
        legend_y=legend_y,
        legend_box_y=legend_y - 10,
        refused_colour=REFUSED_COLOUR,
        nobody_colour=NOBODY_COLOUR,
        patterns=[Pattern(id=pattern[name], colour=colour) for name, colour in node_colours.items()],
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        bars=bars,
        holders=holders,
        events=events,
        outage=mark,
        legend=legend,
    )


# --- the tables --------------------------------------------------------------


def seconds(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f} s"


def _duplicated_text(f: Mapping[str, Any]) -> str:
    cut = f.get("duplicated_cut_in_flight", 0)
    return str(f["duplicated"]) + (f" ({cut} cut in flight: 250 lost)" if cut else "")


def figure_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, target) rows shared by the HTML page and the terminal summary."""
    f, slos = report["figures"], report["slos"]

    def target(key: str, unit: str = "") -> str:
        if key not in slos:
            return ""
        met = _slo_breach(key, slos[key], f) is None and (key != "max_outage_seconds" or f["recovered"])
        return f"≤ {slos[key]:g}{unit} {'met' if met else 'BREACHED'}"

    outage = seconds(f["outage_seconds"]) + ("" if f["recovered"] else " (not recovered)")
    return [
        ("outage seen by clients", outage, target("max_outage_seconds", " s")),
        ("acknowledged, never arrived (lost)", str(f["lost"]), target("max_lost")),
        ("arrived more than once (duplicated)", _duplicated_text(f), target("max_duplicated")),
        ("arrived without a 250 (unexpected)", str(f["unexpected"]), ""),
        ("submitted", str(f["submitted"]), ""),
        ("acknowledged (250)", str(f["acknowledged"]), ""),
        ("refused or failed", f"{f['refused']} ({f['no_reply']} without reply)", ""),
        ("delivered", str(f["delivered"]), ""),
        ("DKIM valid / checked", f"{f['dkim_valid']} / {f['dkim_checked']}", target("max_unsigned")),
        ("failure detected after", seconds(f["detection_seconds"]), ""),
        ("floating IP moved after", seconds(f["floating_ip_moved_seconds"]), ""),
        ("first acceptance after", seconds(f["first_accept_seconds"]), ""),
        ("balancer switched after", seconds(f["balancer_switched_seconds"]), ""),
        ("both relays held the IP", seconds(f["split_seconds"]), target("max_split_seconds", " s")),
    ]


@dataclass(frozen=True)
class Row:
    cells: tuple[str, ...]
    css_class: str = ""  # "failed" marks a step that failed


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: list[Row]
    numeric: frozenset[int] = frozenset()  # columns aligned right


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> Table:
    return Table(tuple(header), [Row(tuple(str(c) for c in row)) for row in rows], frozenset(numeric))


@dataclass(frozen=True)
class IdList:
    """Message-IDs of one kind (lost, duplicated...), the first ID_LIST_LIMIT of them."""

    title: str
    count: int
    shown: list[str]
    more: int  # how many report.json holds beyond those shown


_ID_LISTS = (
    ("lost", "Lost (acknowledged, never arrived)"),
    ("duplicated", "Duplicated (arrived more than once)"),
    ("unexpected", "Unexpected (arrived without a 250: not loss, a client would resend them)"),
    ("unsigned", "Without a valid DKIM signature"),
)
_STEP_FIELDS = ("name", "result", "seconds", "detail", "started")


def _is_steps(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(s, Mapping) and "name" in s for s in value)


def steps_table(steps: Sequence[Mapping[str, Any]], origin: float) -> Table:
    """The drill's steps in order (mailha.audit.Step: name, result, seconds,
    detail): what it did, how long each took, and where it stopped. A step
    that records when it began (`started`, epoch seconds) gets its offset
    from the chart's origin; any other field goes into the detail."""
    with_start = any("started" in s for s in steps)
    header = ("#", "step", *(("started",) if with_start else ()), "took", "outcome", "detail")
    rows = []
    for index, step in enumerate(steps, start=1):
        extra = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in step.items() if k not in _STEP_FIELDS]
        detail = "; ".join([d for d in (str(step.get("detail") or ""),) if d] + extra)
        started = step.get("started")
        if isinstance(started, int | float) and not isinstance(started, bool):
            started = f"{started - origin:+.2f}s"
        took = step.get("seconds")
        cells = (
            str(index),
            str(step["name"]),
            *((str(started if started is not None else "-"),) if with_start else ()),
            seconds(took) if isinstance(took, int | float) else str(took or "-"),
            str(step.get("result", "")),
            detail,
        )
        rows.append(Row(cells, "failed" if step.get("result") == "failed" else ""))
    numeric = {0, 3 if with_start else 2}
    return Table(header, rows, frozenset(numeric))


@dataclass(frozen=True)
class Page:
    """The HTML page: verdict, figures, the chart, then the details."""

    title: str
    heading: str
    period: str
    passed: bool
    breaches: list[str]
    figures: Table
    timeline: Timeline
    events: Table
    per_target: Table
    id_lists: list[IdList]
    steps: Table | None
    slos: Table
    config: Table


def page_layout(report: Mapping[str, Any]) -> Page:
    """Every table of the page, and the chart, from a report (build_report)."""
    passed = report["verdict"]["passed"]
    timeline = report["timeline"]
    reference = "fault" if timeline["origin_is_fault"] else "start"
    reconciliation = report["reconciliation"]
    config = report["config"]
    steps = config.get("steps")
    shown_steps = steps if _is_steps(steps) else None
    id_lists = [
        IdList(title, len(ids), list(ids[:ID_LIST_LIMIT]), max(len(ids) - ID_LIST_LIMIT, 0))
        for key, title in _ID_LISTS
        if (ids := reconciliation.get(key, []))
    ]
    return Page(
        title=f"mailha drill {report.get('scenario')}: {'passed' if passed else 'FAILED'}",
        heading=f"Drill {report.get('scenario') or '-'}",
        period=f"{report.get('started')} to {report.get('finished')}",
        passed=passed,
        breaches=list(report["verdict"]["breaches"]),
        figures=_table(("figure", "value", "target"), figure_rows(report), numeric=(1,)),
        timeline=timeline_layout(report),
        events=_table(
            (f"seconds from the {reference}", "event", "time (UTC)"),
            [(f"{e['offset']:+.3f}", e["name"], e["iso"]) for e in timeline["events"]],
            numeric=(0,),
        ),
        per_target=_table(
            ("target", "outage", "failed attempts", "came back"),
            [
                (t, seconds(o["seconds"]), o["failed"], "yes" if o["recovered"] else "no")
                for t, o in report["outage"]["per_target"].items()
            ],
            numeric=(1, 2),
        ),
        id_lists=id_lists,
        steps=steps_table(shown_steps, timeline["origin"]) if shown_steps else None,
        slos=_table(("setting", "value"), list(report["slos"].items())),
        config=_table(
            ("setting", "value"),
            [
                (k, v if isinstance(v, str) else json.dumps(v))
                for k, v in config.items()
                if not (k == "steps" and shown_steps)
            ],
        ),
    )
