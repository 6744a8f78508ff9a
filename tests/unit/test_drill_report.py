"""Drill reports from crafted records: reconciliation, outage, verdict, files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mailha import drill_report
from mailha.traffic import Attempt

T0 = 1_764_000_000.0  # the fault, in every crafted drill below
SLOS = {"max_outage_seconds": 2.0, "max_lost": 0, "max_duplicated": 0}
LB, VIP = "10.213.0.20:25", "10.213.0.100:25"


# The drill records attempts as the traffic generator does.
Sent = Attempt


def sent(seq, at, code=250, node="mx1", target=LB, took=0.02):
    reply = {250: "2.0.0 Ok: queued", 421: "4.3.0 try again", None: "ConnectionRefusedError"}.get(code, "")
    return Sent(seq, f"<m{seq}@news.mailha.test>", target, T0 + at, T0 + at + took, code, reply, node)


def steady(count, start=-2.0, step=0.1, node="mx1", target=LB, first_seq=0):
    return [sent(first_seq + i, start + i * step, node=node, target=target) for i in range(count)]


def crash_drill():
    """mx1 serves, the fault at 0, 5 attempts fail for 0.5 s, mx2 serves."""
    attempts = steady(20, start=-2.0)  # -2.0 .. -0.1
    attempts += [sent(20 + i, i * 0.1, code=None, node=None) for i in range(5)]  # 0.0 .. 0.4
    attempts += steady(20, start=0.5, node="mx2", first_seq=25)
    return attempts


def delivered_all(attempts):
    return {a.message_id: 1 for a in attempts if a.accepted}


def events(**offsets):
    return [{"name": name, "at": T0 + offset} for name, offset in offsets.items()]


def report_for(attempts, delivered=None, slos=SLOS, **kwargs):
    arguments = {
        "attempts": attempts,
        "delivered": delivered_all(attempts) if delivered is None else delivered,
        "dkim": {},
        "holder_samples": [(T0 - 2, "mx1"), (T0 + 0.6, None), (T0 + 0.7, "mx2")],
        "events": events(fault_injected=0.0, failure_detected=0.55, floating_ip_moved=0.7, restored=3.0),
        "slos": slos,
        "config": {"rate": 10, "duration": 4},
        "scenario": "mta-crash",
    }
    arguments.update(kwargs)
    return drill_report.build_report(**arguments)


# --- reconcile ---------------------------------------------------------------


def test_reconcile_finds_lost_duplicated_and_unexpected():
    attempts = [sent(0, 0.0), sent(1, 0.1), sent(2, 0.2), sent(3, 0.3, code=None, node=None), sent(4, 0.4, 421)]
    delivered = {
        "<m0@news.mailha.test>": 1,
        # m1 acknowledged but never arrived: lost
        "<m2@news.mailha.test>": 3,  # duplicated (two extra copies)
        "<m3@news.mailha.test>": 1,  # timed out for the client, yet queued: unexpected
        "<m4@news.mailha.test>": 0,  # refused and absent: as it should be
        "<other-run@news.mailha.test>": 1,
    }
    result = drill_report.reconcile(attempts, delivered)
    assert result["submitted"] == 5
    assert result["acknowledged"] == 3
    assert result["refused"] == 2 and result["no_reply"] == 1
    assert result["delivered"] == 3
    assert result["lost"] == ["<m1@news.mailha.test>"]
    assert result["duplicated"] == ["<m2@news.mailha.test>"]
    assert result["extra_copies"] == 2
    assert result["unexpected"] == ["<m3@news.mailha.test>"]
    assert result["foreign"] == ["<other-run@news.mailha.test>"]


def test_reconcile_unexpected_is_not_loss():
    attempts = [sent(0, 0.0, code=None, node=None)]
    result = drill_report.reconcile(attempts, {"<m0@news.mailha.test>": 1})
    assert result["lost"] == [] and result["unexpected"] == ["<m0@news.mailha.test>"]


def test_reconcile_accepts_the_traffic_attempt_class():
    attempts = [Attempt(0, "<a@x>", LB, T0, T0 + 0.1, 250, "ok"), Attempt(1, "<b@x>", LB, T0, T0 + 0.1, 451, "no")]
    result = drill_report.reconcile(attempts, {"<a@x>": 1})
    assert (result["acknowledged"], result["refused"], result["lost"]) == (1, 1, [])


# --- outage ------------------------------------------------------------------


def test_no_failure_means_no_outage():
    result = drill_report.outage(steady(30), T0)
    assert result["seconds"] == 0.0 and result["worst_target_seconds"] == 0.0
    assert result["recovered"] and result["failed"] == 0 and result["start"] is None


def test_outage_from_first_failure_to_first_acceptance():
    result = drill_report.outage(crash_drill(), T0)
    assert result["seconds"] == pytest.approx(0.5)
    assert result["start"] == pytest.approx(T0) and result["end"] == pytest.approx(T0 + 0.5)
    assert result["failed"] == 5 and result["recovered"]


def test_failures_before_the_fault_do_not_count():
    attempts = [sent(0, -1.0, code=None, node=None), *steady(10, start=-0.9, first_seq=1)]
    assert drill_report.outage(attempts, T0)["seconds"] == 0.0
    # Without a fault time every failure counts.
    assert drill_report.outage(attempts, None)["seconds"] == pytest.approx(0.1)


def test_attempt_in_flight_at_the_fault_starts_the_outage_at_the_fault():
    attempts = [sent(0, -0.3, code=None, node=None, took=1.0), sent(1, 0.8)]
    result = drill_report.outage(attempts, T0)
    assert result["start"] == pytest.approx(T0)
    assert result["seconds"] == pytest.approx(0.8)


def test_outage_without_recovery_is_a_lower_bound():
    attempts = steady(5, start=-0.5) + [sent(10 + i, i * 0.5, code=None, node=None) for i in range(4)]
    result = drill_report.outage(attempts, T0)
    assert not result["recovered"] and result["end"] is None
    assert result["seconds"] == pytest.approx(1.52)  # to the end of the last attempt


def test_outage_per_target_and_worst_target():
    # The VIP comes back at 0.4 s; the balancer, still sending to mx1, at 1.2 s.
    attempts = [
        sent(0, -0.2, target=LB),
        sent(1, -0.1, target=VIP),
        sent(2, 0.0, code=None, node=None, target=VIP),
        sent(3, 0.1, code=421, target=LB),
        sent(4, 0.4, node="mx2", target=VIP),
        sent(5, 0.5, code=421, target=LB),
        sent(6, 1.2, node="mx2", target=LB),
    ]
    result = drill_report.outage(attempts, T0)
    assert result["seconds"] == pytest.approx(0.4)  # all targets together
    assert result["per_target"][VIP]["seconds"] == pytest.approx(0.4)
    assert result["per_target"][LB]["seconds"] == pytest.approx(1.1)
    assert result["worst_target_seconds"] == pytest.approx(1.1)
    assert result["failed_after_fault"] == 3


# --- verdict -----------------------------------------------------------------

PASSING = {"outage_seconds": 0.5, "lost": 0, "duplicated": 0, "recovered": True, "submitted": 10}


def test_verdict_passes_within_every_target():
    assert drill_report.verdict(PASSING, SLOS) == (True, [])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"outage_seconds": 2.5}, "outage 2.50 s exceeds max_outage_seconds 2 s"),
        ({"lost": 1}, "1 acknowledged message(s) never arrived (max 0, max_lost)"),
        ({"lost": ["<a@x>", "<b@x>"]}, "2 acknowledged message(s) never arrived (max 0, max_lost)"),
        ({"duplicated": 2}, "2 message(s) arrived more than once (max 0, max_duplicated)"),
        ({"recovered": False}, "mail did not come back"),
        ({"submitted": 0}, "no submission was recorded"),
    ],
)
def test_verdict_names_each_breach(change, expected):
    passed, breaches = drill_report.verdict({**PASSING, **change}, SLOS)
    assert not passed
    assert len(breaches) == 1 and breaches[0].startswith(expected), breaches


def test_verdict_optional_targets():
    figures = {**PASSING, "unsigned": 1, "split_seconds": 0.3}
    assert drill_report.verdict(figures, SLOS)[0] is True  # not asked for
    passed, breaches = drill_report.verdict(figures, {**SLOS, "max_unsigned": 0, "max_split_seconds": 0.0})
    assert not passed and len(breaches) == 2
    assert "without a valid DKIM signature" in breaches[0] and "both relays" in breaches[1]


def test_verdict_refuses_a_misspelt_target():
    with pytest.raises(ValueError, match="unknown SLO max_loss"):
        drill_report.verdict(PASSING, {"max_loss": 0})


# --- the report --------------------------------------------------------------


def test_report_of_a_clean_failover_passes():
    report = report_for(crash_drill())
    assert report["verdict"] == {"passed": True, "breaches": []}
    figures = report["figures"]
    assert figures["outage_seconds"] == pytest.approx(0.5)
    assert (figures["submitted"], figures["acknowledged"], figures["refused"]) == (45, 40, 5)
    assert (figures["lost"], figures["duplicated"], figures["unexpected"]) == (0, 0, 0)
    assert figures["detection_seconds"] == pytest.approx(0.55)
    assert figures["floating_ip_moved_seconds"] == pytest.approx(0.7)
    # No first_accept event recorded: taken from the traffic itself.
    assert figures["first_accept_seconds"] == pytest.approx(0.5)
    assert figures["nobody_holds_seconds"] == pytest.approx(0.1)
    assert report["timeline"]["origin_is_fault"] is True
    assert [e["name"] for e in report["timeline"]["events"]][:2] == ["fault_injected", "failure_detected"]
    assert report["timeline"]["holders"][1] == {"holder": None, "from": 0.6, "to": 0.7}
    assert set(report) >= {"schema", "verdict", "figures", "reconciliation", "outage", "timeline", "slos", "config"}


@pytest.mark.parametrize(
    ("slos", "breach"),
    [
        ({**SLOS, "max_outage_seconds": 0.2}, "outage 0.50 s exceeds max_outage_seconds"),
        (SLOS, "1 acknowledged message(s) never arrived"),
    ],
)
def test_report_breaches(slos, breach):
    attempts = crash_drill()
    delivered = delivered_all(attempts)
    if slos is SLOS:
        del delivered[attempts[-1].message_id]
    report = report_for(attempts, delivered=delivered, slos=slos)
    assert report["verdict"]["passed"] is False
    assert any(b.startswith(breach) for b in report["verdict"]["breaches"]), report["verdict"]


def test_report_counts_duplicates_unexpected_and_dkim():
    attempts = crash_drill()
    delivered = delivered_all(attempts)
    delivered[attempts[0].message_id] = 2
    delivered[attempts[21].message_id] = 1  # failed for the client, arrived anyway
    dkim = {attempts[0].message_id: True, attempts[30].message_id: False}
    report = report_for(attempts, delivered=delivered, dkim=dkim, slos={**SLOS, "max_unsigned": 0})
    figures = report["figures"]
    assert (figures["duplicated"], figures["unexpected"], figures["lost"]) == (1, 1, 0)
    assert (figures["dkim_checked"], figures["dkim_valid"], figures["unsigned"]) == (2, 1, 1)
    assert report["reconciliation"]["unsigned"] == [attempts[30].message_id]
    assert len(report["verdict"]["breaches"]) == 2  # duplicated and unsigned; unexpected is not a breach


def test_a_duplicate_cut_in_flight_is_explained_and_still_breaches():
    """A relay that logged "message may be sent more than once" for a message
    explains its duplicate (RFC 1047); the target still counts it."""
    attempts = crash_drill()
    delivered = delivered_all(attempts)
    delivered[attempts[0].message_id] = 2
    delivered[attempts[1].message_id] = 2
    cut = {attempts[0].message_id, attempts[5].message_id}
    report = report_for(attempts, delivered=delivered, cut_in_flight=cut)
    figures = report["figures"]
    assert (figures["duplicated"], figures["duplicated_cut_in_flight"]) == (2, 1)
    assert report["reconciliation"]["duplicated_cut_in_flight"] == [attempts[0].message_id]
    assert report["verdict"]["passed"] is False
    assert "2 (1 cut in flight: 250 lost)" in drill_report.render_summary(report)


SINK = "mailha-sink.mailha.test[10.213.0.30]:25"
INTERNAL = ["10.213.0.11", "10.213.0.12", "10.213.0.100"]


def sent_line(queue_id: str, relay: str = SINK) -> str:
    return f"{queue_id}: to=<s@inbox.test>, relay={relay}, delay=0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok)"


def test_copies_no_relay_saw_confirmed_are_cut_in_flight():
    """Postfix's own logs tell an RFC 1047 duplicate (a delivery whose 250
    never came back) from one a relay really sent twice."""
    mx1 = "\n".join(
        [
            "A1: message-id=<partition@x>",
            "A1: conversation with mailha-sink[10.213.0.30] timed out: message may be sent more than once",
            # Handed over to the active relay: not a delivery.
            sent_line("A1", relay="10.213.0.100[10.213.0.100]:25"),
            "B1: message-id=<stopped@x>",  # stopped after the sink's 250, before its record
            "C1: message-id=<twice@x>",
            sent_line("C1"),
            sent_line("C1"),
            "D1: message-id=<once@x>",
            sent_line("D1"),
        ]
    )
    mx2 = "\n".join(
        [
            "E2: message-id=<partition@x>",
            sent_line("E2"),
            "F2: message-id=<stopped@x>",
            sent_line("F2"),
            "G2: message-id=<handover@x>",
            sent_line("G2"),
            "H2: message-id=<handover@x>",
            sent_line("H2"),
        ]
    )
    delivered = {"<partition@x>": 2, "<stopped@x>": 2, "<twice@x>": 2, "<once@x>": 1, "<handover@x>": 2}
    cut = drill_report.cut_in_flight([mx1, mx2], delivered, INTERNAL)
    # twice and handover: every copy was confirmed, so a relay sent it twice: a defect.
    assert cut == {"<partition@x>", "<stopped@x>"}


def test_report_is_json_and_renders_again_from_json():
    report = report_for(crash_drill(), config={"path": Path("/x"), "ids": {"b", "a"}})
    text = json.dumps(report)
    again = json.loads(text)
    assert again["config"] == {"path": "/x", "ids": ["a", "b"]}
    # The attempts inside report.json are enough to build the same figures.
    rebuilt = report_for(again["attempts"], delivered=delivered_all(crash_drill()))
    assert rebuilt["figures"] == report_for(crash_drill())["figures"]


def test_fault_time_given_explicitly_wins():
    report = report_for(crash_drill(), fault_at=T0 - 1.0, events=[])
    assert report["timeline"]["origin"] == T0 - 1.0
    assert report["figures"]["detection_seconds"] is None


def test_summary_shows_verdict_figures_and_timeline():
    attempts = crash_drill()
    delivered = delivered_all(attempts)
    del delivered[attempts[-1].message_id]
    text = drill_report.render_summary(report_for(attempts, delivered=delivered))
    assert "verdict: FAILED" in text
    assert "breach: 1 acknowledged message(s) never arrived" in text
    assert re.search(r"outage seen by clients +0\.50 s +≤ 2 s met", text)
    assert re.search(r"\(lost\) +1 +≤ 0 BREACHED", text)
    assert re.search(r"\+0\.700 +floating_ip_moved", text)
    assert "verdict: PASSED" in drill_report.render_summary(report_for(crash_drill()))


def test_write_report_writes_a_self_contained_page(tmp_path):
    report = report_for(crash_drill(), events=events(fault_injected=0.0, floating_ip_moved=0.7, restored=3.0))
    report["files"] = {"html": "not written into the report"}
    json_path, html_path = drill_report.write_report(tmp_path / "20260101T000000", report)
    assert json_path.name == "report.json" and html_path.name == "report.html"
    assert "files" not in json.loads(json_path.read_text())
    page = html_path.read_text()
    assert page.count("<svg") == 1 and "</svg>" in page
    for label in ("fault_injected +0.00s", "floating_ip_moved +0.70s", "restored +3.00s"):
        assert label in page
    assert "PASSED" in page
    assert "mail stopped at +0.00s for 0.50 s, back at +0.50s" in page
    assert 'class="holder"' in page and "accepted by mx2" in page and "no answer" in page
    # Self-contained: no scripts, no external stylesheets, images or fonts.
    assert not re.search(r"<script|<link|<img|\bsrc=|url\(http|@import", page)
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}


def test_page_without_failure_says_so_and_escapes_names(tmp_path):
    attempts = steady(20, node="<mx1>")
    report = report_for(attempts, events=[{"name": "fault_injected", "at": T0}, {"name": "<b>odd</b>", "at": T0 + 0.5}])
    _, html_path = drill_report.write_report(tmp_path, report)
    page = html_path.read_text()
    assert "no submission failed" in page
    assert "<b>odd</b>" not in page and "&lt;b&gt;odd&lt;/b&gt;" in page
    assert "accepted by &lt;mx1&gt;" in page


def test_failed_drill_page_shows_the_breaches(tmp_path):
    attempts = steady(5, start=-0.5) + [sent(10 + i, i * 0.5, code=None, node=None) for i in range(4)]
    _, html_path = drill_report.write_report(tmp_path, report_for(attempts))
    page = html_path.read_text()
    assert 'class="verdict failed"' in page
    assert "mail did not come back" in page
    assert "and did not come back" in page  # the chart's outage label


def test_long_drill_uses_wider_buckets():
    attempts = steady(700, start=0.0, step=1.0)
    report = report_for(attempts)
    assert report["timeline"]["series"]["bucket_seconds"] == 3
    assert sum(sum(b["accepted"].values()) for b in report["timeline"]["series"]["buckets"]) == 700
