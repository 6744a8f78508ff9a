"""mailha-health-agent's watcher: the track file keepalived follows, with hysteresis."""

import importlib.machinery
import importlib.util
import os
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "roles/mail_health/files/usr/local/bin/mailha-health-agent"


@pytest.fixture(scope="module")
def agent():
    loader = importlib.machinery.SourceFileLoader("mailha_health_agent", str(AGENT))
    spec = importlib.util.spec_from_loader("mailha_health_agent", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


HEALTHY = {"exit_code": 0, "reason": "healthy"}
DOWN = {"exit_code": 1, "reason": "MTA failed: connect to 127.0.0.1:25 failed: refused"}


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def settings(agent, track_file="", **overrides):
    values = dict(agent.health.DEFAULTS, track_file=str(track_file))
    values.update(overrides)
    return values


def test_failure_after_fall_checks_recovery_after_rise(agent, tmp_path):
    watcher = agent.Watcher(settings(agent, tmp_path / "fault", watch_fall=2, watch_rise=3))
    sequence = [HEALTHY, DOWN, HEALTHY, DOWN, DOWN, DOWN, HEALTHY, HEALTHY, DOWN, HEALTHY, HEALTHY, HEALTHY]
    written = [watcher.observe(findings) for findings in sequence]
    # One failed check is a blip; two in a row write 1; recovery needs three
    # healthy checks in a row, and a failure in between starts the count again.
    assert written == [None, None, None, None, 1, None, None, None, None, None, None, 0]


def test_a_restarted_agent_keeps_a_recorded_failure_until_rise(agent, tmp_path):
    track = tmp_path / "fault"
    track.write_text("1\n")
    watcher = agent.Watcher(settings(agent, track, watch_rise=2))
    assert watcher.failed
    assert [watcher.observe(HEALTHY), watcher.observe(HEALTHY)] == [None, 0]


def test_track_file_is_replaced_whole_and_read_back(agent, tmp_path):
    track = tmp_path / "run" / "mailha" / "fault"
    agent.write_track_value(str(track), 1)
    assert track.read_text() == "1\n" and agent.read_track_value(str(track)) == 1
    agent.write_track_value(str(track), 0)
    assert agent.read_track_value(str(track)) == 0
    assert sorted(p.name for p in track.parent.iterdir()) == ["fault"]
    assert agent.read_track_value(str(tmp_path / "missing")) == 0


def test_endpoints_use_the_verdict_only_while_fresh(agent):
    clock = Clock()
    watcher = agent.Watcher(settings(agent, watch_interval=0.25, timeout=1.0), clock=clock)
    assert watcher.fresh() is None
    watcher.observe(DOWN)
    clock.now += 1.4
    assert watcher.fresh() is DOWN
    clock.now += 0.2  # older than two intervals plus the check's timeout
    assert watcher.fresh() is None


def test_settings_are_validated(agent, tmp_path):
    conf = tmp_path / "health.conf"
    conf.write_text("watch_interval=-1\n")
    with pytest.raises(agent.health.UsageError, match="watch_interval"):
        agent.health.load_config(str(conf))
    conf.write_text("watch_fall=0\n")
    with pytest.raises(agent.health.UsageError, match="watch_fall"):
        agent.health.load_config(str(conf))
    conf.write_text("watch_interval=0.2\nwatch_rise=3\ntrack_file=/run/mailha/mta-fault\n")
    loaded = agent.health.load_config(str(conf))
    assert (loaded["watch_interval"], loaded["watch_rise"], loaded["track_file"]) == (0.2, 3, "/run/mailha/mta-fault")


def test_queue_counts_skip_files_a_crash_left_half_written(agent, tmp_path):
    """Postfix marks a complete queue file with the owner execute bit; a file in
    incoming without it was never acknowledged and must not hold a hand-over up."""
    for relative, mode in (("incoming/A1", 0o600), ("incoming/B2", 0o700), ("deferred/C/C3", 0o700)):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("queue file")
        path.chmod(mode)
    counts, oldest = agent.health.queue_details(str(tmp_path), now=4_000_000_000)
    assert counts == {"active": 0, "deferred": 1, "incoming": 1, "hold": 0}
    assert oldest is not None
    (tmp_path / "incoming/B2").unlink()
    (tmp_path / "deferred/C/C3").unlink()
    assert agent.health.queue_details(str(tmp_path)) == ({"active": 0, "deferred": 0, "incoming": 0, "hold": 0}, None)


class SmtpResponder:
    """A loopback SMTP responder that counts RCPT TO commands; refuse_rcpt
    answers them 550, as a broken recipient table would."""

    def __init__(self):
        import socket
        import threading

        self.rcpt_commands = 0
        self.refuse_rcpt = False
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection, connection.makefile("rwb") as stream:
                stream.write(b"220 responder ESMTP\r\n")
                stream.flush()
                for line in stream:
                    verb = line.split(b":")[0].split(b" ")[0].strip().upper()
                    if verb == b"RCPT":
                        self.rcpt_commands += 1
                        stream.write(b"550 5.1.1 refused\r\n" if self.refuse_rcpt else b"250 2.1.5 Ok\r\n")
                    elif verb == b"QUIT":
                        stream.write(b"221 2.0.0 Bye\r\n")
                        stream.flush()
                        break
                    else:
                        stream.write(b"250 2.0.0 Ok\r\n")
                    stream.flush()

    def close(self):
        self.server.close()


@pytest.fixture()
def responder():
    server = SmtpResponder()
    yield server
    server.close()


@pytest.fixture()
def dry_run(agent, tmp_path, responder):
    """Settings with a configured dry run against the responder, and its stamp."""
    stamp = tmp_path / "dry-run"
    values = settings(
        agent,
        smtp_port=responder.port,
        full_check=True,
        full_check_interval=30.0,
        full_check_stamp=str(stamp),
        timeout=2.0,
    )
    return values, stamp


def test_a_configured_dry_run_is_rationed_across_checks(agent, dry_run, responder):
    """Each dry run costs Postfix an in_flow_delay token that only mail gives
    back; checked every 0.25 s it starved a quiet relay (role README)."""
    values, stamp = dry_run
    runs = [agent.health.run_checks(values) for _ in range(6)]
    assert [run["exit_code"] for run in runs] == [0] * 6
    assert [run["smtp"]["dry_run"] for run in runs] == [True] + [False] * 5
    assert responder.rcpt_commands == 1 and stamp.read_text() == "ok\n"
    # Due again once the interval has passed since the stamp.
    old = stamp.stat().st_mtime - 31
    os.utime(stamp, (old, old))
    assert agent.health.run_checks(values)["smtp"]["dry_run"] is True
    assert responder.rcpt_commands == 2
    # Forced (mailha-health --full) runs whatever the stamp says.
    assert agent.health.run_checks(values, force_full=True)["smtp"]["dry_run"] is True
    assert responder.rcpt_commands == 3


def test_a_failed_dry_run_is_repeated_until_it_passes(agent, dry_run, responder):
    values, stamp = dry_run
    responder.refuse_rcpt = True
    failed = [agent.health.run_checks(values) for _ in range(3)]
    # Every check repeats it, so watch_fall counts failed dry runs in a row.
    assert [run["exit_code"] for run in failed] == [1, 1, 1]
    assert "RCPT TO refused" in failed[0]["reason"] and responder.rcpt_commands == 3
    assert stamp.read_text() == "failed\n"
    responder.refuse_rcpt = False
    assert [agent.health.run_checks(values)["smtp"]["dry_run"] for _ in range(3)] == [True, False, False]
    assert responder.rcpt_commands == 4


def test_without_full_check_no_dry_run_and_no_stamp(agent, tmp_path, responder):
    stamp = tmp_path / "dry-run"
    values = settings(agent, smtp_port=responder.port, full_check_stamp=str(stamp), timeout=2.0)
    smtp = agent.health.run_checks(values)["smtp"]
    assert smtp["ok"] is True and smtp["dry_run"] is False
    assert responder.rcpt_commands == 0 and not stamp.exists()


def test_an_unwritable_stamp_is_reported(agent, tmp_path, responder):
    blocker = tmp_path / "file"
    blocker.write_text("")
    values = settings(
        agent, smtp_port=responder.port, full_check=True, full_check_stamp=str(blocker / "dry-run"), timeout=2.0
    )
    findings = agent.health.run_checks(values)
    assert findings["exit_code"] == 0 and "stamp_error" in findings["smtp"]
