"""mailha-health-agent's watcher: the track file keepalived follows, with hysteresis."""

import importlib.machinery
import importlib.util
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
