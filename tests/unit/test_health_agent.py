"""mailha-health-agent: the watcher's track file (hysteresis), the rationed dry
run, an HTTP server that no client can keep from answering HAProxy, the
split-brain guard (claims, peer polls, demotion, adverts), and the degraded
level with what /status, /active, /health and /metrics say of it."""

import http.client
import http.server
import importlib
import json
import os
import queue
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def agent():
    return importlib.import_module("mailha.node.agent")


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
    # An older health.conf has no split_brain_track_file: the demotion shares track_file.
    assert loaded["split_brain_track_file"] == ""


def test_the_split_brain_track_file_setting(agent, tmp_path):
    conf = tmp_path / "health.conf"
    conf.write_text("track_file=/run/mailha/mta-fault\nsplit_brain_track_file= /run/mailha/split-brain \n")
    loaded = agent.health.load_config(str(conf))
    assert loaded["track_file"] == "/run/mailha/mta-fault"
    assert loaded["split_brain_track_file"] == "/run/mailha/split-brain"
    # Without track_file the demotion file stands alone.
    conf.write_text("track_file=\nsplit_brain_track_file=/run/mailha/split-brain\n")
    assert agent.health.load_config(str(conf))["split_brain_track_file"] == "/run/mailha/split-brain"
    # One file for both would let a cleared demotion write 0 over a failed MTA's 1.
    conf.write_text("track_file=/run/mailha/mta-fault\nsplit_brain_track_file=/run/mailha/mta-fault\n")
    with pytest.raises(agent.health.UsageError, match="split_brain_track_file must not be track_file"):
        agent.health.load_config(str(conf))


def test_queue_counts_skip_files_a_crash_left_half_written(agent, tmp_path):
    """Postfix marks a complete queue file with the owner execute bit; a file in
    incoming without it was never acknowledged and must not hold a hand-over up."""
    for relative, mode in (("incoming/A1", 0o600), ("incoming/B2", 0o700), ("deferred/C/C3", 0o700)):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("queue file")
        path.chmod(mode)
    counts, oldest = agent.health.queue_details(str(tmp_path), now=4_000_000_000)
    # maildrop too (mailha.node.queue: one definition for the agent and the hand-over).
    assert counts == {"maildrop": 0, "active": 0, "deferred": 1, "incoming": 1, "hold": 0}
    assert oldest is not None
    (tmp_path / "incoming/B2").unlink()
    (tmp_path / "deferred/C/C3").unlink()
    assert agent.health.queue_details(str(tmp_path)) == (
        {"maildrop": 0, "active": 0, "deferred": 0, "incoming": 0, "hold": 0},
        None,
    )


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
        queue_directory=str(tmp_path),  # no pid/master.pid: the greeting decides
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


def test_agent_settings_are_validated(agent, tmp_path):
    conf = tmp_path / "health.conf"
    for bad in ("agent_bind_address=mx1", "agent_request_timeout=0", "agent_max_connections=0"):
        conf.write_text(bad + "\n")
        with pytest.raises(agent.health.UsageError, match=bad.split("=")[0]):
            agent.health.load_config(str(conf))
    conf.write_text("agent_bind_address=10.213.0.11\nagent_request_timeout=2.5\nagent_max_connections=8\n")
    loaded = agent.health.load_config(str(conf))
    assert (loaded["agent_bind_address"], loaded["agent_request_timeout"], loaded["agent_max_connections"]) == (
        "10.213.0.11",
        2.5,
        8,
    )


def test_a_flood_is_logged_as_one_line_per_interval(agent, capsys):
    clock = Clock()
    notices = agent.Notices(interval=10.0, clock=clock)
    for _ in range(3):
        notices.count("requests not received in time")
    notices.count("waiting connections closed at the cap of 64")
    notices.flush()
    clock.now += 10.0
    notices.flush()
    notices.flush()
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "mailha-health-agent: requests not received in time: 1 (one such line at most every 10 s)",
        "mailha-health-agent: requests not received in time: 2; waiting connections closed at the cap of 64: 1"
        " (one such line at most every 10 s)",
    ]


# The agent's HTTP server, on loopback. Every wait below is bounded; the
# limits are generous multiples of what the agent should need.
HALF_REQUEST = b"GET /health HTTP/1.1\r\nHost: agent\r\n"  # the blank line never comes
COMPLETE_REQUEST = b"GET /health HTTP/1.0\r\n\r\n"


def healthy_watcher(agent, values):
    """A watcher whose verdict stays fresh and healthy, without checking anything."""
    watcher = agent.Watcher(values, clock=lambda: 100.0)
    watcher.observe(HEALTHY)
    return watcher


def read_until_closed(sock, limit):
    """(bytes read, seconds) once the agent closed sock, or (bytes, None)
    if it was still open after `limit` seconds. A reset counts as closed."""
    started = time.monotonic()
    received = b""
    while (remaining := limit - (time.monotonic() - started)) > 0:
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            break
        except ConnectionError:
            chunk = b""
        if not chunk:
            return received, time.monotonic() - started
        received += chunk
    return received, None


def still_open(sock, seconds=0.3):
    return read_until_closed(sock, seconds) == (b"", None)


@pytest.fixture()
def loopback(agent):
    """start(**settings) runs an AgentServer on 127.0.0.1; connect(port, data,
    source) opens a client connection. Both are closed afterwards."""
    servers, clients = [], []

    def start(watcher=None, guard=None, queue_reader=None, **overrides):
        values = settings(agent, agent_bind_address="127.0.0.1", agent_port=0)
        values.update(agent_request_timeout=1.0, agent_max_connections=4)
        values.update(overrides)
        server = agent.AgentServer(
            values, watcher or healthy_watcher(agent, values), guard=guard, queue_reader=queue_reader
        )
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    def connect(server, data=b"", source="127.0.0.1"):
        client = socket.create_connection(server.server_address, timeout=5, source_address=(source, 0))
        clients.append(client)
        if data:
            client.sendall(data)
        return client

    yield start, connect
    for client in clients:
        client.close()
    for server in servers:
        server.shutdown()
        server.server_close()


def wait_for(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def ask(connect, server, request=COMPLETE_REQUEST, source="127.0.0.1"):
    answer, seconds = read_until_closed(connect(server, request, source), 5.0)
    assert seconds is not None, "no answer within 5 s"
    return answer


def test_answers_once_and_closes_even_when_asked_to_keep_alive(loopback):
    start, connect = loopback
    server = start()
    answer = ask(connect, server, b"GET /health HTTP/1.1\r\nHost: agent\r\nConnection: keep-alive\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"Connection: close" in head.split(b"\r\n")
    assert body == b"healthy\n"


def test_a_request_that_never_ends_is_closed_after_the_timeout(loopback):
    start, connect = loopback
    server = start(agent_request_timeout=1.0)
    received, seconds = read_until_closed(connect(server, HALF_REQUEST), 10.0)
    # Closed without an answer, by the agent (a silent client would wait forever).
    assert seconds is not None and received == b""
    assert wait_for(lambda: server.open_connections() == 0)
    print(f"half a request closed after {seconds:.2f} s (timeout 1 s)")


def test_the_timeout_is_one_deadline_not_one_per_read(loopback):
    """A byte every 0.2 s would renew a per-read timeout of 1 s forever."""
    start, connect = loopback
    server = start(agent_request_timeout=1.0)
    client = connect(server)
    started = time.monotonic()
    closed = None
    for byte in HALF_REQUEST * 2:
        try:
            client.sendall(bytes([byte]))
        except ConnectionError:
            closed = time.monotonic() - started
            break
        if not still_open(client, 0.2):
            closed = time.monotonic() - started
            break
    assert closed is not None and closed < 6.0, "a trickling request kept its connection"


def test_idle_connections_beyond_the_cap_leave_room_for_a_complete_request(loopback):
    start, connect = loopback
    # A long timeout: only the cap can make room here.
    server = start(agent_max_connections=4, agent_request_timeout=60.0)
    idle = [connect(server, HALF_REQUEST) for _ in range(12)]
    assert ask(connect, server).startswith(b"HTTP/1.0 200")
    # The oldest waiting connections made room, one for each newcomer beyond the cap.
    assert all(read_until_closed(sock, 5.0)[1] is not None for sock in idle[:9])
    assert all(still_open(sock) for sock in idle[9:])
    assert server.open_connections() <= 4


def test_a_flood_from_one_client_displaces_its_own_connections(loopback):
    """HAProxy's check, half sent when a flood from another address arrives,
    keeps its place although it is the oldest connection."""
    start, connect = loopback
    server = start(agent_max_connections=4, agent_request_timeout=60.0)
    check = connect(server, b"GET /health HTTP/1.0\r\n", source="127.0.0.1")
    assert wait_for(lambda: server.open_connections() == 1)
    flood = [connect(server, HALF_REQUEST, source="127.0.0.2") for _ in range(10)]
    assert all(read_until_closed(sock, 5.0)[1] is not None for sock in flood[:7])
    check.sendall(b"\r\n")
    answer, seconds = read_until_closed(check, 5.0)
    assert seconds is not None and answer.startswith(b"HTTP/1.0 200")
    assert all(still_open(sock) for sock in flood[7:])


class SlowWatcher:
    """Holds each request in evaluate() until released, as a slow check would."""

    def __init__(self, grade):
        self.inside = threading.Semaphore(0)
        self.release = threading.Event()
        self.grade = lambda: grade

    def fresh(self):
        self.inside.release()
        self.release.wait(10)
        return HEALTHY


def test_at_the_cap_with_every_connection_busy_a_new_one_is_closed_at_once(agent, loopback):
    start, connect = loopback
    watcher = SlowWatcher(agent.NO_GRADE)
    server = start(watcher=watcher, agent_max_connections=2, agent_request_timeout=60.0)
    try:
        busy = [connect(server, COMPLETE_REQUEST) for _ in range(2)]
        assert all(watcher.inside.acquire(timeout=5) for _ in busy)
        received, seconds = read_until_closed(connect(server, COMPLETE_REQUEST), 5.0)
        assert seconds is not None and received == b""
    finally:
        watcher.release.set()
    # The accept loop went on; the busy ones are answered, and the cap is free again.
    assert all(read_until_closed(sock, 5.0)[0].startswith(b"HTTP/1.0 200") for sock in busy)
    assert wait_for(lambda: server.open_connections() == 0)


def run_serve(agent, server, watcher, limit=10.0):
    """agent.serve() in a thread, bounded: its return value, or None if it did not return."""
    result = []
    thread = threading.Thread(target=lambda: result.append(agent.serve(server, watcher)), daemon=True)
    thread.start()
    thread.join(limit)
    return result[0] if result else None


def test_the_agent_exits_non_zero_when_its_watcher_dies(agent, capsys):
    values = settings(agent, agent_bind_address="127.0.0.1", agent_port=0, watch_interval=0.01)
    checks = []

    def check(_settings):
        checks.append(None)
        if len(checks) == 3:
            raise RuntimeError("a bug in a check")
        return HEALTHY

    watcher = agent.Watcher(values, check=check)
    server = agent.AgentServer(values, watcher)
    try:
        assert run_serve(agent, server, watcher) == agent.EXIT_STOPPED == 1
    finally:
        server.server_close()
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "mailha-health-agent: the watcher died: RuntimeError: a bug in a check; "
        "exiting for systemd to start the agent again"
    ]


class StoppingWatcher:
    def run(self):
        return


class BrokenServer:
    def serve_forever(self):
        raise OSError("selector failed")

    def shutdown(self):
        pass


def test_the_agent_exits_when_either_half_stops(agent, capsys):
    values = settings(agent, agent_bind_address="127.0.0.1", agent_port=0)
    server = agent.AgentServer(values)
    try:
        assert run_serve(agent, server, StoppingWatcher()) == 1
    finally:
        server.server_close()
    assert "the watcher stopped; exiting" in capsys.readouterr().err
    assert run_serve(agent, BrokenServer(), None) == 1
    assert "the HTTP server died: OSError: selector failed; exiting" in capsys.readouterr().err


def test_an_address_the_node_does_not_hold_is_one_line_and_exit_1(agent, monkeypatch, capsys):
    values = settings(agent, agent_bind_address="192.0.2.1", agent_port=0)
    monkeypatch.setattr(agent.health, "load_config", lambda: values)
    assert agent.main() == 1
    assert capsys.readouterr().err.startswith("mailha-health-agent: cannot listen on 192.0.2.1 port 0: ")


@pytest.fixture()
def master_pid(tmp_path):
    """A queue directory whose pid/master.pid the test writes."""
    (tmp_path / "pid").mkdir()
    return tmp_path, tmp_path / "pid" / "master.pid"


def test_a_dead_master_fails_the_check_before_any_greeting(agent, master_pid, responder):
    """kill -9 of the master leaves children that still greet: the pid file tells."""
    queue, pid_file = master_pid
    child = subprocess.Popen(["sleep", "30"])
    child.kill()
    child.wait()
    pid_file.write_text(f"{child.pid:>32}\n")  # Postfix right-aligns the pid
    findings = agent.health.run_checks(settings(agent, smtp_port=responder.port, queue_directory=str(queue)))
    assert findings["exit_code"] == 1
    assert findings["reason"] == f"MTA failed: the Postfix master process (pid {child.pid}) is gone"


def test_a_pid_reused_by_another_process_is_a_dead_master(agent, master_pid, responder):
    queue, pid_file = master_pid
    pid_file.write_text(f"{os.getpid()}\n")  # alive, but python, not master
    findings = agent.health.run_checks(settings(agent, smtp_port=responder.port, queue_directory=str(queue)))
    assert findings["exit_code"] == 1 and "master process" in findings["reason"]


def test_a_live_master_and_a_greeting_are_healthy(agent, master_pid, responder, tmp_path):
    queue, pid_file = master_pid
    master = tmp_path / "master"
    master.symlink_to("/bin/sleep")  # a process whose name is "master"
    process = subprocess.Popen([str(master), "30"])
    comm = Path(f"/proc/{process.pid}/comm")
    for _ in range(100):  # between fork and exec the child still has the test's name
        if comm.read_text().strip() == "master":
            break
        time.sleep(0.02)
    try:
        pid_file.write_text(f"{process.pid:>32}\n")
        findings = agent.health.run_checks(settings(agent, smtp_port=responder.port, queue_directory=str(queue)))
        assert findings["exit_code"] == 0, findings
    finally:
        process.kill()
        process.wait()


def test_no_pid_file_leaves_the_verdict_to_the_greeting(agent, tmp_path, responder):
    findings = agent.health.run_checks(settings(agent, smtp_port=responder.port, queue_directory=str(tmp_path)))
    assert findings["exit_code"] == 0
    findings = agent.health.run_checks(settings(agent, smtp_port=1, queue_directory=str(tmp_path), timeout=0.5))
    assert findings["exit_code"] == 1 and "master" not in findings["reason"]


# Split brain: both relays hold the floating IP because VRRP between them is
# cut. The lab's pair: mx1 (priority 150) and mx2 (priority 100).
MX1, MX2 = "10.213.0.11", "10.213.0.12"
FLOATING_IP = "10.213.0.100"


def test_claims_follow_vrrp_election_rule(agent):
    claim = agent.claim
    # The higher priority wins, whatever the addresses.
    assert claim(150, MX1) > claim(100, MX2)
    assert claim(101, "10.0.0.1") > claim(100, "10.255.255.255")
    # Equal priorities: the higher address, compared as a number (as a string
    # "10.213.0.12" > "10.213.0.100"; as an address it is lower).
    assert claim(100, MX2) > claim(100, MX1)
    assert claim(100, "10.213.0.100") > claim(100, "10.213.0.12")
    assert claim(100, "10.213.1.1") > claim(100, "10.213.0.255")
    assert claim(100, MX1) == claim(100, MX1)


def test_the_override_file_wins_over_the_configured_priority(agent, tmp_path):
    override = tmp_path / "mailha-priority"
    values = settings(agent, vrrp_priority=150, vrrp_priority_file=str(override))
    assert agent.effective_priority(values) == 150  # no file: keepalived keeps its own
    override.write_text("priority 50\n")
    assert agent.effective_priority(values) == 50  # lower, as switch.yml writes for the old node
    override.write_text("# set by mailha switch\n! keepalived comment\npriority 200 # target\n")
    assert agent.effective_priority(values) == 200
    for junk in ("", "priority\n", "priority high\n", "priority 0\n", "priority 256\n", "weight 30\n"):
        override.write_text(junk)
        assert agent.effective_priority(values) == 150, junk
    assert agent.effective_priority(settings(agent, vrrp_priority=120, vrrp_priority_file="")) == 120
    # The override decides the claim a guard compares.
    override.write_text("priority 200\n")
    guard = agent.SplitBrainGuard(split_settings(agent, tmp_path, vrrp_priority=100, vrrp_priority_file=str(override)))
    assert guard.claim() == agent.claim(200, MX2) > agent.claim(150, MX1)


def test_split_brain_settings_are_validated(agent, tmp_path):
    conf = tmp_path / "health.conf"
    loaded = agent.health.load_config(str(tmp_path / "missing.conf"))
    assert loaded["peer_agent_url"] == "" and loaded["vrrp_advert_interval"] == 1.0
    good = (
        f"peer_agent_url=http://{MX1}:8025/status\nnode_address={MX2}\nvrrp_priority=100\n"
        "vrrp_priority_file=/etc/keepalived/mailha-priority\nvrrp_advert_interval=0.2\n"
    )
    conf.write_text(good)
    loaded = agent.health.load_config(str(conf))
    assert (loaded["vrrp_priority"], loaded["vrrp_advert_interval"]) == (100, 0.2)
    assert agent.health.node_address(loaded) == MX2 and agent.health.peer_address(loaded) == MX1
    conf.write_text(good + "peer_address=10.213.0.13\n")
    assert agent.health.peer_address(agent.health.load_config(str(conf))) == "10.213.0.13"
    # Without node_address the agent's own address is the claim's.
    conf.write_text(f"peer_agent_url=http://{MX1}:8025/status\nagent_bind_address={MX2}\n")
    assert agent.health.node_address(agent.health.load_config(str(conf))) == MX2
    bad = {
        "vrrp_priority=0": "vrrp_priority",
        "vrrp_priority=256": "vrrp_priority",
        "vrrp_advert_interval=0": "vrrp_advert_interval",
        "node_address=mx2": "node_address",
        "peer_address=::1": "peer_address",
        "peer_agent_url=https://10.213.0.11/status": "peer_agent_url",
        "peer_agent_url=http://10.213.0.11:99999/status": "peer_agent_url",
        "peer_agent_url=10.213.0.11:8025": "peer_agent_url",
        # With a peer: both addresses IPv4, distinct, and the watcher on.
        f"peer_agent_url=http://{MX1}:8025/status": "node_address",  # bind address 127.0.0.1
        f"peer_agent_url=http://mx1:8025/status\nnode_address={MX2}": "peer_address",
        f"peer_agent_url=http://{MX1}:8025/status\nnode_address={MX1}": "this node's own",
        f"peer_agent_url=http://{MX1}:8025/status\nnode_address={MX2}\nwatch_interval=0": "watch_interval",
    }
    for text, match in bad.items():
        conf.write_text(text + "\n")
        with pytest.raises(agent.health.UsageError, match=match):
            agent.health.load_config(str(conf))


def split_settings(agent, tmp_path, **overrides):
    """mx2's settings (priority 100) with mx1 as its peer."""
    values = settings(
        agent,
        tmp_path / "mta-fault",
        peer_agent_url=f"http://{MX1}:8025/status",
        node_address=MX2,
        vrrp_priority=100,
        vrrp_priority_file=str(tmp_path / "mailha-priority"),
        vrrp_advert_interval=0.2,
        floating_ip=FLOATING_IP,
        drain_file=str(tmp_path / "drain"),
        queue_directory=str(tmp_path / "queue"),
        vrrp_log=str(tmp_path / "vrrp.log"),
    )
    values.update(overrides)
    return values


def peer_status(holds=True, healthy=True, priority=150, address=MX1):
    return {"holds_floating_ip": holds, "healthy": healthy, "vrrp_priority": priority, "address": address}


class FakePeer:
    """The peer agent's /status, as fetch_status would return it; an
    exception stands for a peer that does not answer."""

    def __init__(self, document):
        self.document = document
        self.asked = 0

    def __call__(self, url, timeout):
        assert url == f"http://{MX1}:8025/status" and timeout <= 1.0
        self.asked += 1
        if isinstance(self.document, BaseException):
            raise self.document
        return self.document


class Node:
    """One relay's guard and watcher, with fakes for the peer, the floating
    IP and the clock; the track file is real."""

    def __init__(self, agent, tmp_path, document, holds_ip=True, adverts=None, **overrides):
        self.agent = agent
        self.clock = Clock()
        self.settings = split_settings(agent, tmp_path, **overrides)
        self.track = tmp_path / "mta-fault"
        self.watcher = agent.Watcher(self.settings, clock=self.clock)
        self.watcher.observe(HEALTHY)
        self.peer = FakePeer(document)
        self.holds_ip = holds_ip
        self.rechecks = []
        self.guard = agent.SplitBrainGuard(
            self.settings,
            fetch=self.peer,
            holds_ip=lambda: self.holds_ip,
            adverts=adverts,
            on_change=self.watcher.set_demoted,
            clock=self.clock,
            on_recheck=self.rechecks.append,
        )

    def track_value(self):
        return self.track.read_text() if self.track.exists() else None

    def split_value(self):
        path = Path(self.settings["split_brain_track_file"])
        return path.read_text() if path.exists() else None

    def active(self):
        """The /active answer's reason (None: 200), with a fresh healthy verdict."""
        self.watcher.latest = (self.clock(), HEALTHY)
        return self.agent.evaluate(self.settings, self.watcher, self.guard)[3]


def test_a_peer_that_does_not_hold_the_floating_ip_changes_nothing(agent, tmp_path, capsys):
    node = Node(agent, tmp_path, peer_status(holds=False))
    node.guard.poll()
    assert node.peer.asked == 1
    assert not node.guard.demoted and not node.guard.split_brain
    assert node.track_value() is None and capsys.readouterr().err == ""
    # Without the floating IP (and not demoted) the peer is not even asked.
    node.holds_ip = False
    node.guard.poll()
    assert node.peer.asked == 1


def test_both_hold_and_this_node_loses_it_demotes_itself(agent, tmp_path, capsys):
    node = Node(agent, tmp_path, peer_status(priority=150))
    assert node.active() == f"floating IP {FLOATING_IP} not held"  # fib_trie: not held here
    node.guard.poll()
    assert node.guard.demoted and node.guard.split_brain
    assert node.track_value() == "1\n"
    reason = node.active()
    assert reason.startswith(f"demoted: split brain, peer {MX1} holds the floating IP with a better claim")
    assert "priority 150 against this node's 100" in reason
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "demoting this node" in lines[0] and MX1 in lines[0]
    # Staying demoted logs nothing more and writes nothing more.
    node.track.unlink()
    node.holds_ip = False  # keepalived went to FAULT and released the floating IP
    for _ in range(5):
        node.clock.now += 0.25
        node.guard.poll()
    assert node.guard.demoted and not node.guard.split_brain
    assert node.peer.asked == 6 and not node.track.exists()
    assert capsys.readouterr().err == ""


def test_equal_priorities_the_lower_address_loses(agent, tmp_path):
    loser = Node(agent, tmp_path / "mx1", peer_status(priority=100, address=MX2), node_address=MX1)
    loser.guard.poll()
    assert loser.guard.demoted and loser.track_value() == "1\n"
    assert f"address {MX2} against {MX1}" in loser.guard.demoted_reason
    winner = Node(agent, tmp_path / "mx2", peer_status(priority=100, address=MX1), node_address=MX2)
    winner.guard.poll()
    assert not winner.guard.demoted and winner.guard.split_brain and winner.track_value() is None


def test_both_hold_and_this_node_wins_it_does_nothing(agent, tmp_path, capsys):
    node = Node(agent, tmp_path, peer_status(priority=100), vrrp_priority=150)
    for _ in range(3):
        node.guard.poll()
    assert node.guard.split_brain and not node.guard.demoted
    assert node.track_value() is None and node.active() == f"floating IP {FLOATING_IP} not held"
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mailha-health-agent: split brain: peer {MX1}")
    assert lines[0].endswith("this node's claim is better: it keeps the floating IP")


def test_the_winner_asks_for_a_floating_ip_check_when_the_split_brain_ends(agent, tmp_path):
    node = Node(agent, tmp_path, peer_status(priority=100), vrrp_priority=150)
    for _ in range(3):
        node.clock.now += 0.25
        node.guard.poll()
    # Not while it lasts: the loser still holds the address and may not
    # have asked the API yet.
    assert node.guard.split_brain and node.rechecks == []
    # The loser's keepalived went to FAULT and let the address go: its
    # assign may still be running at the API.
    node.peer.document = peer_status(priority=100, holds=False)
    node.guard.poll()
    assert len(node.rechecks) == 1
    assert node.rechecks[0].startswith("the split brain ended with this node holding the floating IP")
    assert f"peer {MX1} does not hold the floating IP" in node.rechecks[0]
    # Once per split brain.
    node.guard.poll()
    assert len(node.rechecks) == 1
    node.peer.document = peer_status(priority=100)
    node.guard.poll()
    node.peer.document = peer_status(priority=100, holds=False)
    node.guard.poll()
    assert len(node.rechecks) == 2


def test_the_loser_and_a_node_without_the_address_ask_for_no_check(agent, tmp_path):
    loser = Node(agent, tmp_path / "loser", peer_status(priority=150))
    loser.guard.poll()
    assert loser.guard.demoted
    loser.holds_ip = False
    loser.peer.document = peer_status(priority=150, holds=False)
    loser.guard.poll()
    assert loser.rechecks == []
    # A winner that lost the address meanwhile (its MTA failed) has nothing to check.
    winner = Node(agent, tmp_path / "winner", peer_status(priority=100), vrrp_priority=150)
    winner.guard.poll()
    winner.holds_ip = False
    winner.peer.document = peer_status(priority=100, holds=False)
    winner.guard.poll()
    assert winner.rechecks == []


def test_a_recheck_request_is_written_for_the_path_unit_and_a_failure_is_one_line(agent, tmp_path, capsys):
    path = tmp_path / "run" / "fip-recheck"
    agent.request_fip_recheck(str(path), "the split brain ended")
    stamp, reason = path.read_text().rstrip("\n").split(" ", 1)
    assert float(stamp) > 0 and reason == "the split brain ended"
    assert "asked the floating IP mover for a settled check" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    agent.request_fip_recheck(str(blocker / "fip-recheck"), "the split brain ended")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "cannot ask for a floating IP check" in lines[0] and "timer" in lines[0]


def test_the_fip_recheck_file_setting(agent, tmp_path):
    conf = tmp_path / "health.conf"
    conf.write_text("")
    assert agent.health.load_config(str(conf))["fip_recheck_file"] == ""
    conf.write_text("fip_recheck_file=/run/mailha/fip-recheck\n")
    assert agent.health.load_config(str(conf))["fip_recheck_file"] == "/run/mailha/fip-recheck"
    for text, match in {
        "fip_recheck_file=fip-recheck": "must be an absolute path",
        "track_file=/run/mailha/x\nfip_recheck_file=/run/mailha/x": "must not be a track file",
        "split_brain_track_file=/run/mailha/x\nfip_recheck_file=/run/mailha/x": "must not be a track file",
    }.items():
        conf.write_text(text + "\n")
        with pytest.raises(agent.health.UsageError, match=match):
            agent.health.load_config(str(conf))


def test_the_override_file_can_make_the_lower_configured_priority_win(agent, tmp_path):
    (tmp_path / "mailha-priority").write_text("priority 200\n")  # mailha switch made mx2 the target
    node = Node(agent, tmp_path, peer_status(priority=150))
    node.guard.poll()
    assert node.guard.split_brain and not node.guard.demoted


@pytest.mark.parametrize(
    "answer",
    [
        ConnectionRefusedError("refused"),
        TimeoutError("timed out"),
        ValueError("Expecting value"),
        ["not", "an", "object"],
        {"holds_floating_ip": True, "healthy": True},  # an agent without the claim fields
        peer_status(priority=True),
        peer_status(priority=150.0),
        peer_status(holds="yes"),
        peer_status(address="mx1"),
        peer_status(address=184352011),
        peer_status(address=MX2),  # peer_agent_url names this node itself
    ],
)
def test_a_peer_that_does_not_answer_properly_changes_nothing(agent, tmp_path, answer, capsys):
    node = Node(agent, tmp_path, answer)
    node.guard.poll()
    assert node.peer.asked == 1
    assert not node.guard.demoted and not node.guard.split_brain and node.track_value() is None
    assert capsys.readouterr().err == ""


class FakeRawSocket:
    """recvfrom() hands out what the test puts in; None ends it as an error would."""

    def __init__(self):
        self.packets = queue.Queue()
        self.closed = False

    def recvfrom(self, size):
        packet = self.packets.get(timeout=10)
        if packet is None:
            raise OSError("socket closed")
        return packet

    def close(self):
        self.closed = True


@pytest.fixture()
def adverts(agent):
    """An AdvertListener on a fake raw socket, with the test's clock; adverts.put(source) delivers a packet."""
    clock = Clock()
    listener = agent.AdvertListener(MX1, clock=clock)
    sock = FakeRawSocket()
    assert listener.start(open_socket=lambda: sock)

    def put(source):
        before = listener.last
        sock.packets.put((b"\x45" + b"\x00" * 39, (source, 0)))
        sock.packets.put((b"", ("192.0.2.99", 0)))  # and wait until it was read
        assert wait_for(lambda: sock.packets.empty())
        time.sleep(0.05)
        return listener.last != before

    listener.put, listener.test_clock, listener.sock = put, clock, sock
    yield listener
    sock.packets.put(None)


def test_the_advert_listener_notes_the_peer_only(agent, adverts):
    assert adverts.available and adverts.last is None
    assert not adverts.put(MX2) and not adverts.put("10.213.0.20")
    assert not adverts.heard_within(1.6)
    adverts.test_clock.now = 200.0
    assert adverts.put(MX1) and adverts.last == 200.0
    adverts.test_clock.now = 201.6
    assert adverts.heard_within(1.6)
    adverts.test_clock.now = 201.7
    assert not adverts.heard_within(1.6)


def test_without_a_raw_socket_one_line_and_no_adverts(agent, capsys):
    listener = agent.AdvertListener(MX1)

    def refuse():
        raise PermissionError(1, "Operation not permitted")

    assert listener.start(open_socket=refuse) is False
    assert not listener.available and not listener.heard_within(10)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot open a raw socket for VRRP adverts" in err


def share_clock(node, adverts):
    """The guard and the listener on one clock."""
    adverts.clock = node.clock
    node.guard.adverts = adverts


def test_demoted_stays_demoted_while_no_advert_arrives(agent, tmp_path, adverts):
    node = Node(agent, tmp_path, peer_status())
    share_clock(node, adverts)
    node.guard.poll()
    assert node.guard.demoted
    node.holds_ip = False
    # The peer's adverts from anyone else, or from before the window, do not count.
    assert not adverts.put(MX2)
    for _ in range(40):  # 10 s of polls
        node.clock.now += 0.25
        node.guard.poll()
        assert node.guard.demoted and node.track_value() == "1\n"


def test_an_advert_from_the_peer_clears_the_demotion(agent, tmp_path, adverts, capsys):
    node = Node(agent, tmp_path, peer_status())
    share_clock(node, adverts)
    node.guard.poll()
    assert node.guard.demoted and node.track_value() == "1\n"
    node.holds_ip = False
    node.clock.now += 5.0
    assert adverts.put(MX1)  # VRRP gets through again
    node.clock.now += 1.5  # within 3 * 0.2 + 1 s of it
    node.guard.poll()
    assert not node.guard.demoted and node.track_value() == "0\n"
    assert node.active() == f"floating IP {FLOATING_IP} not held"
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].endswith(f"split-brain demotion cleared: VRRP advertisements from {MX1} arrive")
    # Now BACKUP, without the floating IP: the guard does not ask the peer.
    asked = node.peer.asked
    node.guard.poll()
    assert node.peer.asked == asked


def test_an_advert_older_than_the_window_does_not_clear(agent, tmp_path, adverts):
    node = Node(agent, tmp_path, peer_status())
    share_clock(node, adverts)
    node.guard.poll()
    assert adverts.put(MX1)
    node.clock.now += 3 * 0.2 + 1.0 + 0.01
    node.guard.poll()
    assert node.guard.demoted


def test_no_demotion_while_the_peers_adverts_arrive(agent, tmp_path, adverts, capsys):
    """Both hold the floating IP for a moment while VRRP works (keepalived
    settles it within an advert interval): no FAULT for that."""
    node = Node(agent, tmp_path, peer_status())
    share_clock(node, adverts)
    assert adverts.put(MX1)
    node.clock.now += 0.5
    node.guard.poll()
    assert node.guard.split_brain and not node.guard.demoted and node.track_value() is None
    assert "no demotion" in capsys.readouterr().err
    node.clock.now += 2.0  # and then VRRP is cut
    node.guard.poll()
    assert node.guard.demoted


@pytest.mark.parametrize(
    ("later", "why"),
    [
        (peer_status(holds=False), f"peer {MX1} does not hold the floating IP"),
        (peer_status(healthy=False), f"peer {MX1} is unhealthy"),
        (ConnectionRefusedError("refused"), "does not answer with a valid /status"),
    ],
)
def test_the_demotion_clears_when_the_peer_lets_go(agent, tmp_path, later, why, capsys):
    node = Node(agent, tmp_path, peer_status())
    node.guard.poll()
    node.holds_ip = False
    node.guard.poll()
    assert node.guard.demoted and node.track_value() == "1\n"
    node.peer.document = later
    node.guard.poll()
    assert not node.guard.demoted and node.track_value() == "0\n"
    assert capsys.readouterr().err.splitlines()[-1].endswith(why)


def test_without_adverts_the_demotion_clears_only_through_the_peer(agent, tmp_path):
    listener = agent.AdvertListener(MX1)
    listener.start(open_socket=lambda: (_ for _ in ()).throw(PermissionError(1, "not permitted")))
    node = Node(agent, tmp_path, peer_status(), adverts=listener)
    node.guard.poll()
    listener.heard()  # nothing could record it; it must not count either
    for _ in range(20):
        node.clock.now += 0.25
        node.guard.poll()
    assert node.guard.demoted
    node.peer.document = peer_status(holds=False)
    node.guard.poll()
    assert not node.guard.demoted


def test_the_track_file_says_1_while_the_mta_failed_or_the_node_is_demoted(agent, tmp_path):
    node = Node(agent, tmp_path, peer_status(), watch_fall=2, watch_rise=2)
    watcher = node.watcher
    watcher.sync_track(force=True)
    assert node.track_value() == "0\n"
    node.guard.poll()  # demoted at once, the MTA healthy
    assert node.track_value() == "1\n"
    for _ in range(2):  # the MTA fails too
        if watcher.observe(DOWN) is not None:
            watcher.sync_track()
    assert watcher.failed and node.track_value() == "1\n"
    node.peer.document = peer_status(holds=False)
    node.guard.poll()  # demotion cleared: the MTA still failed
    assert not node.guard.demoted and node.track_value() == "1\n"
    written = [watcher.observe(HEALTHY) for _ in range(2)]
    assert written == [None, 0]  # the MTA's hysteresis is untouched
    watcher.sync_track()
    assert node.track_value() == "0\n"
    # The other order: MTA failed, demoted, MTA healthy again: 1 until the demotion clears.
    for _ in range(2):
        watcher.observe(DOWN)
    watcher.sync_track()
    node.peer.document = peer_status()
    node.holds_ip = True
    node.guard.poll()
    for _ in range(2):
        watcher.observe(HEALTHY)
    watcher.sync_track()
    assert node.guard.demoted and not watcher.failed and node.track_value() == "1\n"
    node.peer.document = peer_status(healthy=False)
    node.guard.poll()
    assert node.track_value() == "0\n"


def test_the_watcher_thread_writes_the_combined_value(agent, tmp_path):
    """run() starts from the combined value, not from the MTA's alone."""
    node = Node(agent, tmp_path, peer_status())
    node.guard.poll()
    node.track.unlink()
    rounds = []

    def stop(_seconds):
        rounds.append(node.track_value())
        if len(rounds) == 2:
            raise RuntimeError("stop")

    watcher = node.watcher
    watcher.check, watcher.sleep = (lambda _settings: HEALTHY), stop
    with pytest.raises(RuntimeError):
        watcher.run()
    assert rounds == ["1\n", "1\n"]


def test_status_reports_the_claim_and_the_demotion(agent, tmp_path):
    (tmp_path / "mailha-priority").write_text("priority 90\n")
    node = Node(agent, tmp_path, peer_status())
    findings, holds_ip, drained, reason = node.agent.evaluate(node.settings, node.watcher, node.guard)
    document = agent.status_document(node.settings, findings, holds_ip, drained, reason, node.guard)
    assert {key: document[key] for key in ("vrrp_priority", "address", "split_brain", "demoted", "demoted_reason")} == {
        "vrrp_priority": 90,
        "address": MX2,
        "split_brain": False,
        "demoted": False,
        "demoted_reason": None,
    }
    node.guard.poll()
    findings, holds_ip, drained, reason = node.agent.evaluate(node.settings, node.watcher, node.guard)
    document = json.loads(
        json.dumps(agent.status_document(node.settings, findings, holds_ip, drained, reason, node.guard))
    )
    assert document["split_brain"] is True and document["demoted"] is True
    assert document["demoted_reason"].startswith(f"split brain, peer {MX1} holds the floating IP")
    assert document["active"] is False and document["active_reason"] == "demoted: " + document["demoted_reason"]
    # What one agent's /status says is what the other's guard reads.
    view = agent.peer_view(document, MX1)
    assert (view.priority, view.address, view.healthy) == (90, MX2, True)
    # Without a peer the fields are there too, and say nothing happened.
    plain = agent.status_document(settings(agent, queue_directory=str(tmp_path)), HEALTHY, False, False, None)
    assert (plain["vrrp_priority"], plain["address"], plain["split_brain"], plain["demoted"]) == (
        100,
        "127.0.0.1",
        False,
        False,
    )


class PeerAgent:
    """A peer agent's /status on 127.0.0.1, as a tiny http.server."""

    def __init__(self, document):
        self.document = document
        peer = self

        class StatusHandler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # the name http.server calls
                document = peer.document
                body = document if isinstance(document, bytes) else json.dumps(document).encode()
                self.send_response(200 if self.path == "/status" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StatusHandler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/status"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def peer_agent():
    peers = []

    def start(document):
        peers.append(PeerAgent(document))
        return peers[-1]

    yield start
    for peer in peers:
        peer.close()


def test_the_guard_reads_the_peer_over_http(agent, tmp_path, peer_agent, loopback):
    peer = peer_agent(peer_status())
    assert agent.fetch_status(peer.url) == peer_status()
    values = split_settings(agent, tmp_path, peer_agent_url=peer.url, peer_address=MX1)
    watcher = healthy_watcher(agent, values)
    guard = agent.SplitBrainGuard(values, holds_ip=lambda: True, on_change=watcher.set_demoted)
    guard.poll()
    assert guard.demoted and (tmp_path / "mta-fault").read_text() == "1\n"
    # /active and /status of the demoted node, over HTTP.
    start, connect = loopback
    server = start(watcher=watcher, guard=guard)
    head, _, body = ask(connect, server, b"GET /active HTTP/1.0\r\n\r\n").partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 503")
    assert body.decode().startswith(f"not active: demoted: split brain, peer {MX1} holds the floating IP")
    document = json.loads(ask(connect, server, b"GET /status HTTP/1.0\r\n\r\n").partition(b"\r\n\r\n")[2])
    assert document["demoted"] is True and document["address"] == "127.0.0.1"
    metrics = ask(connect, server, b"GET /metrics HTTP/1.0\r\n\r\n").decode()
    assert "mailha_demoted 1\n" in metrics and "mailha_split_brain 1\n" in metrics
    # The peer lets the floating IP go.
    peer.document = peer_status(holds=False)
    guard.poll()
    assert not guard.demoted and (tmp_path / "mta-fault").read_text() == "0\n"


@pytest.mark.parametrize("answer", [b"not json", b"[1, 2", b"{}" + b" " * 70000])
def test_a_garbled_peer_over_http_changes_nothing(agent, tmp_path, peer_agent, answer):
    peer = peer_agent(answer)
    guard = agent.SplitBrainGuard(split_settings(agent, tmp_path, peer_agent_url=peer.url), holds_ip=lambda: True)
    guard.poll()
    assert not guard.demoted and not guard.split_brain


def test_an_unreachable_peer_over_http_changes_nothing_and_quickly(agent, tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}/status"
    closed.close()
    guard = agent.SplitBrainGuard(split_settings(agent, tmp_path, peer_agent_url=url), holds_ip=lambda: True)
    began = time.monotonic()
    guard.poll()
    assert not guard.demoted and time.monotonic() - began < agent.PEER_TIMEOUT + 0.5
    # A peer that accepts but never answers: the poll ends after PEER_TIMEOUT.
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        values = split_settings(agent, tmp_path, peer_agent_url=f"http://127.0.0.1:{silent.getsockname()[1]}/status")
        guard = agent.SplitBrainGuard(values, holds_ip=lambda: True)
        began = time.monotonic()
        guard.poll()
        assert not guard.demoted and time.monotonic() - began < agent.PEER_TIMEOUT * 2 + 0.5
    finally:
        silent.close()


def test_the_agent_exits_when_the_guard_dies(agent, capsys):
    values = settings(agent, agent_bind_address="127.0.0.1", agent_port=0)
    server = agent.AgentServer(values)

    class BrokenGuard:
        def run(self):
            raise RuntimeError("a bug in the guard")

    try:
        result = []
        thread = threading.Thread(target=lambda: result.append(agent.serve(server, None, BrokenGuard())), daemon=True)
        thread.start()
        thread.join(10)
        assert result == [1]
    finally:
        server.server_close()
    assert "the split-brain guard died: RuntimeError: a bug in the guard" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("# Ansible managed\n* hold:[10.0.0.100]:25\n", "hold"),
        ("* relay:[10.0.0.100]:25\n", "hand-over"),
        ("#\n# Ansible managed\ngmail.com mx_google:\nyahoo.com mx_yahoo:\n", "direct"),
        ("", "direct"),
        (None, None),
    ],
)
def test_status_reports_how_postfix_routes_the_mail(agent, tmp_path, content, expected):
    route_file = tmp_path / "mailha_role_transport"
    if content is not None:
        route_file.write_text(content)
    values = settings(agent, queue_directory=str(tmp_path), route_file=str(route_file))
    assert agent.status_document(values, HEALTHY, False, False, None)["route"] == expected


def own_file_node(agent, tmp_path, document, **overrides):
    """A Node whose demotion goes to split_brain_track_file, as the roles set it up."""
    return Node(agent, tmp_path, document, split_brain_track_file=str(tmp_path / "split-brain"), **overrides)


def test_with_its_own_file_a_demotion_leaves_the_mta_track_file_alone(agent, tmp_path):
    node = own_file_node(agent, tmp_path, peer_status())
    node.watcher.sync_track(force=True)  # as run() starts
    assert (node.track_value(), node.split_value()) == ("0\n", "0\n")
    node.guard.poll()
    assert node.guard.demoted and (node.track_value(), node.split_value()) == ("0\n", "1\n")
    # Staying demoted writes nothing more, to either file.
    node.track.unlink()
    node.holds_ip = False
    for _ in range(5):
        node.clock.now += 0.25
        node.guard.poll()
    assert node.guard.demoted and node.track_value() is None and node.split_value() == "1\n"
    node.peer.document = peer_status(holds=False)
    node.guard.poll()
    assert not node.guard.demoted and node.track_value() is None and node.split_value() == "0\n"


def test_with_its_own_file_an_mta_failure_writes_the_mta_track_file_only(agent, tmp_path):
    node = own_file_node(agent, tmp_path, peer_status(), watch_fall=2, watch_rise=2)
    watcher = node.watcher
    watcher.sync_track(force=True)
    for _ in range(2):
        if watcher.observe(DOWN) is not None:
            watcher.sync_track()
    assert watcher.failed and (node.track_value(), node.split_value()) == ("1\n", "0\n")
    # Demoted while the MTA failed, then the MTA recovers: each file follows its own cause.
    node.guard.poll()
    assert (node.track_value(), node.split_value()) == ("1\n", "1\n")
    for _ in range(2):
        if watcher.observe(HEALTHY) is not None:
            watcher.sync_track()
    assert node.guard.demoted and (node.track_value(), node.split_value()) == ("0\n", "1\n")
    node.peer.document = peer_status(healthy=False)
    node.guard.poll()
    assert (node.track_value(), node.split_value()) == ("0\n", "0\n")


def test_without_its_own_file_the_demotion_still_goes_into_the_track_file(agent, tmp_path):
    node = Node(agent, tmp_path, peer_status())
    node.watcher.sync_track(force=True)
    node.guard.poll()
    assert node.guard.demoted and node.track_value() == "1\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mta-fault"]


def test_the_watcher_thread_writes_both_files_at_start(agent, tmp_path):
    """run() writes every file at once, whatever was there: a stale 1 in the
    demotion file of an agent without a peer would hold keepalived in FAULT."""
    values = settings(agent, tmp_path / "mta-fault", split_brain_track_file=str(tmp_path / "split-brain"))
    (tmp_path / "split-brain").write_text("1\n")
    rounds = []

    def stop(_seconds):
        rounds.append(((tmp_path / "mta-fault").read_text(), (tmp_path / "split-brain").read_text()))
        raise RuntimeError("stop")

    assert not agent.was_demoted(values)  # no peer: nothing could clear it
    watcher = agent.Watcher(values, check=lambda _settings: HEALTHY, sleep=stop, demoted=agent.was_demoted(values))
    with pytest.raises(RuntimeError):
        watcher.run()
    assert rounds == [("0\n", "0\n")]


def restarted(agent, tmp_path, document, **overrides):
    """A Node whose agent just started again, as main() builds it."""
    node = own_file_node(agent, tmp_path, document, **overrides)
    demoted = agent.was_demoted(node.settings)
    node.watcher = agent.Watcher(node.settings, clock=node.clock, demoted=demoted)
    node.guard = agent.SplitBrainGuard(
        node.settings,
        fetch=node.peer,
        holds_ip=lambda: node.holds_ip,
        on_change=node.watcher.set_demoted,
        clock=node.clock,
        demoted=demoted,
    )
    node.watcher.sync_track(force=True)
    return node


def test_a_restarted_agent_keeps_a_demotion_until_its_guard_decides(agent, tmp_path, capsys):
    (tmp_path / "split-brain").write_text("1\n")
    # keepalived is in FAULT (the file said 1): this node does not hold the floating IP.
    node = restarted(agent, tmp_path, peer_status(), holds_ip=False)
    assert node.guard.demoted and node.split_value() == "1\n" and node.track_value() == "0\n"
    assert node.active().startswith("demoted: split brain: this node was demoted")
    # The peer still holds the floating IP, healthy, no advert: it stays.
    node.guard.poll()
    assert node.peer.asked == 1 and node.guard.demoted and node.split_value() == "1\n"
    node.peer.document = peer_status(holds=False)
    node.guard.poll()
    assert not node.guard.demoted and node.split_value() == "0\n"
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"peer {MX1} does not hold the floating IP")


def test_a_restarted_agent_drops_a_demotion_the_peer_no_longer_justifies(agent, tmp_path):
    (tmp_path / "split-brain").write_text("1\n")
    node = restarted(agent, tmp_path, ConnectionRefusedError("refused"), holds_ip=False)
    assert node.guard.demoted
    node.guard.poll()
    assert not node.guard.demoted and node.split_value() == "0\n"


def test_only_the_demotion_file_carries_a_demotion_over(agent, tmp_path):
    (tmp_path / "split-brain").write_text("0\n")
    assert not restarted(agent, tmp_path, peer_status()).guard.demoted
    # Folded into track_file a demotion looks like an MTA failure: the
    # restarted watcher starts failed, the guard not demoted.
    (tmp_path / "mta-fault").write_text("1\n")
    values = split_settings(agent, tmp_path)
    assert not agent.was_demoted(values) and agent.Watcher(values).failed
    # With its own file, the MTA file says nothing about the demotion.
    values = split_settings(agent, tmp_path, split_brain_track_file=str(tmp_path / "split-brain"))
    assert not agent.was_demoted(values) and agent.Watcher(values).failed
    (tmp_path / "split-brain").write_text("1\n")
    assert agent.was_demoted(values)
    assert not agent.was_demoted(dict(values, peer_agent_url=""))


# The degraded level (agent header, "Degraded"), and what /status, /active,
# /health and /metrics say of it.


def greeting(seconds, dry_run=False):
    """A healthy check whose greeting took `seconds`."""
    return {"exit_code": 0, "reason": "healthy", "smtp": {"ok": True, "seconds": seconds, "dry_run": dry_run}}


SILENT = {"exit_code": 1, "reason": "MTA failed: no greeting within 1 s", "smtp": {"ok": False, "dry_run": False}}


def graded_watcher(agent, tmp_path=None, read_queue=None, **overrides):
    """A watcher graded on greetings alone (queue thresholds off unless given)."""
    values = settings(
        agent,
        tmp_path / "mta-fault" if tmp_path is not None else "",
        degraded_latency_seconds=0.5,
        degraded_latency_window=3,
        degraded_queue_messages=None,
        degraded_queue_age_seconds=None,
        degraded_fall=2,
        degraded_rise=3,
    )
    values.update(overrides)
    clock = Clock()
    watcher = agent.Watcher(values, clock=clock, read_queue=read_queue)
    watcher.test_clock = clock
    return watcher


def levels(agent, watcher, sequence, step=0.25):
    """The health level after each check of sequence."""
    found = []
    for findings in sequence:
        watcher.observe(findings)
        watcher.test_clock.now += step
        found.append(agent.health_level(findings, watcher.grade()))
    return found


def test_degraded_after_fall_evaluations_and_ok_after_rise(agent, capsys):
    watcher = graded_watcher(agent)
    fast, slow = greeting(0.01), greeting(0.8)
    sequence = [fast, fast, fast, slow, slow, slow, slow, slow, fast, fast, fast, fast, fast, fast]
    # The median turns slow with the second slow greeting (checks 5, 6: two
    # evaluations, degraded_fall) and fast with the second fast one (checks
    # 10, 11, 12: degraded_rise).
    assert levels(agent, watcher, sequence) == ["ok"] * 5 + ["degraded"] * 6 + ["ok"] * 3
    assert capsys.readouterr().err.splitlines() == [
        "mailha-health-agent: degraded: greeting median 0.800 s over the last 3 checks (degraded_latency_seconds 0.5)",
        "mailha-health-agent: no longer degraded",
    ]


def test_a_condition_that_breaks_off_restarts_the_count(agent):
    watcher = graded_watcher(agent, degraded_latency_window=3, degraded_fall=3)
    fast, slow = greeting(0.01), greeting(0.8)
    # Pairs of slow greetings: the median is slow for two evaluations at a
    # time, then fast again; never three in a row.
    sequence = [fast] * 3 + ([slow] * 2 + [fast] * 2) * 3
    assert "degraded" not in levels(agent, watcher, sequence)
    assert levels(agent, watcher, [slow] * 5) == ["ok"] * 3 + ["degraded"] * 2


def test_one_slow_answer_never_changes_the_level(agent):
    """Even with degraded_fall 1: the median of a full window ignores one answer,
    and a window that is not full yet is not judged."""
    watcher = graded_watcher(agent, degraded_latency_window=20, degraded_fall=1, degraded_rise=1)
    fast = greeting(0.02)
    sequence = [greeting(4.0)] + [fast] * 25 + [greeting(4.0)] + [fast] * 5 + [greeting(0.9)]
    assert set(levels(agent, watcher, sequence)) == {"ok"}
    grade = watcher.grade()
    assert grade.median == 0.02 and grade.reasons == ()


def test_the_median_is_over_the_last_window_of_greetings(agent):
    watcher = graded_watcher(agent, degraded_latency_window=5, degraded_fall=1, degraded_rise=1)
    for seconds in (0.1, 0.1, 0.9, 0.9):
        watcher.observe(greeting(seconds))
    assert not watcher.grade().degraded  # four greetings: the window is not full
    watcher.observe(greeting(0.9))
    grade = watcher.grade()
    assert grade.degraded and grade.median == 0.9
    assert grade.reasons == ("greeting median 0.900 s over the last 5 checks (degraded_latency_seconds 0.5)",)
    # Older greetings leave the window: three fast ones make its median fast.
    for _ in range(3):
        watcher.observe(greeting(0.1))
    grade = watcher.grade()
    assert not grade.degraded and grade.median == 0.1 and grade.reasons == ()
    # A median exactly at the threshold is not above it.
    for _ in range(5):
        watcher.observe(greeting(0.5))
    assert not watcher.grade().degraded


def test_dry_runs_are_not_greetings_and_misses_count_as_the_deadline(agent):
    watcher = graded_watcher(agent, degraded_fall=1, timeout=2.0)
    for _ in range(3):
        watcher.observe(greeting(0.9, dry_run=True))  # EHLO to RSET: not a greeting
    assert watcher.grade().median is None and watcher.grade().greetings.counts[-1] == 0
    watcher.observe(greeting(0.01))
    watcher.observe(SILENT)
    watcher.observe(SILENT)
    grade = watcher.grade()
    # Two misses at the 2 s deadline: a relay that misses its deadlines is
    # slow, not fast; the histogram holds the one measured greeting only.
    assert grade.median == 2.0 and grade.degraded and sum(grade.greetings.counts) == 1


def test_failed_wins_over_degraded(agent, tmp_path):
    watcher = graded_watcher(agent, degraded_fall=1)
    for _ in range(3):
        watcher.observe(greeting(0.8))
    grade = watcher.grade()
    assert agent.health_level(greeting(0.8), grade) == "degraded"
    assert agent.health_level(DOWN, grade) == "failed"
    values = dict(watcher.settings, queue_directory=str(tmp_path), vrrp_log=str(tmp_path / "vrrp.log"))
    document = agent.status_document(values, DOWN, False, False, "unhealthy", grade=grade)
    assert document["health_level"] == "failed" and document["healthy"] is False
    assert (
        sample(parse_exposition(agent._metrics(DOWN, False, False, "unhealthy", grade=grade)), "mailha_health_level")
        == 2
    )
    assert agent.health_level(HEALTHY, agent.NO_GRADE) == "ok"


def test_degraded_moves_the_floating_ip_only_with_failover_on_degraded(agent, tmp_path):
    slow, fast = greeting(0.8), greeting(0.01)
    # Default: the track file stays 0 and observe() reports no change.
    watcher = graded_watcher(agent, tmp_path, degraded_fall=1, degraded_rise=1)
    watcher.sync_track(force=True)
    assert [watcher.observe(slow) for _ in range(3)] == [None, None, None]
    assert watcher.grade().degraded and watcher.track_value() == 0
    assert (tmp_path / "mta-fault").read_text() == "0\n"
    # failover_on_degraded: degraded is failed for keepalived.
    watcher = graded_watcher(agent, tmp_path, degraded_fall=1, degraded_rise=1, failover_on_degraded=True)
    written = []
    for findings in [slow, slow, slow, fast, fast, fast]:
        change = watcher.observe(findings)
        written.append(change)
        if change is not None:
            watcher.sync_track()
        if change == 1:
            assert (tmp_path / "mta-fault").read_text() == "1\n"
    assert written == [None, None, 1, None, 0, None]
    assert (tmp_path / "mta-fault").read_text() == "0\n"


def test_a_failure_while_degraded_with_failover_changes_nothing_more(agent, tmp_path):
    watcher = graded_watcher(agent, tmp_path, degraded_fall=1, failover_on_degraded=True, watch_fall=1, watch_rise=1)
    assert [watcher.observe(greeting(0.8)) for _ in range(3)][-1] == 1
    # The MTA fails too: the track file already says 1.
    assert watcher.observe(DOWN) is None and watcher.failed and watcher.track_value() == 1


def degraded_node(agent, tmp_path, **overrides):
    """A watcher graded degraded, with settings for the endpoints: this node
    holds the floating IP (127.0.0.1) and is not drained."""
    watcher = graded_watcher(
        agent,
        tmp_path,
        degraded_fall=1,
        floating_ip="127.0.0.1",
        drain_file=str(tmp_path / "drain"),
        queue_directory=str(tmp_path / "queue"),
        vrrp_log=str(tmp_path / "vrrp.log"),
        agent_bind_address="127.0.0.1",
        agent_port=0,
        agent_request_timeout=1.0,
        agent_max_connections=4,
        **overrides,
    )
    watcher.clock = lambda: 100.0  # the verdict stays fresh for the endpoints
    for _ in range(3):
        watcher.observe(greeting(0.8))
    assert watcher.grade().degraded
    return watcher


def test_active_stays_200_while_degraded_without_failover_on_degraded(agent, tmp_path, loopback):
    start, connect = loopback
    watcher = degraded_node(agent, tmp_path)
    server = start(watcher=watcher, **watcher.settings)
    assert ask(connect, server, b"GET /active HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200")
    health_answer = ask(connect, server, b"GET /health HTTP/1.0\r\n\r\n")
    assert health_answer.startswith(b"HTTP/1.0 200")
    assert health_answer.endswith(
        b"\r\n\r\nhealthy, degraded: greeting median 0.800 s over the last 3 checks (degraded_latency_seconds 0.5)\n"
    )
    document = json.loads(ask(connect, server, b"GET /status HTTP/1.0\r\n\r\n").partition(b"\r\n\r\n")[2])
    assert document["health_level"] == "degraded" and document["active"] is True
    assert document["greeting_latency_median_seconds"] == 0.8
    assert document["degraded_reasons"] == [
        "greeting median 0.800 s over the last 3 checks (degraded_latency_seconds 0.5)"
    ]


def test_active_says_503_while_degraded_with_failover_on_degraded(agent, tmp_path, loopback):
    start, connect = loopback
    watcher = degraded_node(agent, tmp_path, failover_on_degraded=True)
    server = start(watcher=watcher, **watcher.settings)
    answer = ask(connect, server, b"GET /active HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 503")
    assert b"not active: degraded (failover_on_degraded): greeting median 0.800 s" in answer
    # /health stays the MTA's verdict: 200.
    assert ask(connect, server, b"GET /health HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200")


def test_status_of_an_ok_relay_reports_the_median_and_no_reasons(agent, tmp_path):
    watcher = graded_watcher(agent)
    watcher.observe(greeting(0.03))
    values = dict(watcher.settings, queue_directory=str(tmp_path), vrrp_log=str(tmp_path / "vrrp.log"))
    document = json.loads(json.dumps(agent.status_document(values, HEALTHY, False, False, None, grade=watcher.grade())))
    assert (document["health_level"], document["greeting_latency_median_seconds"], document["degraded_reasons"]) == (
        "ok",
        0.03,
        [],
    )
    # Without a watcher: no history, no median.
    plain = agent.status_document(values, HEALTHY, False, False, None)
    assert (plain["health_level"], plain["greeting_latency_median_seconds"], plain["degraded_reasons"]) == (
        "ok",
        None,
        [],
    )


class QueueReader:
    """queue_details as the watcher calls it, counting the calls."""

    def __init__(self, counts=None, oldest=None):
        self.counts = counts or {"maildrop": 0, "incoming": 0, "active": 0, "deferred": 0, "hold": 0}
        self.oldest = oldest
        self.calls = 0
        self.error = None

    def __call__(self):
        self.calls += 1
        if self.error:
            raise self.error
        return dict(self.counts), self.oldest


def test_the_queue_is_read_at_most_every_few_seconds(agent):
    reader = QueueReader()
    watcher = graded_watcher(agent, read_queue=reader, degraded_queue_messages=100)
    levels(agent, watcher, [greeting(0.01)] * 40)  # 10 s of checks, one every 0.25 s
    assert reader.calls == 10 / agent.QUEUE_READ_INTERVAL
    # Without a queue threshold the watcher never reads the queue.
    idle = QueueReader()
    levels(agent, graded_watcher(agent, read_queue=idle), [greeting(0.01)] * 40)
    assert idle.calls == 0


def test_a_big_or_old_queue_degrades_and_an_unreadable_one_says_why(agent):
    reader = QueueReader()
    watcher = graded_watcher(
        agent, read_queue=reader, degraded_queue_messages=100, degraded_queue_age_seconds=600, degraded_fall=1
    )
    step = agent.QUEUE_READ_INTERVAL
    assert levels(agent, watcher, [greeting(0.01)], step) == ["ok"]
    reader.counts.update(active=60, deferred=41)
    reader.oldest = 601.0
    assert levels(agent, watcher, [greeting(0.01)], step) == ["degraded"]
    assert watcher.grade().reasons == (
        "queue holds 101 messages (degraded_queue_messages 100)",
        "oldest queued message is 601 s old (degraded_queue_age_seconds 600)",
    )
    reader.error = PermissionError(13, "Permission denied")
    levels(agent, watcher, [greeting(0.01)], step)
    assert watcher.grade().reasons == ("queue unreadable: [Errno 13] Permission denied",)
    # Exactly at the limits is not above them; the greetings stay fast.
    reader.error = None
    reader.counts.update(deferred=40)
    reader.oldest = 600.0
    assert levels(agent, watcher, [greeting(0.01)] * 3, step)[-1] == "ok"


# A small parser of the Prometheus text format (0.0.4), strict about what
# /metrics must respect: HELP and TYPE at most once per family and before
# its samples, valid names, label sets and values.
METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE_LINE = re.compile(rf'({METRIC_NAME})(?:\{{((?:[a-zA-Z_]\w*="[^"\\]*",?)*)\}})? (\S+)')
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def parse_exposition(text):
    """{(name, frozenset of label pairs): value}; asserts the format's rules."""
    assert text.endswith("\n")
    types, helps, samples, finished = {}, set(), {}, set()
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, family, rest = line[2:6], *line[7:].split(" ", 1)
            assert re.fullmatch(METRIC_NAME, family) and rest, line
            seen = helps if kind == "HELP" else types
            assert family not in seen and family not in finished, f"second {kind} of {family}"
            if kind == "TYPE":
                assert rest in ("gauge", "counter", "histogram", "summary", "untyped"), line
                types[family] = rest
            else:
                helps.add(family)
            if current is not None and current != family:
                finished.add(current)
            current = family
            continue
        match = SAMPLE_LINE.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        family = name
        if name not in types:
            family = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
            assert types.get(family) == "histogram", f"{name} has no TYPE of its own"
        assert family == current, f"{name} outside its family's block"
        pairs = (
            frozenset(tuple(pair.split("=", 1)) for pair in labels.rstrip(",").split(",")) if labels else frozenset()
        )
        key = (name, frozenset((k, v.strip('"')) for k, v in pairs))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return samples


def sample(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def test_metrics_parse_and_the_greeting_histogram_is_cumulative(agent, tmp_path):
    watcher = graded_watcher(agent)
    measured = [0.01, 0.05, 0.07, 0.3, 0.3, 0.9, 3.0, 7.5]
    for seconds in measured:
        watcher.observe(greeting(seconds))
    watcher.observe(SILENT)  # no measurement: not counted
    log_file = tmp_path / "vrrp.log"
    log_file.write_text("2024-05-01T12:00:00.000Z VI_MAIL BACKUP 100\n2024-05-01T12:00:02.500Z VI_MAIL MASTER 150\n")
    values = dict(watcher.settings, vrrp_log=str(log_file), queue_directory=str(tmp_path / "queue"))
    (tmp_path / "queue" / "deferred").mkdir(parents=True)
    (tmp_path / "queue" / "deferred" / "A1").write_text("queued")
    old = time.time() - 120
    os.utime(tmp_path / "queue" / "deferred" / "A1", (old, old))
    findings = dict(greeting(0.9), queue={"ok": True, "messages": 1, "max": 10})
    text = agent.metrics_page(values, findings, True, False, None, None, watcher.grade())
    samples = parse_exposition(text)
    buckets = {
        labels: value for (name, labels), value in samples.items() if name == "mailha_smtp_greeting_seconds_bucket"
    }
    expected = {"0.05": 2, "0.1": 3, "0.25": 3, "0.5": 5, "1": 6, "2.5": 6, "5": 7, "+Inf": 8}
    assert {dict(labels)["le"]: value for labels, value in buckets.items()} == expected
    assert sample(samples, "mailha_smtp_greeting_seconds_count") == len(measured)
    assert sample(samples, "mailha_smtp_greeting_seconds_sum") == pytest.approx(sum(measured))
    assert "# TYPE mailha_smtp_greeting_seconds histogram" in text.splitlines()
    # The other new families, and the old names unchanged.
    assert sample(samples, "mailha_health_level") == 1  # the median of 3.0, 7.5, failed check: degraded
    assert sample(samples, "mailha_vrrp_last_transition_timestamp_seconds") == 1714564802.5
    assert 119 <= sample(samples, "mailha_queue_oldest_message_age_seconds") <= 130
    for name in ("mailha_floating_ip_held", "mailha_split_brain", "mailha_demoted", "mailha_active"):
        assert (name, frozenset()) in samples
    assert sample(samples, "mailha_queue_messages") == 1 and sample(samples, "mailha_health_exit_code") == 0
    # More greetings only ever add: the counts are since the agent started.
    watcher.observe(greeting(0.2))
    again = parse_exposition(agent._metrics(findings, True, False, None, grade=watcher.grade()))
    assert sample(again, "mailha_smtp_greeting_seconds_bucket", le="0.25") == 4
    assert sample(again, "mailha_smtp_greeting_seconds_bucket", le="0.1") == 3


@pytest.mark.parametrize(
    ("log_text", "current"),
    [
        ("2024-05-01T12:00:00.000Z VI_MAIL MASTER 150\n", "MASTER"),
        ("2024-05-01T12:00:00.000Z VI_MAIL MASTER 150\n2024-05-01T12:01:00.000Z VI_MAIL fault 150\n", "FAULT"),
        ("2024-05-01T12:00:00.000Z VI_MAIL BACKUP 100\n", "BACKUP"),
        ("2024-05-01T12:00:00.000Z VI_MAIL STOP 100\n", "STOP"),
        ("2024-05-01T12:00:00.000Z VI_MAIL DANCING 100\n", "UNKNOWN"),
        (None, "UNKNOWN"),
    ],
)
def test_vrrp_state_is_one_label_of_five(agent, tmp_path, log_text, current):
    log_file = tmp_path / "vrrp.log"
    if log_text is not None:
        log_file.write_text(log_text)
    values = settings(agent, vrrp_log=str(log_file), queue_directory=str(tmp_path / "queue"))
    samples = parse_exposition(agent.metrics_page(values, HEALTHY, False, False, "not held"))
    states = {dict(labels)["state"]: value for (name, labels), value in samples.items() if name == "mailha_vrrp_state"}
    assert states == {state: float(state == current) for state in ("MASTER", "BACKUP", "FAULT", "STOP", "UNKNOWN")}
    timestamps = [name for name, _ in samples if name == "mailha_vrrp_last_transition_timestamp_seconds"]
    assert len(timestamps) == (log_text is not None)
    # No watcher: no histogram, and an empty queue has no oldest age.
    assert not any(name.startswith("mailha_smtp_greeting_seconds") for name, _ in samples)
    assert ("mailha_queue_oldest_message_age_seconds", frozenset()) not in samples


def test_the_exposition_parser_rejects_what_prometheus_would(agent):
    good = agent._metrics(HEALTHY, False, False, None)
    parse_exposition(good)
    for bad in (
        good + "# TYPE mailha_active gauge\n",  # a second TYPE
        good + "mailha_active 1\n",  # a sample outside its block, and a duplicate
        good + "mailha_new_thing 1\n",  # no TYPE
        good.replace("mailha_drained 0", "mailha_drained zero x"),
    ):
        with pytest.raises(AssertionError):
            parse_exposition(bad)


def test_degraded_settings_are_parsed(agent, tmp_path):
    conf = tmp_path / "health.conf"
    conf.write_text(
        "degraded_latency_seconds=0.3\ndegraded_latency_window=10\ndegraded_queue_messages=500\n"
        "degraded_queue_age_seconds=3600\ndegraded_fall=4\ndegraded_rise=20\nfailover_on_degraded=true\n"
    )
    loaded = agent.health.load_config(str(conf))
    assert [loaded[key] for key in sorted(loaded) if key.startswith(("degraded_", "failover_on"))] == [
        4,
        0.3,
        10,
        3600.0,
        500,
        20,
        True,
    ]
    # Off: 0 or empty, for each threshold.
    conf.write_text("degraded_latency_seconds=0\ndegraded_queue_messages=\ndegraded_queue_age_seconds=none\n")
    loaded = agent.health.load_config(str(conf))
    assert (
        loaded["degraded_latency_seconds"],
        loaded["degraded_queue_messages"],
        loaded["degraded_queue_age_seconds"],
    ) == (
        None,
        None,
        None,
    )
    defaults = agent.health.load_config(str(tmp_path / "missing.conf"))
    assert (defaults["degraded_latency_seconds"], defaults["failover_on_degraded"]) == (0.5, False)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("degraded_latency_seconds=slow", "degraded_latency_seconds: not a number of seconds: 'slow'"),
        ("degraded_latency_seconds=-1", "degraded_latency_seconds: must not be negative: '-1'"),
        ("degraded_latency_seconds=nan", "degraded_latency_seconds: not a number of seconds: 'nan'"),
        ("degraded_queue_messages=1.5", "degraded_queue_messages: not a number of messages: '1.5'"),
        ("degraded_latency_window=2", "degraded_latency_window: must be at least 3"),
        ("degraded_fall=0", "degraded_fall: must be at least 1"),
        ("failover_on_degraded=maybe", "failover_on_degraded: not a boolean: 'maybe'"),
    ],
)
def test_a_bad_degraded_setting_is_one_clear_line(agent, tmp_path, capsys, line, message):
    conf = tmp_path / "health.conf"
    conf.write_text(f"timeout=1\n{line}\n")
    from mailha.node import checkconfig

    assert checkconfig.main(["health", str(conf)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mailha-node check-config: {conf}:2: {message}")


def test_one_queue_reading_serves_every_caller_while_it_is_young_enough(agent):
    reader = QueueReader(counts={"maildrop": 0, "incoming": 0, "active": 3, "deferred": 1, "hold": 0}, oldest=1000.0)
    now, wall = [50.0], [1030.0]
    shared = agent.QueueReader("/nonexistent", read=reader, clock=lambda: now[0], wall=lambda: wall[0])
    assert shared.details(1.0) == (reader.counts, 30.0)
    now[0] += 0.5
    wall[0] += 0.5
    reader.counts["active"] = 9
    # Within max_age: the same counts, but the age of the oldest message now.
    assert shared.details(1.0) == ({**reader.counts, "active": 3}, 30.5)
    assert shared.details(5.0)[0]["active"] == 3 and reader.calls == 1
    now[0] += 0.5
    assert shared.details(1.0)[0]["active"] == 9 and reader.calls == 2
    assert shared.details(0)[0]["active"] == 9 and reader.calls == 3, "max_age 0 reads now"
    reader.error = PermissionError("queue unreadable")
    with pytest.raises(PermissionError):
        shared.details(0)
    with pytest.raises(PermissionError):
        shared.details(5.0)  # the failed reading is the shared one until the next
    assert reader.calls == 4
    reader.error = None
    now[0] -= 100  # a clock that went back reads again
    assert shared.details(5.0)[0]["active"] == 9 and reader.calls == 5


def test_callers_that_arrive_during_a_reading_take_it_instead_of_reading_again(agent):
    entered, release = threading.Event(), threading.Event()
    reader = QueueReader()

    def slow_read():
        entered.set()
        release.wait(5)
        return reader()

    shared = agent.QueueReader("/nonexistent", read=slow_read)
    threads = [threading.Thread(target=shared.details, args=(1.0,)) for _ in range(8)]
    threads[0].start()
    assert entered.wait(5)
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(5)
    assert reader.calls == 1


def test_status_and_metrics_share_the_reading_and_fresh_reads_now(agent, loopback):
    start, _connect = loopback
    reader = QueueReader(counts={"maildrop": 0, "incoming": 0, "active": 2, "deferred": 0, "hold": 0}, oldest=None)
    server = start(queue_reader=agent.QueueReader("/nonexistent", read=reader))

    def get(path):
        client = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        try:
            client.request("GET", path)
            return client.getresponse().read().decode()
        finally:
            client.close()

    for _ in range(5):  # the peer's guard asks four times a second
        assert json.loads(get("/status"))["queue"]["active"] == 2
    get("/metrics")
    assert reader.calls == 1
    reader.counts["active"] = 0
    assert json.loads(get("/status?fresh=1"))["queue"]["active"] == 0
    assert reader.calls == 2
