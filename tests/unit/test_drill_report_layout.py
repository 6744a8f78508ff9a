"""The report page's layout (chart geometry, table rows) and the templates that place it."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from importlib import resources

import pytest

from mailha import drill_report
from mailha.audit import Step
from mailha.drill_report import layout
from tests.unit.test_drill_report import LB, T0, VIP, crash_drill, events, report_for, sent, steady

HOSTILE = '<script>alert("x")</script>'


def chart_of(report):
    return layout.timeline_layout(report)


def svg_of(page: str) -> ET.Element:
    """The page's chart, parsed: it must be well-formed XML whatever the names."""
    svg = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    return ET.fromstring(svg)  # noqa: S314 - our own output, parsed to prove it well-formed


# --- the chart ---------------------------------------------------------------


def test_bars_stay_inside_the_plot_and_stack_to_the_rate():
    chart = chart_of(report_for(crash_drill()))
    assert chart.bars
    for bar in chart.bars:
        assert chart.left <= bar.x and bar.x + bar.width <= chart.right + 0.1, bar
        assert chart.top <= bar.y and bar.y + bar.height <= chart.bottom + 0.1, bar
    # 10 submissions a second in 1 s buckets: a full bar reaches the top tick.
    full = [b for b in chart.bars if b.title.startswith("-1s: 10 accepted")]
    assert full and full[0].y == pytest.approx(chart.y_ticks[-1].y, abs=0.1)
    assert {b.result for b in chart.bars} == {"accepted", "refused"}


def test_accepted_bars_take_the_node_colour_and_no_answer_is_red():
    chart = chart_of(report_for(crash_drill()))
    colours = layout.colours(report_for(crash_drill()))
    assert colours == {"mx1": layout.PALETTE[0], "mx2": layout.PALETTE[1]}
    assert {b.fill for b in chart.bars if "(mx2)" in b.title} == {layout.PALETTE[1]}
    assert {b.fill for b in chart.bars if b.result == "refused"} == {layout.REFUSED_COLOUR}


def test_refusals_a_relay_answered_are_hatched_with_its_colour():
    attempts = [*steady(10, start=-1.0), sent(20, 0.1, code=421, node="mx1")]
    chart = chart_of(report_for(attempts))
    refused = [b for b in chart.bars if b.result == "refused"]
    assert [b.fill for b in refused] == ["url(#refused-0)"]
    assert layout.Pattern("refused-0", layout.PALETTE[0]) in chart.patterns
    assert "refused by mx1" in [e.text for e in chart.legend]


@pytest.mark.parametrize(
    ("peak", "expected"),
    [(0, (1, 1)), (10, (10, 10)), (37, (40, 10)), (700, (800, 200)), (2.5, (3, 1))],
)
def test_rate_axis_has_round_ticks(peak, expected):
    assert layout._rate_scale(peak) == expected


def test_axis_ticks_are_labelled_and_ordered():
    chart = chart_of(report_for(crash_drill()))
    # Rates: from 0 at the bottom of the plot upwards.
    assert [t.label for t in chart.y_ticks] == ["0", "10"]
    assert chart.y_ticks[0].y == chart.bottom and chart.y_ticks[-1].y == chart.top
    # Time: whole seconds from the fault, which is the origin.
    labels = [t.label for t in chart.x_ticks]
    assert labels[:3] == ["-2s", "-1s", "+0s"] and "+3s" in labels
    xs = [t.x for t in chart.x_ticks]
    assert xs == sorted(xs) and chart.left <= xs[0] and xs[-1] <= chart.right
    assert chart.axis_caption == "seconds from the fault"


def test_a_long_drill_has_at_most_twelve_time_ticks():
    chart = chart_of(report_for(steady(700, start=0.0, step=1.0)))
    assert 2 <= len(chart.x_ticks) <= 12
    assert [t.label for t in chart.x_ticks][:2] == ["+0s", "+60s"]


def test_holder_segments_cover_the_band_in_order():
    chart = chart_of(report_for(crash_drill()))
    mx1, nobody, mx2 = chart.holders
    assert (mx1.fill, nobody.fill, mx2.fill) == (layout.PALETTE[0], layout.NOBODY_COLOUR, layout.PALETTE[1])
    assert nobody.title == "nobody +0.60s to +0.70s"
    # Named where the name fits; the 0.1 s without a holder is too narrow.
    assert (mx1.label, nobody.label, mx2.label) == ("mx1", None, "mx2")
    assert mx1.x == chart.left and mx2.x + mx2.width == pytest.approx(chart.right, abs=0.2)
    assert mx1.x + mx1.width == pytest.approx(nobody.x, abs=0.2)
    assert nobody.width >= 1


def test_a_split_is_hatched_and_in_the_legend():
    report = report_for(crash_drill(), holder_samples=[(T0 - 2, "mx1"), (T0 + 0.1, "split"), (T0 + 1, "mx2")])
    chart = chart_of(report)
    assert chart.holders[1].fill == layout.SPLIT_FILL and chart.holders[1].title.startswith("both (split)")
    assert "IP on both relays" in [e.text for e in chart.legend]
    assert "IP held by nobody" not in [e.text for e in chart.legend]


def test_close_events_get_their_own_label_rows():
    chart = chart_of(report_for(crash_drill()))
    by_label = {e.label: e for e in chart.events}
    fault, detected = by_label["fault_injected +0.00s"], by_label["failure_detected +0.55s"]
    assert fault.label_y != detected.label_y
    # Every label row sits between the outage line and the plot.
    assert all(chart.outage_y < e.label_y < chart.top for e in chart.events)
    assert all(e.line_top < chart.band_bottom for e in chart.events)


def test_a_label_near_the_right_edge_goes_left_of_its_mark():
    report = report_for(crash_drill(), events=events(fault_injected=0.0, a_rather_long_event_name_at_the_end=3.0))
    mark = next(e for e in chart_of(report).events if e.label.startswith("a_rather_long"))
    assert mark.anchor == "end" and mark.label_x < mark.x
    assert next(e for e in chart_of(report).events if e.label.startswith("fault")).anchor == "start"


def test_the_outage_is_shaded_where_it_happened():
    chart = chart_of(report_for(crash_drill()))
    fault_tick = next(t for t in chart.x_ticks if t.label == "+0s")
    assert chart.outage.text == "mail stopped at +0.00s for 0.50 s, back at +0.50s"
    assert chart.outage.x == pytest.approx(fault_tick.x, abs=0.1)
    assert chart.outage.width >= 4 and chart.left <= chart.outage.label_x < chart.right


def test_no_outage_no_shade():
    assert chart_of(report_for(steady(20))).outage is None


def test_an_outage_on_one_target_names_it():
    attempts = [
        sent(0, -0.2, target=LB),
        sent(1, -0.1, target=VIP),
        sent(2, 0.0, code=None, node=None, target=VIP),
        sent(3, 0.1, code=421, target=LB),
        sent(4, 0.4, node="mx2", target=VIP),
        sent(5, 1.2, node="mx2", target=LB),
    ]
    text = chart_of(report_for(attempts)).outage.text
    assert text == f"mail stopped on {LB} at +0.10s for 1.10 s, back at +1.20s"


def test_legend_lists_only_what_the_chart_shows_left_to_right():
    chart = chart_of(report_for(crash_drill()))
    assert [e.text for e in chart.legend] == ["accepted by mx1", "accepted by mx2", "no answer", "IP held by nobody"]
    xs = [e.x for e in chart.legend]
    assert xs == sorted(xs) and xs[0] == chart.left
    assert all(e.text_x == pytest.approx(e.x + 16) for e in chart.legend)


def test_the_chart_grows_with_its_label_rows():
    one = chart_of(report_for(crash_drill(), events=events(fault_injected=0.0)))
    three = chart_of(report_for(crash_drill()))  # fault, detection and move within 0.7 s
    assert three.top > one.top and three.height - one.height == three.top - one.top
    assert three.bottom - three.top == three.plot_height


# --- the tables --------------------------------------------------------------


def steps_config():
    steps = [
        Step("check the steady state", "ok", 2.5),
        Step("inject mta-crash on mx1", "ok", 0.31),
        Step("fail back", "failed", 30.0, "timed out after 30s waiting for queues"),
    ]
    return {"rate": 10, "steps": [vars(s) for s in steps]}


def test_steps_become_a_table_and_leave_the_configuration():
    page = layout.page_layout(report_for(crash_drill(), config=steps_config()))
    assert page.steps.header == ("#", "step", "took", "outcome", "detail")
    assert [r.cells for r in page.steps.rows] == [
        ("1", "check the steady state", "2.50 s", "ok", ""),
        ("2", "inject mta-crash on mx1", "0.31 s", "ok", ""),
        ("3", "fail back", "30.00 s", "failed", "timed out after 30s waiting for queues"),
    ]
    assert [r.css_class for r in page.steps.rows] == ["", "", "failed"]
    assert [r.cells[0] for r in page.config.rows] == ["rate"]


def test_steps_that_record_their_start_show_it_from_the_fault():
    steps = [{"name": "inject", "result": "ok", "seconds": 0.2, "detail": "", "started": T0 - 0.2, "host": "mx1"}]
    table = layout.steps_table(steps, origin=T0)
    assert table.header == ("#", "step", "started", "took", "outcome", "detail")
    assert table.rows[0].cells == ("1", "inject", "-0.20s", "0.20 s", "ok", "host=mx1")
    assert table.numeric == frozenset({0, 3})


def test_a_report_without_steps_has_no_steps_table():
    page = layout.page_layout(report_for(crash_drill(), config={"rate": 10, "steps": "n/a"}))
    assert page.steps is None
    assert ("steps", "n/a") in [r.cells for r in page.config.rows]


def test_id_lists_show_the_first_fifty():
    attempts = steady(60, start=-6.0)
    page = layout.page_layout(report_for(attempts, delivered={}))
    (lost,) = page.id_lists
    assert (lost.title, lost.count, len(lost.shown), lost.more) == ("Lost (acknowledged, never arrived)", 60, 50, 10)


# --- the rendered page -------------------------------------------------------


def test_templates_ship_inside_the_package():
    templates = resources.files("mailha.drill_report") / "templates"
    assert (templates / "report.html.j2").is_file() and (templates / "timeline.svg.j2").is_file()


def test_the_page_places_the_layout():
    report = report_for(crash_drill(), config=steps_config())
    page = drill_report.render_html(report)
    chart = chart_of(report)
    svg = svg_of(page)
    ns = {"svg": "http://www.w3.org/2000/svg"}
    bars = svg.findall("svg:rect[@class='accepted']", ns) + svg.findall("svg:rect[@class='refused']", ns)
    assert len(bars) == len(chart.bars)
    assert len(svg.findall("svg:rect[@class='holder']", ns)) == len(chart.holders)
    assert len(svg.findall("svg:g[@class='event']", ns)) == len(chart.events)
    assert svg.get("height") == str(chart.height)
    assert "<h2>Steps</h2>" in page and '<tr class="failed"><td class="num">3</td><td>fail back</td>' in page
    assert "timed out after 30s waiting for queues" in page
    assert '"name": "fail back"' not in page  # no longer dumped as JSON


def test_hostile_names_are_escaped_everywhere():
    attempts = steady(20, node=HOSTILE)
    report = report_for(
        attempts,
        scenario=HOSTILE,
        holder_samples=[(T0 - 2, HOSTILE)],
        events=[{"name": "fault_injected", "at": T0}, {"name": HOSTILE, "at": T0 + 0.5}],
        delivered={},
        config={"note": HOSTILE, "steps": [{"name": HOSTILE, "result": "failed", "seconds": 1, "detail": HOSTILE}]},
    )
    page = drill_report.render_html(report)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "accepted by &lt;script&gt;" in page
    root = svg_of(page)  # still well-formed, the names only text
    assert any(HOSTILE in (t.text or "") for t in root.iter("{http://www.w3.org/2000/svg}text"))


def test_a_name_cannot_break_out_of_an_attribute():
    page = drill_report.render_html(report_for(steady(20, node='mx1" onmouseover="alert(1)')))
    assert 'onmouseover="' not in page
    assert not re.search(r"<[^>]*\sonmouseover=", page)
