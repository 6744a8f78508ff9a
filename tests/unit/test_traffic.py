"""The traffic generator against a real SMTP server on loopback."""

import socket

import pytest

from mailha import names
from mailha.traffic import Target, TrafficGenerator, accepted_ids, build_message, submit


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_submit_reports_code_and_the_relay_that_greeted(smtp_server):
    target = Target("127.0.0.1", smtp_server.server_address[1])
    reply = submit(target, build_message("<a@b>", "c@news.mailha.test", "s@inbox.test", "t"))
    assert (reply.code, reply.tag) == (250, names.node_tag("key", "mxT"))
    assert smtp_server.received == 1


def test_refused_recipient_is_not_acknowledged(smtp_server):
    smtp_server.rcpt_reply = b"554 5.7.1 Relay access denied\r\n"
    reply = submit(Target("127.0.0.1", smtp_server.server_address[1]), build_message("<a@b>", "c@d", "s@e", "t"))
    assert reply.code == 554 and "Relay access denied" in reply.text
    assert smtp_server.received == 0


def test_connection_refused_has_no_code():
    reply = submit(Target("127.0.0.1", free_port()), build_message("<a@b>", "c@d", "s@e", "t"), timeout=2)
    assert reply.code is None and "ConnectionRefusedError" in reply.text


def test_generator_is_bounded_by_count(smtp_server):
    target = Target("127.0.0.1", smtp_server.server_address[1])
    attempts = TrafficGenerator([target], rate=200, max_messages=25, max_seconds=30).start().wait()
    assert len(attempts) == 25
    assert len(set(accepted_ids(attempts))) == 25 == smtp_server.received
    assert [a.seq for a in attempts] == list(range(25))


def test_generator_names_the_relay_by_its_greeting_tag(smtp_server):
    target = Target("127.0.0.1", smtp_server.server_address[1])
    tags = {names.node_tag("key", "mxT"): "mxT"}
    [attempt] = TrafficGenerator([target], rate=5, max_messages=1, max_seconds=10, node_tags=tags).start().wait()
    assert attempt.node == "mxT"
    # Without the key the tag says nothing: no relay is guessed.
    [attempt] = TrafficGenerator([target], rate=5, max_messages=1, max_seconds=10).start().wait()
    assert attempt.node is None


def test_node_tags_are_stable_distinct_and_reveal_no_name():
    assert names.node_tag("key", "mx1") == names.node_tag("key\n", "mx1")  # the key file's newline
    assert names.node_tag("key", "mx1") != names.node_tag("key", "mx2")
    assert names.node_tag("key", "mx1") != names.node_tag("other", "mx1")
    assert "mx1" not in names.node_tag("key", "mx1")
    assert names.NODE_TAG_IN_GREETING.search(f"mta.mailha.test ESMTP {names.node_tag('key', 'mx1')}")


def test_generator_is_bounded_by_time_and_stops_on_request(smtp_server):
    target = Target("127.0.0.1", smtp_server.server_address[1])
    attempts = TrafficGenerator([target], rate=5, max_messages=10_000, max_seconds=1).start().wait()
    assert 1 <= len(attempts) <= 7
    generator = TrafficGenerator([target], rate=5, max_messages=10_000, max_seconds=60).start()
    stopped = generator.stop()
    assert len(stopped) <= 2


def test_a_hung_submission_does_not_hold_back_the_next_ones(smtp_server):
    """Open loop: attempts start on schedule while an earlier one waits for its timeout."""
    smtp_server.hang_first = 1
    target = Target("127.0.0.1", smtp_server.server_address[1])
    attempts = TrafficGenerator([target], rate=20, max_messages=10, max_seconds=30, timeout=2).start().wait()
    assert [a.seq for a in attempts] == list(range(10))
    hung, rest = attempts[0], attempts[1:]
    assert hung.code is None and "timed out" in hung.reply
    assert all(a.accepted for a in rest)
    # Every later attempt started and finished while the first was still waiting.
    assert max(a.finished for a in rest) < hung.finished


def test_concurrency_bounds_the_attempts_in_flight(smtp_server):
    """With one slot, the generator waits for the hung attempt: the bound holds."""
    smtp_server.hang_first = 1
    target = Target("127.0.0.1", smtp_server.server_address[1])
    attempts = (
        TrafficGenerator([target], rate=20, max_messages=3, max_seconds=30, timeout=1, concurrency=1).start().wait()
    )
    assert attempts[0].code is None
    assert all(a.started >= attempts[0].finished for a in attempts[1:])


def test_generator_rejects_nonsense():
    with pytest.raises(ValueError, match="at least one target"):
        TrafficGenerator([], rate=1, max_messages=1, max_seconds=1)
    with pytest.raises(ValueError, match="must be positive"):
        TrafficGenerator([Target("127.0.0.1")], rate=0, max_messages=1, max_seconds=1)
    with pytest.raises(ValueError, match="concurrency"):
        TrafficGenerator([Target("127.0.0.1")], rate=1, max_messages=1, max_seconds=1, concurrency=0)


def test_poll_returns_the_value_or_none_after_the_timeout():
    from mailha.probes import poll

    calls = iter([0, 0, 7])
    assert poll(lambda: next(calls), timeout=5, interval=0.01) == 7
    assert poll(lambda: 0, timeout=0.05, interval=0.01) is None
