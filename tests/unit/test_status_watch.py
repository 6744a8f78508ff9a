"""`mailha status --watch`, with the status gathering faked at its boundary
(status.gather), and the agent's optional health level and greeting time."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from mailha import status, watch
from mailha.cli import main
from tests.unit.test_status import HEALTHY_PAIR, node, topology
from tests.unit.test_switch import pair, state  # noqa: F401 - fixtures

HEALTHY = topology(**HEALTHY_PAIR)
DEGRADED = topology(node("mx1", holds=True, state="MASTER", lb="UP"), node("mx2", smtp=False))


@pytest.fixture
def rounds(monkeypatch):
    """status.gather answers each round from this list, in turn; an exception in it is raised."""
    answers = []

    def gather(_pair):
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(status, "gather", gather)
    return answers


def run(pair, *args):  # noqa: F811 - the fixture
    return CliRunner().invoke(main, ["status", "-i", str(pair.inventory_path), *args])


def test_watch_into_a_pipe_prints_a_separator_and_the_table_each_round(pair, rounds):  # noqa: F811
    rounds += [HEALTHY, HEALTHY, DEGRADED]
    result = run(pair, "--watch", "0.5", "--count", "3")
    assert result.exit_code == 1, result.output  # the last round's verdict: degraded
    assert watch.CLEAR_SCREEN not in result.output
    lines = result.output.splitlines()
    separators = [i for i, line in enumerate(lines) if line.startswith("--- ") and line.endswith("Z ---")]
    assert len(separators) == 3
    assert [lines[i + 1] for i in separators] == ["mailha lab: floating IP 10.0.0.100 (mta.mailha.test)"] * 3
    assert [line for line in lines if line.startswith("verdict: ")] == ["verdict: healthy"] * 2 + ["verdict: degraded"]
    assert rounds == []


def test_watch_with_json_prints_one_document_per_line(pair, rounds):  # noqa: F811
    rounds += [HEALTHY, DEGRADED]
    result = run(pair, "--watch", "0.5", "--count", "2", "--output", "json")
    assert result.exit_code == 1, result.output
    documents = [json.loads(line) for line in result.output.splitlines()]
    assert [d["verdict"] for d in documents] == ["healthy", "degraded"]
    assert all(d["time"].endswith("Z") and d["holders"] == ["mx1"] for d in documents)


def test_ctrl_c_ends_a_watch_with_exit_0_and_no_traceback(pair, rounds):  # noqa: F811
    rounds += [DEGRADED, KeyboardInterrupt()]
    result = run(pair, "--watch", "0.5")
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "Aborted" not in result.output
    assert result.output.count("verdict: degraded") == 1


def test_watch_alone_refreshes_every_two_seconds(pair, rounds, monkeypatch):  # noqa: F811
    seen = {}

    def fake_watch(gather, **options):
        seen.update(options, topology=gather())
        return 0

    monkeypatch.setattr(watch, "watch", fake_watch)
    rounds.append(HEALTHY)
    result = run(pair, "--watch", "-o", "json")
    assert result.exit_code == 0, result.output
    assert (seen["interval"], seen["count"], seen["as_json"], seen["tty"]) == (2.0, None, True, False)
    assert seen["topology"] is HEALTHY


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--count", "2"], "--count needs --watch"), (["--watch", "0.1"], "0.1 is not in the range 0.5<=x<=3600")],
)
def test_bad_watch_options_are_one_line(pair, args, words):  # noqa: F811
    result = run(pair, *args)
    assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output


def test_on_a_terminal_each_round_redraws_in_place_on_the_interval():
    shown, slept = [], []
    times = iter([100.0, 100.3, 102.0, 102.5])

    def sleep(seconds):
        slept.append(seconds)
        if len(slept) == 2:
            raise KeyboardInterrupt

    code = watch.watch(
        lambda: HEALTHY, interval=2.0, tty=True, echo=shown.append, sleep=sleep, clock=lambda: next(times)
    )
    assert code == 0
    assert len(shown) == 3 and shown[-1] == ""  # two rounds, then a new line after ^C
    assert all(
        text.startswith(watch.CLEAR_SCREEN + "mailha status every 2s (Ctrl-C to stop), read ") for text in shown[:2]
    )
    assert "verdict: healthy" in shown[0]
    # From the start of one round to the next: the time a round took is not slept again.
    assert [round(s, 2) for s in slept] == [1.7, 1.5]


AGENT = {"vrrp_state": "MASTER", "holds_floating_ip": True, "healthy": True, "drained": False, "queue": {"active": 0}}


def answer(**extra):
    return SimpleNamespace(reachable=True, error=None, status=200, document=AGENT | extra)


@pytest.mark.parametrize(
    ("extra", "level", "latency"),
    [
        ({}, None, None),  # an agent that does not report them yet
        ({"health_level": "degraded", "greeting_latency_median_seconds": 0.0425}, "degraded", 0.0425),
        ({"health_level": 2, "greeting_latency_median_seconds": 1}, "2", 1.0),
        ({"health_level": "bad level\n", "greeting_latency_median_seconds": -1}, None, None),
        ({"health_level": None, "greeting_latency_median_seconds": "fast"}, None, None),
    ],
)
def test_health_level_and_greeting_time_are_shown_when_the_agent_reports_them(extra, level, latency):
    document, problem = status.agent_status(answer(**extra))
    assert problem == "" and document is not None  # never unreadable for them
    assert (document["health_level"], document["greeting_latency_median_seconds"]) == (level, latency)


def test_the_table_shows_health_level_and_greeting_time_or_a_dash():
    t = topology(
        node("mx1", holds=True, state="MASTER", lb="UP", health_level="ok", greeting_latency_median_seconds=0.0425),
        node("mx2"),
    )
    lines = status.render_table(t).splitlines()
    assert lines[1].split()[-3:] == ["HEALTH", "GREETING", "p50"]
    assert lines[2].split()[-2:] == ["ok", "42ms"]
    assert lines[3].split()[-2:] == ["-", "-"]
    assert json.loads(status.render_json(t))["nodes"][0]["greeting_latency_median_seconds"] == 0.0425
