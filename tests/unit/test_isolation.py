"""Isolating a possibly compromised relay, without a lab: the marks, what they refuse,
how status shows them, and the queue listing an operator reads before releasing mail."""

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from mailha import fencing, isolation, queue, status, switch
from mailha.cli import main
from mailha.errors import BadInput, MailhaError
from tests.unit.test_status import node, topology
from tests.unit.test_switch import pair, state  # noqa: F401 - fixtures

POSTCAT = """\
*** ENVELOPE RECORDS hold/1C36B1825B1 ***
message_size:             304             334               2               0             304               0
message_arrival_time: Tue Dec  1 21:57:26 2026
create_time: Tue Dec  1 21:57:26 2026
named_attribute: rewrite_context=local
sender_fullname: root
sender: a@news.mailha.test
named_attribute: dsn_orig_rcpt=rfc822;x@inbox.test
original_recipient: x@inbox.test
recipient: x@inbox.test
original_recipient: y@inbox.test
recipient: y@inbox.test
*** MESSAGE CONTENTS hold/1C36B1825B1 ***
*** ENVELOPE RECORDS deferred/4/4AB2C1825C0 ***
message_size:            5120             400               1               0            5120               0
message_arrival_time: Tue Dec  1 20:57:26 2026
sender:
recipient: postmaster@inbox.test
*** ENVELOPE RECORDS active/ZZZ ***
message_size:             100
"""


def test_postcat_envelopes_become_one_row_per_message():
    now = datetime(2026, 12, 1, 21, 57, 36, tzinfo=UTC)
    held, bounce = queue.parse_postcat(POSTCAT, now=now)
    assert (held.queue, held.queue_id, held.sender, held.recipients, held.size) == (
        "hold",
        "1C36B1825B1",
        "a@news.mailha.test",
        2,
        304,
    )
    assert held.age_seconds == 10.0
    # The null sender, an hour old, in a hashed queue directory.
    assert (bounce.queue, bounce.queue_id, bounce.sender, bounce.age_seconds) == ("deferred", "4AB2C1825C0", "<>", 3610)
    # The truncated third envelope (no arrival time) is left out, not guessed.
    table = queue.render_table("mx1", [held, bounce])
    assert "2 messages, 3 recipients on mx1" in table


def test_an_empty_queue_says_so():
    assert queue.parse_postcat("") == []
    assert queue.render_table("mx1", []) == "the queue of mx1 is empty"


def test_marks_round_trip_and_a_damaged_file_is_an_error_not_nothing(pair):  # noqa: F811
    assert fencing.marks(pair) == {}
    fencing.write_marks(pair, {"mx1": {"since": "2026-12-01T00:00:00Z", "reason": "breach"}})
    assert fencing.marks(pair)["mx1"]["reason"] == "breach"
    (pair.state_dir / fencing.ISOLATED_FILE).write_text("[1, 2")
    with pytest.raises(MailhaError, match="cannot be read"):
        fencing.marks(pair)
    (pair.state_dir / fencing.ISOLATED_FILE).write_text(json.dumps(["mx1"]))
    with pytest.raises(MailhaError, match="not a JSON object"):
        fencing.marks(pair)


def test_the_suspect_is_the_active_relay_unless_an_isolation_was_left_unfinished():
    # Nothing isolated: the relay holding the floating IP, else the designated primary.
    assert isolation.choose_suspect({}, ["mx2"], "mx1") == ("mx2", False)
    assert isolation.choose_suspect({}, [], "mx1") == ("mx1", False)
    assert isolation.choose_suspect({}, ["mx1", "mx2"], "mx1") == ("mx1", False)
    # A run that stopped half-way left mx1 marked, and the floating IP may be
    # on mx2 already: running again resumes mx1's isolation, not mx2's.
    unfinished = {"mx1": {"since": "2026-12-04T03:00:06Z", "reason": "breach"}}
    assert isolation.choose_suspect(unfinished, ["mx2"], "mx1") == ("mx1", True)
    # A finished isolation is not resumed: the active relay is the suspect,
    # and the isolated peer refuses it later (the only relay left).
    finished = {"mx1": {"since": "2026-12-04T03:00:06Z", "finished": "2026-12-04T03:01:00Z"}}
    assert isolation.choose_suspect(finished, ["mx2"], "mx1") == ("mx2", False)


def test_a_switch_to_an_isolated_relay_is_refused(pair):  # noqa: F811
    fencing.write_marks(pair, {"mx1": {"since": "2026-12-01T00:00:00Z"}})
    with pytest.raises(MailhaError, match=r"mx1 is isolated as possibly compromised.*mailha unisolate mx1"):
        fencing.refuse_if_isolated(pair, "mx1", "failback")
    fencing.refuse_if_isolated(pair, "mx2", "failover")  # the other one is not


def test_an_isolated_relays_queue_is_released_only_with_yes(pair):  # noqa: F811
    fencing.write_marks(pair, {"mx1": {"since": "2026-12-01T00:00:00Z"}})
    with pytest.raises(MailhaError, match="may hold an attacker"):
        switch.run_handover(pair, "mx1")


def test_unisolate_needs_a_reason_and_an_isolated_relay(pair):  # noqa: F811
    with pytest.raises(BadInput, match="--reason"):
        isolation.run_unisolate(pair, "mx1", " ")
    with pytest.raises(MailhaError, match="mx1 is not isolated"):
        isolation.run_unisolate(pair, "mx1", "rebuilt")


def test_cli_queue_handover_of_an_isolated_relay_without_yes_is_one_line(pair):  # noqa: F811
    fencing.write_marks(pair, {"mx1": {"since": "2026-12-01T00:00:00Z"}})
    result = CliRunner().invoke(main, ["queue", "handover", "--node", "mx1", "-i", str(pair.inventory_path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0


def test_status_shows_an_isolated_relay_as_critical_and_nothing_else_about_it():
    mx1 = node("mx1", agent=False, smtp=False, lb="MAINT")
    mx1.isolated = {"since": "2026-12-01T00:00:00Z", "reason": "breach"}
    t = topology(mx1, node("mx2", holds=True, state="MASTER", lb="UP", role="primary"))
    texts = [p["problem"] for p in t.problems]
    assert t.verdict == status.CRITICAL
    assert any("mx1 is ISOLATED" in text and "mailha unisolate mx1" in text for text in texts)
    # Its agent and MTA are down on purpose: not reported as separate faults.
    assert not any("health agent" in text or "does not greet" in text for text in texts)
    assert "ISOLATED" in status.render_table(t)


def test_status_flags_an_isolated_relay_the_load_balancer_still_uses():
    mx1 = node("mx1", agent=False, smtp=False, lb="UP")
    mx1.isolated = {"since": "2026-12-01T00:00:00Z"}
    t = topology(mx1, node("mx2", holds=True, state="MASTER", lb="UP", role="primary"))
    assert any("has not disabled the isolated mx1" in p["problem"] for p in t.problems)
