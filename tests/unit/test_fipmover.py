"""The floating IP mover (mailha.node.fipmover) against the local fake of the
Hetzner Cloud API (mailha.hcloud_fake), through the real hcloud SDK: what it
asks the API, what it logs, when it retries and when it stops. Bounds are a
few seconds at most so the tests stay short; no test claims a duration."""

import argparse
import fcntl
import os
import secrets
import stat
import time

import pytest

pytest.importorskip("hcloud")

from mailha.hcloud_fake import FakeHcloud
from mailha.node import fipmover

TOKEN = "hc-" + secrets.token_hex(24)
FIP, THIS_SERVER, PEER = 7, 2, 1


@pytest.fixture
def fake():
    with FakeHcloud(
        TOKEN,
        floating_ips=[{"id": FIP, "ip": "203.0.113.10", "server": PEER}],
        servers=[{"id": PEER, "name": "mx1"}, {"id": THIS_SERVER, "name": "mx2"}],
        readonly_token="ro-" + TOKEN,
        assign_latency=0.05,
    ) as fake:
        yield fake


class Node:
    """One relay's mover settings, token file and run, in tmp_path."""

    def __init__(self, tmp_path, fake):
        self.dir, self.fake = tmp_path, fake
        self.token_file = tmp_path / "hcloud-token"
        self.write_token(TOKEN)
        self.settings = {
            "floating_ip_id": FIP,
            "server_id": THIS_SERVER,
            "address": "203.0.113.10/32",
            "api_endpoint": fake.endpoint,
            "token_file": self.token_file,
            "total_seconds": 3,
            "request_timeout": 0.5,
            "backoff_initial_seconds": 0.05,
            "backoff_max_seconds": 0.3,
            "poll_interval": 0.02,
            "lock_file": tmp_path / "run" / "fip-mover.lock",
        }
        self.config = tmp_path / "fip-mover.conf"
        self.lines, self.sleeps = [], []
        self.holds = lambda: True

    def write_token(self, token, mode=0o600):
        self.token_file.write_text(token + "\n")
        os.chmod(self.token_file, mode)

    def write_config(self, **overrides):
        settings = self.settings | overrides
        self.config.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        os.chmod(self.config, 0o644)

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        time.sleep(seconds)

    def run(self, command="fip-assign", state=None, owner_uid=None, log=None, settle=False, **overrides):
        self.write_config(**overrides)
        options = argparse.Namespace(config=str(self.config), state=state, settle=settle)
        return fipmover.execute(
            command,
            options,
            owner_uid=os.getuid() if owner_uid is None else owner_uid,
            holds=self.holds,
            log=log or (lambda text, priority=None: self.lines.append(text)),
            sleep=self.sleep,
        )

    def call_lines(self):
        return [line for line in self.lines if line.startswith(("GET ", "POST "))]


@pytest.fixture
def node(tmp_path, fake):
    return Node(tmp_path, fake)


def test_assigns_the_floating_ip_to_this_server_and_checks_the_answer(node, fake):
    assert node.run() == fipmover.EXIT_OK
    assert fake.server_of(FIP) == THIS_SERVER
    endpoints = [r.endpoint for r in fake.calls()]
    assert endpoints[:2] == ["get_floating_ip", "assign"]
    assert set(endpoints[2:-1]) == {"get_action"} and endpoints[-1] == "get_floating_ip"
    assert fake.calls("assign")[0].body == {"server": THIS_SERVER}
    # One line per call, each with its outcome, then one line for the run.
    assert len(node.call_lines()) == len(fake.calls())
    assert node.call_lines()[0].startswith(f"GET floating_ips/{FIP}: on server {PEER}, not this one")
    assert "action" in node.call_lines()[1] and "running" in node.call_lines()[1]
    assert node.lines[-1].startswith(f"floating IP {FIP} (203.0.113.10) is on this server {THIS_SERVER}")
    assert stat.S_IMODE(node.settings["lock_file"].stat().st_mode) == 0o600


def test_already_assigned_makes_no_assign_call(node, fake):
    # fip-assign (a notify) also asks whether an action still runs on it.
    assert node.run(server_id=PEER) == fipmover.EXIT_OK
    assert [r.endpoint for r in fake.calls()] == ["get_floating_ip", "list_floating_ip_actions"]
    assert fake.calls("assign") == []
    assert [line.split(" [")[0] for line in node.call_lines()] == [
        f"GET floating_ips/{FIP}: on this server",
        f"GET floating_ips/{FIP}/actions?status=running: none running",
    ]
    # The timer's routine check reads the floating IP and nothing else.
    fake.requests.clear()
    assert node.run("fip-check", server_id=PEER) == fipmover.EXIT_OK
    assert [r.endpoint for r in fake.calls()] == ["get_floating_ip"]


def _peer_assign_running(fake, latency):
    """The peer's assign, asked before a split brain demoted it: still running."""
    fake.assign_latency = latency
    status, document, _ = fake.handle(
        "POST", f"/v1/floating_ips/{FIP}/actions/assign", {"Authorization": f"Bearer {TOKEN}"}, {"server": PEER}
    )
    assert status == 201 and document["action"]["status"] == "running"
    fake.assign_latency = 0.05
    return document["action"]["id"]


def test_a_settled_check_waits_for_the_peers_running_assign_and_takes_the_floating_ip_back(node, fake):
    node.run()
    assert fake.server_of(FIP) == THIS_SERVER
    fake.requests.clear()
    peer_action = _peer_assign_running(fake, 0.5)
    fake.requests.clear()
    assert node.run("fip-check", settle=True) == fipmover.EXIT_OK
    assert fake.server_of(FIP) == THIS_SERVER
    endpoints = [r.endpoint for r in fake.calls()]
    assert endpoints[:2] == ["get_floating_ip", "list_floating_ip_actions"]
    assert fake.calls("list_floating_ip_actions")[0].status == 200
    # It polled the peer's action, read the floating IP (now on the peer) and
    # assigned it back.
    assert any(r.endpoint == "get_action" and r.path.endswith(f"/{peer_action}") for r in fake.calls())
    assert [r.body for r in fake.calls("assign")] == [{"server": THIS_SERVER}]
    lines = [line.split(" [")[0] for line in node.call_lines()]
    assert f"GET floating_ips/{FIP}/actions?status=running: running: action {peer_action}" in lines
    assert f"GET floating_ips/{FIP}: on server {PEER}, not this one ({THIS_SERVER})" in lines


def test_the_timers_check_trusts_the_reading_and_misses_a_running_assign(node, fake):
    # What --settle is for: the plain check reads "on this server" while the
    # peer's assign runs, and the floating IP goes to the peer when it ends.
    node.run()
    _peer_assign_running(fake, 0.3)
    fake.requests.clear()
    assert node.run("fip-check") == fipmover.EXIT_OK
    assert [r.endpoint for r in fake.calls()] == ["get_floating_ip"]
    deadline = time.monotonic() + 5
    while fake.server_of(FIP) != PEER and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.server_of(FIP) == PEER


def test_settle_is_an_option_of_fip_check_only():
    assert fipmover._parser("fip-check").parse_args(["--settle"]).settle is True
    assert fipmover._parser("fip-check").parse_args([]).settle is False
    with pytest.raises(SystemExit):
        fipmover._parser("fip-assign").parse_args(["--settle"])


def test_a_host_without_the_address_leaves_the_floating_ip_alone(node, fake):
    node.holds = lambda: False
    assert node.run("fip-check") == fipmover.EXIT_OK
    assert fake.calls() == []
    assert fake.server_of(FIP) == PEER
    assert "does not hold 203.0.113.10" in node.lines[-1]


@pytest.mark.parametrize("state", ["backup", "fault", "stop"])
def test_a_vrrp_hook_on_any_state_but_master_does_nothing(node, fake, state):
    assert node.run(state=state) == fipmover.EXIT_OK
    assert fake.calls() == [] and node.lines == []
    assert node.run(state="master") == fipmover.EXIT_OK
    assert fake.server_of(FIP) == THIS_SERVER


def test_locked_twice_then_success(node, fake):
    fake.fail("assign", "locked", times=2)
    assert node.run() == fipmover.EXIT_OK
    assert [r.status for r in fake.calls("assign")] == [423, 423, 201]
    assert fake.server_of(FIP) == THIS_SERVER
    locked = [line for line in node.call_lines() if "locked (HTTP 423)" in line]
    assert len(locked) == 2 and all(line.startswith("POST ") for line in locked)
    assert sum(line.startswith("retrying in") for line in node.lines) == 2
    # Exponential: the second wait's range starts where the first one's ends.
    assert node.sleeps and max(node.sleeps) <= node.settings["backoff_max_seconds"]


def test_a_running_action_of_someone_else_is_locked_until_it_ends(node, fake):
    # The peer's assign is still running when this relay asks: the API answers
    # locked (the fake, like the API, locks a floating IP while its action runs).
    fake.assign_latency = 0.4
    status, document, _ = fake.handle(
        "POST", f"/v1/floating_ips/{FIP}/actions/assign", {"Authorization": f"Bearer {TOKEN}"}, {"server": PEER}
    )
    assert status == 201 and document["action"]["status"] == "running"
    fake.assign_latency = 0.05
    assert node.run() == fipmover.EXIT_OK
    assert 423 in [r.status for r in fake.calls("assign")]
    assert fake.server_of(FIP) == THIS_SERVER


def test_a_rate_limit_waits_for_its_reset(node, fake):
    fake.rate_limit("assign", times=1, reset_in=2)
    assert node.run(backoff_max_seconds=3, total_seconds=8) == fipmover.EXIT_OK
    limited, retried = fake.calls("assign")
    assert (limited.status, retried.status) == (429, 201)
    # The retry comes no earlier than the Reset the 429 named (whole seconds,
    # about 2 s on), far beyond the first backoff (0.05 s at most).
    reset = int(limited.headers["RateLimit-Reset"])
    assert limited.headers["RateLimit-Remaining"] == "0"
    assert retried.time >= reset - 0.01
    assert max(node.sleeps) > 0.5
    assert any("rate_limit_exceeded (HTTP 429)" in line for line in node.lines)


def test_a_rate_limit_reset_far_away_is_waited_for_at_most_the_longest_backoff(node, fake):
    fake.rate_limit("assign", times=1, reset_in=3600)
    assert node.run() == fipmover.EXIT_OK
    waits = [s for s in node.sleeps if s > node.settings["poll_interval"]]
    assert waits == [node.settings["backoff_max_seconds"]]
    assert fake.server_of(FIP) == THIS_SERVER


def test_the_sdk_does_not_retry_behind_the_movers_back(node, fake):
    # hcloud 2.x retries conflict, timeout and rate limits itself, sleeping
    # up to 60 s; the mover's session answers them first: one request each.
    fake.fail("assign", "conflict", times=1)
    fake.fail("get_floating_ip", "timeout", times=1)
    assert node.run() == fipmover.EXIT_OK
    assert [r.status for r in fake.calls("assign")] == [409, 201]
    assert [r.status for r in fake.calls("get_floating_ip")][:2] == [504, 200]
    assert sum(line.startswith("retrying in") for line in node.lines) == 2


def test_no_answer_gives_up_within_the_bound_with_one_clear_line(node, fake):
    fake.delay("get_floating_ip", 30, times=100)
    assert node.run(total_seconds=1.5, request_timeout=0.4) == fipmover.EXIT_GAVE_UP
    gets = fake.calls("get_floating_ip")
    assert len(gets) >= 2 and fake.calls("assign") == []
    # Each call waits request_timeout, the last one only what is left of the bound.
    assert "no answer within 0.4 s" in node.call_lines()[0]
    assert all(": no answer within " in line for line in node.call_lines())
    assert node.lines[-1].startswith("gave up after")
    assert f"floating IP {FIP} is not on this server {THIS_SERVER}" in node.lines[-1]
    assert "last error: no answer within" in node.lines[-1]
    assert sum(line.startswith("gave up") for line in node.lines) == 1


def test_an_action_still_running_at_the_bound_is_named(node, fake):
    fake.assign_latency = 30
    assert node.run(total_seconds=1) == fipmover.EXIT_GAVE_UP
    assert len(fake.calls("assign")) == 1
    assert "still running" in node.lines[-1]


@pytest.mark.parametrize(
    ("fault", "code", "fix"),
    [
        ("bad token", "unauthorized", "wrong or revoked"),
        ("read-only token", "token_readonly", "is read-only"),
        ("forbidden", "forbidden", "read/write token of the project"),
        ("unknown floating IP", "not_found", "check floating_ip_id and server_id"),
    ],
)
def test_refusals_are_not_retried_and_say_what_to_fix(node, fake, fault, code, fix):
    overrides = {}
    if fault == "bad token":
        node.write_token("hc-not-the-token")
    elif fault == "read-only token":
        node.write_token("ro-" + TOKEN)
    elif fault == "forbidden":
        fake.fail("assign", "forbidden", times=5)
    else:
        overrides["floating_ip_id"] = 99
    assert node.run(**overrides) == fipmover.EXIT_REFUSED
    errors = [r for r in fake.calls() if r.status >= 400]
    assert [r.error for r in errors] == [code]
    assert not any(line.startswith("retrying") for line in node.lines)
    assert node.lines[-1].startswith(f"refused, not retried: {code}")
    assert fix in node.lines[-1]
    assert fake.server_of(FIP) == PEER


def test_a_failed_action_is_retried_and_its_error_logged(node, fake):
    fake.fail_actions("action_failed", "the server is being migrated", times=1)
    assert node.run() == fipmover.EXIT_OK
    assert len(fake.calls("assign")) == 2
    assert any("ended in error (action_failed: the server is being migrated)" in line for line in node.lines)
    assert fake.server_of(FIP) == THIS_SERVER


def test_actions_that_keep_failing_give_up(node, fake):
    fake.fail_actions(times=1000)
    assert node.run(total_seconds=1) == fipmover.EXIT_GAVE_UP
    assert "last error: action" in node.lines[-1] and "ended in error (action_failed" in node.lines[-1]
    assert fake.server_of(FIP) == PEER


def test_maintenance_is_retried(node, fake):
    fake.fail("get_floating_ip", "maintenance", times=2)
    assert node.run() == fipmover.EXIT_OK
    assert [r.status for r in fake.calls("get_floating_ip")][:3] == [503, 503, 200]


def test_a_relay_that_stops_holding_the_address_stops_retrying(node, fake):
    answers = iter([True, False])
    node.holds = lambda: next(answers)
    fake.fail("assign", "locked", times=5)
    assert node.run() == fipmover.EXIT_OK
    assert len(fake.calls("assign")) == 1
    assert "does not hold" in node.lines[-1]
    assert fake.server_of(FIP) == PEER


def test_the_token_never_appears_in_the_log(node, fake, monkeypatch):
    logged = []
    monkeypatch.setattr(fipmover.syslog, "openlog", lambda *args: None)
    monkeypatch.setattr(fipmover.syslog, "syslog", lambda priority, text: logged.append(text))
    # An answer that echoes the token: the line carries a placeholder instead.
    fake.fail("assign", "locked", times=1, message=f"locked for Bearer {TOKEN}")
    log = fipmover.Log("mailha-fip-assign")
    assert node.run(log=log) == fipmover.EXIT_OK
    assert len(logged) >= 5
    assert not [line for line in logged if TOKEN in line]
    assert any("locked for Bearer [token]" in line for line in logged)


def test_the_token_is_sent_only_as_the_bearer_header(node, fake):
    assert node.run() == fipmover.EXIT_OK
    for request in fake.calls():
        assert TOKEN not in request.path and TOKEN not in repr(request.body)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_token_file_others_can_read_is_refused(node, fake, mode):
    node.write_token(TOKEN, mode=mode)
    assert node.run() == fipmover.EXIT_USAGE
    assert fake.calls() == []
    assert len(node.lines) == 1
    assert f"refusing token file {node.token_file}: mode {mode:04o}" in node.lines[0]
    assert "chmod 0600" in node.lines[0]


def test_a_token_file_of_another_owner_is_refused(node, fake):
    assert node.run(owner_uid=os.getuid() + 1) in (fipmover.EXIT_USAGE,)
    assert fake.calls() == []
    # The settings file is checked first, with the same owner.
    assert "owned by uid" in node.lines[0] and len(node.lines) == 1


def test_a_token_file_with_the_right_owner_and_mode_is_read(node, tmp_path):
    assert fipmover.read_token(str(node.token_file), os.getuid()) == TOKEN
    with pytest.raises(fipmover.config.UsageError, match="owned by uid"):
        fipmover.read_token(str(node.token_file), os.getuid() + 1)
    link = tmp_path / "link"
    link.symlink_to(node.token_file)
    with pytest.raises(fipmover.config.UsageError, match="cannot read token file"):
        fipmover.read_token(str(link), os.getuid())
    node.write_token("")
    with pytest.raises(fipmover.config.UsageError, match="holds no token"):
        fipmover.read_token(str(node.token_file), os.getuid())


def test_a_settings_file_others_can_change_is_refused(node, fake):
    node.write_config()
    os.chmod(node.config, 0o664)
    options = argparse.Namespace(config=str(node.config), state=None)
    code = fipmover.execute(
        "fip-check",
        options,
        owner_uid=os.getuid(),
        holds=node.holds,
        log=lambda text, priority=None: node.lines.append(text),
    )
    assert code == fipmover.EXIT_USAGE
    assert "refusing settings file" in node.lines[0] and "mode 0664" in node.lines[0]
    assert fake.calls() == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("api_endpoint=http://api.example.invalid/v1", "http:// to loopback only"),
        ("floating_ip_id=0", "must be at least 1"),
        ("address=not-an-ip", "address"),
        ("speed=fast", "unknown setting"),
    ],
)
def test_bad_settings_are_one_line(tmp_path, line, message):
    path = tmp_path / "fip-mover.conf"
    path.write_text(f"floating_ip_id=1\nserver_id=2\naddress=203.0.113.10\n{line}\n")
    with pytest.raises(fipmover.config.UsageError, match=message):
        fipmover.load_config(str(path), os.getuid())


def test_missing_settings_are_named(tmp_path):
    path = tmp_path / "fip-mover.conf"
    path.write_text("server_id=2\n")
    with pytest.raises(fipmover.config.UsageError, match="floating_ip_id, address not set"):
        fipmover.load_config(str(path))


def test_a_missing_sdk_is_one_line(node, fake):
    def no_sdk(*args):
        raise ImportError("No module named 'hcloud'")

    node.write_config()
    options = argparse.Namespace(config=str(node.config), state=None)
    code = fipmover.execute(
        "fip-assign",
        options,
        owner_uid=os.getuid(),
        sdk_factory=no_sdk,
        holds=node.holds,
        log=lambda text, priority=None: node.lines.append(text),
    )
    assert code == fipmover.EXIT_USAGE
    assert node.lines == [
        f"cannot move floating IP {FIP}: the hcloud SDK is missing (No module named 'hcloud'); install python3-hcloud"
    ]


def test_a_run_waits_for_the_lock_within_the_bound(node, fake):
    lock = node.settings["lock_file"]
    lock.parent.mkdir()
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert node.run(total_seconds=0.5) == fipmover.EXIT_GAVE_UP
    assert fake.calls() == []
    assert node.lines == [f"gave up: another run held {lock} for 0.5 s"]
    assert node.run() == fipmover.EXIT_OK


def test_a_check_that_finds_everything_in_place_logs_at_debug_priority(node, fake):
    logged = []

    def log(text, priority=fipmover.syslog.LOG_INFO):
        logged.append((priority, text))

    assert node.run("fip-check", server_id=PEER, log=log) == fipmover.EXIT_OK
    assert [p for p, _ in logged] == [fipmover.syslog.LOG_DEBUG] * 2
    assert logged[-1][1].endswith("[1 call, " + logged[-1][1].split(", ")[-1])
    logged.clear()
    # The same check that has to move the floating IP logs at info.
    assert node.run("fip-check", log=log) == fipmover.EXIT_OK
    assert fipmover.syslog.LOG_DEBUG not in [p for p, _ in logged]
    assert fake.server_of(FIP) == THIS_SERVER
