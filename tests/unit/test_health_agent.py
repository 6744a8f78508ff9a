"""mailha-health-agent: the watcher's track file (hysteresis), the rationed dry
run, and an HTTP server that no client can keep from answering HAProxy."""

import importlib.machinery
import importlib.util
import os
import socket
import subprocess
import threading
import time
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

    def start(watcher=None, **overrides):
        values = settings(agent, agent_bind_address="127.0.0.1", agent_port=0)
        values.update(agent_request_timeout=1.0, agent_max_connections=4)
        values.update(overrides)
        server = agent.AgentServer(values, watcher or healthy_watcher(agent, values))
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

    def __init__(self):
        self.inside = threading.Semaphore(0)
        self.release = threading.Event()

    def fresh(self):
        self.inside.release()
        self.release.wait(10)
        return HEALTHY


def test_at_the_cap_with_every_connection_busy_a_new_one_is_closed_at_once(loopback):
    start, connect = loopback
    watcher = SlowWatcher()
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
