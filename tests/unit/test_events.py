"""Events (mailha.node.events, mailha.events): the syslog line and the spool
file of emit, a deliverer against a real HTTP server on loopback (delivery,
backoff, resume, drop, signature), the lab's receiver, the settings, and the
emitters' hooks."""

import contextlib
import hashlib
import hmac
import http.client
import http.server
import json
import os
import socket
import threading
import types
from pathlib import Path

import pytest

from mailha import events as control_events
from mailha.audit import Record
from mailha.node import agent, config, events, vrrp


@pytest.fixture
def logged(monkeypatch):
    """Every syslog line, caught at the syslog module."""
    lines = []
    monkeypatch.setattr(events.syslog, "openlog", lambda *args: None)
    monkeypatch.setattr(events.syslog, "syslog", lambda priority, line: lines.append(line))
    return lines


def spool_settings(tmp_path, urls=("http://127.0.0.1:9/events",), **overrides):
    settings = dict(events.DEFAULTS, webhook_urls=list(urls), spool_directory=str(tmp_path / "spool"))
    return settings | overrides


def spooled(settings):
    spool = Path(settings["spool_directory"])
    return sorted(p for p in spool.glob("*.json") if not p.name.startswith(".")) if spool.exists() else []


# -- emit -------------------------------------------------------------------


def test_emit_writes_one_syslog_line_and_one_spool_file(tmp_path, logged):
    settings = spool_settings(tmp_path)
    event = events.emit("vrrp_transition", settings=settings, state="MASTER", instance="VI_MAIL", priority="150")
    assert logged == [f"vrrp_transition id={event['id']} state=MASTER instance=VI_MAIL priority=150"]
    [path] = spooled(settings)
    stored = json.loads(path.read_bytes())
    assert stored == event
    assert stored["kind"] == "vrrp_transition" and stored["host"] == socket.gethostname()
    assert stored["time"].endswith("Z") and stored["time"][:4].isdigit()
    assert path.name.endswith(f"-{event['id']}.json")


def test_emit_quotes_values_with_spaces_and_keeps_the_envelope(tmp_path, logged):
    event = events.emit("health", settings=spool_settings(tmp_path), level="failed", reason='no "220" greeting', id="x")
    assert event["id"] != "x"
    assert logged[0].endswith('level=failed reason="no \\"220\\" greeting"')


def test_without_webhooks_emit_only_logs(tmp_path, logged):
    settings = spool_settings(tmp_path, urls=())
    assert events.emit("drill", settings=settings, scenario="mta-crash", passed=True) is not None
    assert len(logged) == 1 and "passed=true" in logged[0]
    assert not (tmp_path / "spool").exists()


def test_emit_never_raises_on_an_unwritable_spool(tmp_path, logged, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = spool_settings(tmp_path, spool_directory=str(blocker / "spool"))
    event = events.emit("switch", settings=settings, result="ok")
    assert event is not None and len(logged) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"event {event['id']} (switch) not spooled" in error


def test_emit_never_raises_when_syslog_fails_or_the_settings_are_bad(tmp_path, monkeypatch, capsys):
    def broken(*args):
        raise OSError("no /dev/log")

    monkeypatch.setattr(events.syslog, "openlog", broken)
    conf = tmp_path / "events.conf"
    conf.write_text("webhook_urls=ftp://x\n")
    monkeypatch.setattr(events, "CONFIG_FILE", str(conf))
    assert events.emit("health", level="ok") is not None
    error = capsys.readouterr().err
    assert "cannot log the health event to syslog" in error and "webhook_urls" in error


# -- the deliverer against a real HTTP server --------------------------------


class Receiver:
    """A real HTTP server on 127.0.0.1 that answers each POST with the next
    status of `statuses` (then 204) and keeps every request."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.requests = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self):
        return [json.loads(body) for _, _, body in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(statuses=()):
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for server in made:
        server.close()


def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def deliverer(settings, clock, lines=None):
    lines = [] if lines is None else lines
    return events.Deliverer(
        settings, clock=clock, sleep=lambda s: None, jitter=lambda: 1.0, log=lambda text, *a: lines.append(text)
    )


def test_the_deliverer_posts_the_spooled_bytes_and_removes_the_event(tmp_path, logged, receiver):
    server = receiver()
    settings = spool_settings(tmp_path, urls=[server.url])
    first = events.emit("switch", settings=settings, result="ok")
    second = events.emit("failback", settings=settings, result="ok")
    raw = [p.read_bytes() for p in spooled(settings)]
    assert deliverer(settings, Clock(events.time.time())).deliver_pass() is None
    assert [body for _, _, body in server.requests] == raw
    assert [b["id"] for b in server.bodies()] == [first["id"], second["id"]]
    path, headers, _ = server.requests[0]
    assert path == "/hook" and headers["Content-Type"] == "application/json"
    assert headers["X-Mailha-Event"] == "switch" and headers["X-Mailha-Event-Id"] == first["id"]
    assert "X-Mailha-Signature" not in headers
    assert os.listdir(settings["spool_directory"]) == []


def test_a_500_and_a_refused_connection_are_retried_with_doubling_backoff(tmp_path, logged, receiver):
    server = receiver(statuses=[500, 503])
    refused = closed_port_url()
    settings = spool_settings(
        tmp_path, urls=[server.url, refused], backoff_initial_seconds=5.0, backoff_max_seconds=12.0
    )
    event = events.emit("switch", settings=settings, result="ok")
    clock = Clock(events.time.time())
    worker = deliverer(settings, clock)
    start = clock.now
    assert worker.deliver_pass() == pytest.approx(start + 5.0, abs=0.5)
    assert len(server.requests) == 1
    state = json.loads(next(Path(settings["spool_directory"]).glob("*.state")).read_text())
    assert state[refused]["attempts"] == 1 and "ConnectionRefusedError" in state[refused]["error"]
    assert state[server.url]["error"] == "HTTP 500 Internal Server Error"
    # Not due yet: nothing is posted.
    clock.now = start + 4.0
    worker.deliver_pass()
    assert len(server.requests) == 1
    # Second failure: the delay doubles (10 s).
    clock.now = start + 5.0
    assert worker.deliver_pass() == pytest.approx(start + 15.0, abs=0.5)
    assert len(server.requests) == 2
    # Third: 204 for the server; the refused URL's delay is capped at 12 s.
    clock.now = start + 15.0
    assert worker.deliver_pass() == pytest.approx(start + 27.0, abs=0.5)
    assert [b["id"] for b in server.bodies()] == [event["id"]] * 3
    state = json.loads(next(Path(settings["spool_directory"]).glob("*.state")).read_text())
    assert state[server.url]["done"] == "delivered" and "done" not in state[refused]


def test_the_jitter_keeps_each_delay_between_half_and_all_of_it(tmp_path):
    settings = spool_settings(tmp_path, backoff_initial_seconds=4.0, backoff_max_seconds=100.0)
    low = events.Deliverer(settings, jitter=lambda: 0.0)
    high = events.Deliverer(settings, jitter=lambda: 1.0)
    assert [low.backoff(n) for n in (1, 2, 3, 10)] == [2.0, 4.0, 8.0, 50.0]
    assert [high.backoff(n) for n in (1, 2, 3, 10)] == [4.0, 8.0, 16.0, 100.0]


def test_a_restarted_deliverer_resumes_from_the_state_beside_the_event(tmp_path, logged, receiver):
    server = receiver()
    refused = closed_port_url()
    settings = spool_settings(tmp_path, urls=[server.url, refused], backoff_initial_seconds=60.0)
    events.emit("drill", settings=settings, scenario="mta-crash")
    clock = Clock(events.time.time())
    deliverer(settings, clock).deliver_pass()
    assert len(server.requests) == 1
    # A new process: the delivered URL is not posted again, the other waits out its backoff.
    again = deliverer(settings, clock)
    clock.now += 10
    again.deliver_pass()
    assert len(server.requests) == 1
    state = json.loads(next(Path(settings["spool_directory"]).glob("*.state")).read_text())
    assert state[refused]["attempts"] == 1
    clock.now += 60
    again.deliver_pass()
    state = json.loads(next(Path(settings["spool_directory"]).glob("*.state")).read_text())
    assert state[refused]["attempts"] == 2 and len(server.requests) == 1


def test_an_event_older_than_max_age_is_dropped_with_a_syslog_line(tmp_path, logged):
    settings = spool_settings(tmp_path, urls=[closed_port_url()], max_age_seconds=3600.0)
    event = events.emit("health", settings=settings, level="failed")
    lines = []
    worker = deliverer(settings, Clock(events.time.time() + 3601), lines)
    assert worker.deliver_pass() is None
    assert os.listdir(settings["spool_directory"]) == []
    assert len(lines) == 1 and f"dropped event {event['id']} (health): older than max_age_seconds 3600" in lines[0]


def test_a_url_is_given_up_after_max_attempts_and_at_once_on_a_4xx(tmp_path, logged, receiver):
    failing, rejecting = receiver(statuses=[500] * 5), receiver(statuses=[400])
    settings = spool_settings(tmp_path, urls=[failing.url, rejecting.url], max_attempts=2)
    events.emit("switch", settings=settings, result="ok")
    clock, lines = Clock(events.time.time()), []
    worker = deliverer(settings, clock, lines)
    worker.deliver_pass()
    assert len(rejecting.requests) == 1 and any("HTTP 400" in line and rejecting.url in line for line in lines)
    clock.now += 3600
    assert worker.deliver_pass() is None
    assert len(failing.requests) == 2 and len(rejecting.requests) == 1
    assert any("after 2 attempt(s)" in line and failing.url in line for line in lines)
    assert os.listdir(settings["spool_directory"]) == []


def test_the_signature_is_the_hmac_sha256_of_the_body(tmp_path, logged, receiver):
    server = receiver()
    secret = tmp_path / "webhook.key"
    secret.write_text("s3cret\n")
    settings = spool_settings(tmp_path, urls=[server.url], webhook_secret_file=str(secret))
    events.emit("preflight", settings=settings, exit_code=0)
    deliverer(settings, Clock(events.time.time())).deliver_pass()
    [(_, headers, body)] = server.requests
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Mailha-Signature"] == expected


def test_until_empty_returns_once_every_event_is_delivered_and_leaves_when_the_spool_is_taken(
    tmp_path, logged, receiver
):
    server = receiver(statuses=[500])
    settings = spool_settings(tmp_path, urls=[server.url], backoff_initial_seconds=0.01)
    events.emit("switch", settings=settings, result="ok")
    worker = events.Deliverer(settings)
    worker.run_until_empty()
    assert len(server.requests) == 2 and spooled(settings) == []
    events.emit("switch", settings=settings, result="ok")
    with worker.locked(block=True):
        events.Deliverer(settings).run_until_empty()  # another holds the spool: leaves at once
        events.Deliverer(settings).run_once()
    assert len(spooled(settings)) == 1 and len(server.requests) == 2


# -- the receiver -----------------------------------------------------------


@pytest.fixture
def receiving(tmp_path):
    secret = b"lab-secret"
    server = events.ReceiverServer(("127.0.0.1", 0), str(tmp_path / "received"), secret=secret, max_body=1024)
    os.makedirs(tmp_path / "received")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, secret, tmp_path / "received"
    server.shutdown()
    server.server_close()


def send(server, body, headers):
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    with contextlib.closing(connection):
        connection.request("POST", "/events", body=body, headers=headers)
        return connection.getresponse().status


def test_the_receiver_stores_a_signed_event_under_its_id(receiving):
    server, secret, output = receiving
    body = json.dumps({"id": "0b7c6d1e-1f2a-4b3c-9d8e-7f6a5b4c3d2e", "kind": "switch"}).encode()
    assert send(server, body, {events.SIGNATURE_HEADER: events.sign(secret, body)}) == 204
    assert (output / "0b7c6d1e-1f2a-4b3c-9d8e-7f6a5b4c3d2e.json").read_bytes() == body


def test_the_receiver_refuses_a_bad_signature_an_oversize_body_and_a_bad_id(receiving):
    server, secret, output = receiving
    body = json.dumps({"id": "0b7c6d1e", "kind": "switch"}).encode()
    assert send(server, body, {events.SIGNATURE_HEADER: "sha256=" + "0" * 64}) == 401
    assert send(server, body, {}) == 401
    big = json.dumps({"id": "0b7c6d1e", "pad": "x" * 2000}).encode()
    assert send(server, big, {events.SIGNATURE_HEADER: events.sign(secret, big)}) == 413
    bad = json.dumps({"id": "../../etc/passwd"}).encode()
    assert send(server, bad, {events.SIGNATURE_HEADER: events.sign(secret, bad)}) == 400
    assert os.listdir(output) == []


def test_the_deliverer_reaches_the_receiver_end_to_end(tmp_path, logged, receiving):
    server, secret, output = receiving
    key = tmp_path / "key"
    key.write_bytes(secret)
    url = f"http://127.0.0.1:{server.server_address[1]}/events"
    settings = spool_settings(tmp_path, urls=[url], webhook_secret_file=str(key))
    event = events.emit("vrrp_transition", settings=settings, state="BACKUP")
    events.Deliverer(settings).run_once()
    assert json.loads((output / f"{event['id']}.json").read_bytes()) == event


# -- settings and the command -----------------------------------------------


def test_the_settings_parse_and_a_bad_value_is_one_clear_error(tmp_path):
    conf = tmp_path / "events.conf"
    conf.write_text(
        "# the lab\nwebhook_urls=http://10.213.0.30:8088/events, https://hooks.example.net/x\n"
        "spool_directory=/var/spool/mailha/events\nmax_attempts=5\ntimeout=2.5\n"
    )
    settings = events.load_config(str(conf))
    assert settings["webhook_urls"] == ["http://10.213.0.30:8088/events", "https://hooks.example.net/x"]
    assert settings["max_attempts"] == 5 and settings["timeout"] == 2.5
    for line, message in [
        ("webhook_urls=ftp://x", "webhook_urls: not an http:// or https:// URL with a host: 'ftp://x'"),
        ("max_attempts=0", "max_attempts: must be at least 1"),
        ("spool_directory=spool", "spool_directory: must be an absolute directory"),
        ("webhook_url=http://x", "unknown setting"),
    ]:
        conf.write_text(line + "\n")
        with pytest.raises(config.UsageError, match=message) as caught:
            events.load_config(str(conf))
        assert str(caught.value).startswith(f"{conf}:1: ") and "\n" not in str(caught.value)


def test_the_command_says_one_line_for_bad_usage_and_bad_settings(tmp_path, capsys):
    conf = tmp_path / "events.conf"
    conf.write_text("timeout=-1\n")
    assert events.main(["deliver", "--once", "--config", str(conf)]) == events.EXIT_USAGE
    assert capsys.readouterr().err == f"mailha-node events: {conf}:1: timeout: must be positive\n"
    assert events.main(["receive", "--listen", "nowhere", "--output", str(tmp_path)]) == events.EXIT_USAGE
    assert "ADDR:PORT" in capsys.readouterr().err
    assert events.main(["deliver", "--once", "--until-empty"]) == events.EXIT_USAGE
    assert events.main([]) == events.EXIT_USAGE


# -- the emitters -----------------------------------------------------------


def test_vrrp_notify_emits_the_transition_after_its_hooks(tmp_path, monkeypatch):
    order = []
    monkeypatch.setattr(vrrp.events, "emit", lambda kind, **fields: order.append((kind, fields)))
    monkeypatch.setattr(vrrp.syslog, "syslog", lambda *args: None)
    settings = dict(vrrp.DEFAULTS, log=str(tmp_path / "log"), hook=["/usr/bin/hook"])

    def run(argv, **kwargs):
        order.append(("hook", argv))
        return vrrp.subprocess.CompletedProcess(argv, 0, "", "")

    assert vrrp.notify(["INSTANCE", "VI_MAIL", "backup", "100"], settings=settings, run=run) == 0
    assert order == [
        ("hook", ["/usr/bin/hook", "backup"]),
        ("vrrp_transition", {"state": "BACKUP", "instance": "VI_MAIL", "priority": "100"}),
    ]


def agent_settings(**overrides):
    from mailha.node import health

    values = dict(health.DEFAULTS, watch_fall=2, watch_rise=2, degraded_latency_seconds=None)
    values.update(degraded_queue_messages=None, **overrides)
    return values


def findings(healthy, reason="healthy"):
    return {"exit_code": 0 if healthy else 1, "reason": reason, "smtp": {"ok": healthy, "seconds": 0.01}}


def test_the_watcher_emits_a_health_event_at_each_level_change(monkeypatch):
    emitted = []
    watcher = agent.Watcher(agent_settings(), emit=lambda kind, **fields: emitted.append((kind, fields)))
    for healthy in (True, False, False, False, True, True):
        watcher.observe(findings(healthy, "no 220 greeting" if not healthy else "healthy"))
    assert emitted == [
        ("health", {"level": "failed", "previous": "ok", "reason": "no 220 greeting"}),
        ("health", {"level": "ok", "previous": "failed", "reason": "healthy"}),
    ]


def test_the_split_brain_guard_emits_its_demotion_and_its_clearing(tmp_path):
    emitted = []
    peer = {"holds_floating_ip": True, "healthy": True, "vrrp_priority": 150, "address": "10.213.0.12"}
    settings = agent_settings(
        peer_agent_url="http://10.213.0.12:8025/status", node_address="10.213.0.11", vrrp_priority=100
    )
    guard = agent.SplitBrainGuard(
        settings,
        fetch=lambda url, timeout: peer,
        holds_ip=lambda: True,
        emit=lambda kind, **fields: emitted.append((kind, fields)),
    )
    guard.poll()
    peer = dict(peer, holds_floating_ip=False)
    guard.poll()
    assert [(k, f["action"], f["demoted"], f["peer"]) for k, f in emitted] == [
        ("split_brain", "demoted", True, "10.213.0.12"),
        ("split_brain", "cleared", False, "10.213.0.12"),
    ]


def test_the_cli_events_carry_the_audit_record_and_the_drill_figures():
    record = Record(command="failback", reason="back home", environment="lab", operator="ops@ctl")
    record.result, record.seconds = "ok", 12.5
    record.details = {"target": "mx1", "source": "mx2", "mode": "planned"}
    kind, fields = control_events.switch_event(record)
    assert kind == "failback"
    assert fields == {
        "command": "failback",
        "source": "mx2",
        "target": "mx1",
        "mode": "planned",
        "result": "ok",
        "seconds": 12.5,
        "who": "ops@ctl",
        "reason": "back home",
    }
    record = Record(command="drill", reason="mta-crash", environment="lab", operator="ops@ctl")
    record.result, record.details = "slo-breached", {"scenario": "mta-crash"}
    report = {"verdict": {"passed": False}, "figures": {"outage_seconds": 3.2, "lost": ["<a@b>"], "duplicated": 0}}
    fields = control_events.drill_event(record, report)
    assert (fields["scenario"], fields["passed"], fields["outage"], fields["lost"], fields["duplicated"]) == (
        "mta-crash",
        False,
        3.2,
        1,
        0,
    )


def test_publish_spools_in_the_state_dir_and_starts_the_deliverer_without_waiting(tmp_path, monkeypatch, logged):
    pair = types.SimpleNamespace(
        environment="lab",
        state_dir=tmp_path / "state",
        secrets_dir=tmp_path / "secrets",
        settings={"mailha_events_webhook_urls": ["http://10.213.0.30:8088/events"]},
    )

    started = []
    monkeypatch.setattr(control_events, "start_deliverer", started.append)
    event = control_events.publish(pair, "preflight", exit_code=1, warn=2)
    assert event["environment"] == "lab" and event["warn"] == 2
    assert started == [tmp_path / "state" / "events.conf"]
    conf = events.load_config(str(started[0]))
    assert conf["webhook_urls"] == ["http://10.213.0.30:8088/events"]
    assert conf["spool_directory"] == str(tmp_path / "state" / "events")
    assert len(list((tmp_path / "state" / "events").glob("*.json"))) == 1
    # Without URLs: the syslog line only, nothing started.
    pair.settings = {}
    assert control_events.publish(pair, "preflight", exit_code=0) is not None
    assert len(started) == 1


def test_the_detached_deliverer_brings_the_cli_event_to_the_receiver(tmp_path, receiver, logged):
    server = receiver(statuses=[503])
    pair = types.SimpleNamespace(
        environment="lab",
        state_dir=tmp_path / "state",
        secrets_dir=tmp_path / "secrets",
        settings={"mailha_events_webhook_urls": [server.url]},
    )
    event = control_events.publish(pair, "switch", result="ok")
    # publish returned before any delivery; the deliverer, a process of its
    # own, retries the 503 after its backoff and empties the spool.
    deadline = events.time.monotonic() + 30
    while (len(server.requests) < 2 or list((tmp_path / "state" / "events").glob("*.json"))) and (
        events.time.monotonic() < deadline
    ):
        events.time.sleep(0.1)
    assert [b["id"] for b in server.bodies()] == [event["id"], event["id"]]
    assert not list((tmp_path / "state" / "events").glob("*.json"))


def test_the_pair_settings_refuse_a_bad_webhook_url_or_secret_file(tmp_path):
    from mailha import pair as pair_mod
    from mailha.errors import BadInput

    settings_file = tmp_path / "group_vars" / "all" / "mailha.yml"
    settings_file.parent.mkdir(parents=True)
    settings_file.write_text("mailha_events_webhook_urls: [http://10.213.0.30:8088/events]\n")
    assert pair_mod.load_settings(tmp_path / "hosts.yml")["mailha_events_webhook_urls"] == [
        "http://10.213.0.30:8088/events"
    ]
    for text, message in [
        ("mailha_events_webhook_urls: [gopher://x]", "mailha_events_webhook_urls is"),
        ("mailha_events_webhook_secret_file: ../../etc/shadow", "a file in the secrets directory"),
    ]:
        settings_file.write_text(text + "\n")
        with pytest.raises(BadInput, match=message):
            pair_mod.load_settings(tmp_path / "hosts.yml")
