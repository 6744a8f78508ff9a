"""mailha-health-agent: the watcher's track file (hysteresis), the rationed dry
run, an HTTP server that no client can keep from answering HAProxy, and the
split-brain guard (claims, peer polls, demotion, adverts)."""

import http.server
import importlib
import json
import os
import queue
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

    def start(watcher=None, guard=None, **overrides):
        values = settings(agent, agent_bind_address="127.0.0.1", agent_port=0)
        values.update(agent_request_timeout=1.0, agent_max_connections=4)
        values.update(overrides)
        server = agent.AgentServer(values, watcher or healthy_watcher(agent, values), guard=guard)
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
        self.guard = agent.SplitBrainGuard(
            self.settings,
            fetch=self.peer,
            holds_ip=lambda: self.holds_ip,
            adverts=adverts,
            on_change=self.watcher.set_demoted,
            clock=self.clock,
        )

    def track_value(self):
        return self.track.read_text() if self.track.exists() else None

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
