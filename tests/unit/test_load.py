"""Bulk load (mailha.load) against a real SMTP server on loopback."""

import time

import pytest

from mailha.load import SessionLoad, message_bytes
from mailha.traffic import Target


def test_message_has_the_size_asked_for_and_nothing_smtp_would_stuff():
    data = message_bytes("<m-1@news.mailha.test>", "c@news.mailha.test", "s@inbox.test", 51200)
    assert 51200 <= len(data) < 51200 + 100
    lines = data.split(b"\r\n")
    assert not any(line.startswith(b".") for line in lines)
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"Message-ID: <m-1@news.mailha.test>\r\n" in data


def test_sessions_share_one_budget_and_reuse_their_connections(smtp_server):
    target = Target("127.0.0.1", smtp_server.server_address[1])
    result = SessionLoad(target, sessions=4, messages=40, size=2048, max_seconds=30).run()
    assert len(result.accepted) == 40 == smtp_server.received
    assert len({a.message_id for a in result.accepted}) == 40
    # Message after message on each session: at most 4 connections took all
    # 40 (a session that starts late on a loaded machine may find the budget
    # spent and open none).
    assert 1 <= len(smtp_server.per_connection) <= 4
    assert sum(smtp_server.per_connection.values()) == 40
    assert result.accepted_per_second > 0
    assert result.started <= result.accepted[0].at <= result.finished


def test_a_refused_message_is_counted_and_the_session_goes_on(smtp_server):
    smtp_server.refuse_every = 5
    target = Target("127.0.0.1", smtp_server.server_address[1])
    result = SessionLoad(target, sessions=1, messages=20, size=1024, max_seconds=30).run()
    assert (len(result.accepted), result.refused) == (16, 4)
    assert result.errors and result.errors[0].startswith("550")
    assert len(smtp_server.per_connection) == 1


def test_bounded_by_time(smtp_server):
    target = Target("127.0.0.1", smtp_server.server_address[1])
    began = time.monotonic()
    result = SessionLoad(target, sessions=2, messages=10**9, size=512, max_seconds=0.5).run()
    assert time.monotonic() - began < 10
    assert 0 < len(result.accepted) < 10**9


def test_an_unreachable_target_gives_errors_not_an_exception():
    # Port 9 on loopback: nothing listens (the load never sends anywhere else).
    result = SessionLoad(Target("127.0.0.1", 9), sessions=2, messages=5, max_seconds=2).run()
    assert result.accepted == [] and result.errors
    assert result.accepted_per_second == 0.0


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        SessionLoad(Target("127.0.0.1", 25), sessions=0, messages=1)
