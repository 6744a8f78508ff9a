"""mailha.node: stdlib only, one reproducible zipapp, and the pure logic of
the commands that replaced shell scripts (route choice, route file, VRRP log
line, notify hooks, release), with fakes for every command they run."""

import ast
import contextlib
import datetime
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mailha.node import __main__ as node_main
from mailha.node import build, config, facts, files, postfix_role, queue, vrrp

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "mailha" / "node"


# -- stdlib only ----------------------------------------------------------


def _imports(path, module_level_only=False):
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if module_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


# The hcloud mover talks to the Hetzner API through its SDK (python3-hcloud),
# imported inside the function that starts a run: every other command, and
# the mover's settings check, load without it.
LAZY_IMPORTS = {"fipmover.py": {"hcloud", "requests"}}


def _outside_stdlib(names):
    return {
        name
        for name in names
        if name.split(".")[0] not in sys.stdlib_module_names and not name.startswith("mailha.node") and name != "mailha"
    }


@pytest.mark.parametrize("path", sorted(NODE.glob("*.py")), ids=lambda p: p.name)
def test_every_module_imports_only_the_standard_library_and_itself(path):
    outside = _outside_stdlib(_imports(path, module_level_only=True))
    assert not outside, f"{path.name} imports {sorted(outside)} at module level"
    allowed = LAZY_IMPORTS.get(path.name, set())
    lazy = {name for name in _outside_stdlib(_imports(path)) if name.split(".")[0] not in allowed}
    assert not lazy, f"{path.name} imports {sorted(lazy)}"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return Path(build.build(tmp_path_factory.mktemp("artifact") / "mailha-node.pyz"))


def test_every_module_imports_from_the_zipapp_without_site_packages(artifact):
    modules = sorted("mailha.node." + p.stem for p in NODE.glob("*.py") if p.stem != "__main__")
    code = (
        f"import sys; sys.path.insert(0, {str(artifact)!r}); "
        f"import {', '.join(modules)}; "
        "import mailha.node.agent as a; print(a.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], env={}, capture_output=True, text=True, check=False, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(artifact))


def test_the_zipapp_runs_a_command(artifact, tmp_path):
    result = subprocess.run(
        [sys.executable, "-I", str(artifact), "check-config", "vrrp", "/nonexistent"],
        env={},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "cannot read /nonexistent" in result.stderr
    unknown = subprocess.run([sys.executable, str(artifact), "nope"], env={}, capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr


def test_the_build_is_reproducible_and_holds_the_package(artifact, tmp_path):
    again = Path(build.build(tmp_path / "again.pyz"))
    assert again.read_bytes() == artifact.read_bytes()
    assert artifact.read_bytes().startswith(b"#!/usr/bin/python3\n")
    assert artifact.stat().st_mode & 0o777 == 0o755
    names = zipfile.ZipFile(artifact).namelist()
    assert "__main__.py" in names and "mailha/__init__.py" in names and "mailha/node/agent.py" in names
    # Nothing of the controller side.
    assert [n for n in names if not n.startswith("mailha/node/")] == ["__main__.py", "mailha/__init__.py"]


def test_every_command_has_its_module(artifact):
    for command, (module, function, _) in node_main.COMMANDS.items():
        imported = __import__("mailha.node." + module, fromlist=[function])
        assert callable(getattr(imported, function)), command


# -- config and files -----------------------------------------------------


def test_config_lists_repeat_and_unknown_keys_fail():
    defaults = {"log": "/x", "hook": ["default"], "n": 1}
    lines = ["# comment", "", "hook=/a b", "hook=/c 'd e'", "n=5"]
    settings = config.parse(lines, defaults, {"n": int}, lists=("hook",))
    assert settings == {"log": "/x", "hook": ["/a b", "/c 'd e'"], "n": 5}
    assert defaults["hook"] == ["default"]
    with pytest.raises(config.UsageError, match=r"<config>:1: unknown setting"):
        config.parse(["nope=1"], defaults)
    with pytest.raises(config.UsageError, match=r":1: n: "):
        config.parse(["n=x"], defaults, {"n": int})


def test_replace_file_writes_whole_files_with_mode_and_date(tmp_path):
    target = tmp_path / "sub" / "file"
    files.replace_file(str(target), "one\n", mode=0o640, mtime=1_000_000)
    assert target.read_text() == "one\n" and target.stat().st_mode & 0o777 == 0o640
    assert target.stat().st_mtime == 1_000_000
    files.replace_file(str(target), b"\x00two")
    assert target.read_bytes() == b"\x00two"
    assert [p.name for p in target.parent.iterdir()] == ["file"]


# -- the VRRP transition log ----------------------------------------------


def test_a_transition_line_is_written_and_read_back(tmp_path):
    when = datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)
    line = vrrp.format_transition("VI_MAIL", "MASTER", "150", when)
    assert line == "2024-05-01T12:00:00.123Z VI_MAIL MASTER 150\n"
    parsed = vrrp.parse_transition(line)
    assert parsed == vrrp.Transition("2024-05-01T12:00:00.123Z", "VI_MAIL", "MASTER", "150")
    assert parsed.timestamp() == pytest.approx(when.timestamp(), abs=0.001)
    assert vrrp.parse_transition("garbage") is None
    assert vrrp.parse_transition("not-a-time VI backup").timestamp() is None
    assert vrrp.parse_transition("not-a-time VI backup").state == "BACKUP"

    log = tmp_path / "vrrp.log"
    assert vrrp.state(str(log)) == ("UNKNOWN", None)
    vrrp.log_transition(str(log), "VI_MAIL", "BACKUP", "100", when)
    vrrp.log_transition(str(log), "VI_MAIL", "FAULT", "100", when)
    with log.open("a") as handle:
        handle.write("\n")
    assert vrrp.state(str(log)) == ("FAULT", "2024-05-01T12:00:00.123Z")
    assert [t.state for t in vrrp.parse_transitions(log.read_text())] == ["BACKUP", "FAULT"]


class FakeRun:
    """subprocess.run's stand-in: records argv, answers from `answers`."""

    def __init__(self, answers=None):
        self.calls = []
        self.answers = answers or {}

    def __call__(self, argv, **kwargs):
        self.calls.append(list(argv))
        for prefix, answer in self.answers.items():
            if tuple(argv[: len(prefix)]) == prefix:
                if isinstance(answer, Exception):
                    raise answer
                return subprocess.CompletedProcess(argv, answer[0], answer[1], answer[2])
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_notify_logs_then_runs_every_hook_even_after_a_failing_one(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(vrrp.syslog, "syslog", lambda *args: logged.append(args[-1]))
    run = FakeRun({("/bin/false",): (1, "", "boom\n"), ("/missing",): FileNotFoundError("no such file")})
    settings = dict(vrrp.DEFAULTS, log=str(tmp_path / "log"), hook=["/bin/false", "/missing", "/usr/bin/hook -x"])
    assert vrrp.notify(["INSTANCE", "VI_MAIL", "MASTER", "150"], settings=settings, run=run) == 0
    assert [c[-1] for c in run.calls] == ["master"] * 3 and run.calls[2] == ["/usr/bin/hook", "-x", "master"]
    assert vrrp.parse_transition((tmp_path / "log").read_text()).state == "MASTER"
    assert any("exited 1: boom" in line for line in logged) and any("/missing" in line for line in logged)
    assert vrrp.notify(["INSTANCE", "VI_MAIL"], settings=settings, run=run) == 2


def test_release_removes_only_addresses_still_on_the_interface_and_notifies_stop(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(vrrp.syslog, "syslog", lambda *args: logged.append(args[-1]))
    shown = "2: eth0    inet 10.213.0.100/32 scope global eth0\\       valid_lft forever\n"
    run = FakeRun({("ip", "-o", "addr", "show"): (0, shown, "")})
    settings = dict(
        vrrp.DEFAULTS,
        log=str(tmp_path / "log"),
        interface="eth0",
        address=["10.213.0.100/32", "10.213.0.101/32"],
        instance="VI_MAIL",
        hook=["/usr/local/sbin/mailha-postfix-role"],
    )
    assert vrrp.release([], settings=settings, run=run, environ={"SERVICE_RESULT": "signal"}) == 0
    assert ["ip", "addr", "del", "10.213.0.100/32", "dev", "eth0"] in run.calls
    assert ["ip", "addr", "del", "10.213.0.101/32", "dev", "eth0"] not in run.calls
    assert run.calls[-1] == ["/usr/local/sbin/mailha-postfix-role", "stop"]
    assert "keepalived ended (signal); released 10.213.0.100/32" in logged
    assert vrrp.last_transition(str(tmp_path / "log")).state == "STOP"

    # Nothing left behind (a clean stop): nothing removed, nothing notified.
    quiet = FakeRun({("ip", "-o", "addr", "show"): (0, "2: eth0    inet 10.213.0.11/24 scope global\n", "")})
    assert vrrp.release([], settings=settings, run=quiet, environ={}) == 0
    assert all(call[:3] != ["ip", "addr", "del"] for call in quiet.calls) and len(quiet.calls) == 2


# -- mailha-postfix-role --------------------------------------------------


@pytest.mark.parametrize(
    ("named", "holds", "state", "noted"),
    [
        ("master", True, "master", False),
        ("master", False, "backup", True),
        ("backup", False, "backup", False),
        ("backup", True, "master", True),
        ("fault", False, "backup", False),
        ("stop", True, "master", True),
        ("refresh", True, "master", False),
        ("reconcile", True, "master", False),
        ("reconcile", False, "backup", False),
        ("hold", True, "hold", False),
        ("hold", False, "hold", False),
    ],
)
def test_the_route_follows_the_floating_ip_except_for_a_hold(named, holds, state, noted):
    chosen, note = postfix_role.choose_route(named, holds, "10.0.0.100")
    assert chosen == state and bool(note) == noted
    if noted:
        where = "here" if holds else "not here"
        assert note == f"{named}: the floating IP 10.0.0.100 is {where}, routing as {state}"


def test_route_file_content_reads_back_as_its_route():
    assert postfix_role.transport_content("backup", "10.0.0.100") == "* relay:[10.0.0.100]:25\n"
    assert postfix_role.transport_content("hold", "10.0.0.100") == "* hold:[10.0.0.100]:25\n"
    assert postfix_role.transport_content("master", "10.0.0.100") is None
    for state, route in (("backup", "hand-over"), ("hold", "hold")):
        assert postfix_role.route_of(postfix_role.transport_content(state, "10.0.0.100")) == route
    assert postfix_role.route_of("# only a comment\ngmail.com mx_google:\n") == "direct"
    assert postfix_role.route_of("") == "direct"
    assert postfix_role.count_routes("# groups\n\ngmail.com mx_google:\n yahoo.com x\nlive.com mx_ms:\n") == 2


class FakeNode(postfix_role.Node):
    """The host as the command sees it, with nothing real touched."""

    def __init__(self, settings, holds=False, files=None, running=True, lock=True, fail=()):
        super().__init__(settings)
        self.holds, self.files, self.running, self.lock_ok = holds, dict(files or {}), running, lock
        self.fail = set(fail)
        self.said, self.commands, self.written = [], [], []

    def say(self, text):
        self.said.append(text)

    def lock(self):
        return self.lock_ok

    def read(self, path):
        return self.files.get(path)

    def holds_floating_ip(self):
        return self.holds

    def run(self, argv):
        self.commands.append(" ".join(argv))
        if argv[:2] == ["postfix", "status"]:
            return 0 if self.running else 1
        return 1 if argv[0] in self.fail else 0

    def write(self, path, text, mtime):
        if "write" in self.fail:
            raise OSError("read-only file system")
        self.files[path] = text
        self.written.append((path, text, mtime))

    def now(self):
        return 1000.0


SETTINGS = dict(postfix_role.DEFAULTS, floating_ip="10.0.0.100", flush_delay=30)
TRANSPORT = SETTINGS["transport_file"]
DESTINATIONS = SETTINGS["destinations_file"]
TABLE = "gmail.com mx_google:\nyahoo.com mx_yahoo:\n"
CANCEL = "systemctl stop mailha-postfix-flush.timer mailha-postfix-flush.service"
FLUSH_LATER = "systemd-run --quiet --collect --unit=mailha-postfix-flush --on-active=30 /usr/sbin/postqueue -f"


def test_master_copies_the_table_dated_back_reloads_and_flushes_twice():
    node = FakeNode(SETTINGS, holds=True, files={DESTINATIONS: TABLE})
    assert postfix_role.apply("master", node) == 0
    assert node.written == [(TRANSPORT, TABLE, 995.0)]
    assert node.commands == [CANCEL, "postfix status", "postfix reload", "postqueue -f", FLUSH_LATER]
    assert node.said == [
        "master: master route 'direct delivery, 2 domains by destination group', postfix reloaded and flushed"
    ]


def test_a_standby_hands_over_and_closes_sockets_bound_to_the_floating_ip():
    node = FakeNode(SETTINGS, holds=False)
    assert postfix_role.apply("backup", node) == 0
    assert node.files[TRANSPORT] == "* relay:[10.0.0.100]:25\n"
    assert node.commands[:2] == [CANCEL, "ss -K src 10.0.0.100"]
    assert node.said[-1] == "backup: backup route '* relay:[10.0.0.100]:25', postfix reloaded and flushed"


def test_a_late_master_notification_on_a_node_without_the_address_routes_as_backup():
    node = FakeNode(SETTINGS, holds=False, files={DESTINATIONS: TABLE})
    assert postfix_role.apply("master", node) == 0
    assert node.files[TRANSPORT] == "* relay:[10.0.0.100]:25\n"
    assert node.said[0] == "master: the floating IP 10.0.0.100 is not here, routing as backup"


def test_hold_never_flushes_and_still_cancels_an_earlier_flush():
    node = FakeNode(SETTINGS, holds=False)
    assert postfix_role.apply("hold", node) == 0
    assert node.files[TRANSPORT] == "* hold:[10.0.0.100]:25\n"
    assert node.commands == [CANCEL, "ss -K src 10.0.0.100", "postfix status", "postfix reload"]
    assert node.said[-1] == "hold: hold route '* hold:[10.0.0.100]:25', postfix reloaded"


def test_refresh_leaves_a_standby_route_alone_and_cancels_nothing():
    node = FakeNode(SETTINGS, holds=False, files={TRANSPORT: "* relay:[10.0.0.100]:25\n", DESTINATIONS: TABLE})
    assert postfix_role.apply("refresh", node) == 0
    assert node.commands == [] and node.written == []
    assert node.said == ["refresh: not the active relay, route unchanged"]


def test_master_without_a_table_routes_everything_through_smtp_and_a_stopped_postfix_is_not_reloaded():
    node = FakeNode(SETTINGS, holds=True, running=False)
    assert postfix_role.apply("master", node) == 0
    assert node.files[TRANSPORT] == ""
    assert node.commands == [CANCEL, "postfix status"]
    assert node.said == [
        f"master: {DESTINATIONS} is missing, every domain through smtp",
        "master: master route 'direct delivery', postfix not running, nothing to reload",
    ]


def test_failures_exit_1_and_bad_usage_exits_2(capsys):
    assert postfix_role.apply("backup", FakeNode(SETTINGS, fail={"write"})) == 1
    assert postfix_role.apply("backup", FakeNode(SETTINGS, lock=False)) == 1
    assert postfix_role.apply("backup", FakeNode(SETTINGS, fail={"postfix"})) == 1
    assert postfix_role.main([], node=FakeNode(SETTINGS)) == 2
    assert postfix_role.main(["primary"], node=FakeNode(SETTINGS)) == 2
    assert "usage: mailha-postfix-role master|backup|fault|stop|hold|refresh|reconcile" in capsys.readouterr().err
    # keepalived's states arrive in any case; extra arguments are ignored.
    node = FakeNode(SETTINGS, holds=True, files={DESTINATIONS: TABLE})
    assert postfix_role.main(["MASTER", "extra"], node=node) == 0 and node.files[TRANSPORT] == TABLE


def test_the_settings_need_a_floating_ip(tmp_path):
    conf = tmp_path / "postfix-role.conf"
    conf.write_text("transport_file=/t\n")
    with pytest.raises(config.UsageError, match="floating_ip is not set"):
        postfix_role.load_config(str(conf))
    conf.write_text("floating_ip=10.0.0.100\nflush_delay=30\n")
    assert postfix_role.load_config(str(conf))["flush_delay"] == 30
    conf.write_text("floating_ip=10.0.0.300\n")
    with pytest.raises(config.UsageError, match="floating_ip"):
        postfix_role.load_config(str(conf))


# -- queue counts and facts -----------------------------------------------


def test_pending_leaves_out_the_hold_queue_only(tmp_path):
    for relative, mode in (
        ("maildrop/M1", 0o700),
        ("maildrop/M2", 0o600),
        ("incoming/I1", 0o700),
        ("active/A/A1", 0o600),
        ("deferred/D/D1", 0o600),
        ("hold/H1", 0o600),
    ):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("q")
        path.chmod(mode)
    counts, _ = queue.queue_details(str(tmp_path))
    assert counts == {"maildrop": 1, "incoming": 1, "active": 1, "deferred": 1, "hold": 1}
    assert queue.total(counts) == 5 and queue.pending(counts) == 4
    assert queue.count_queue(str(tmp_path)) == 5


def record(kind: str, data: bytes) -> bytes:
    """One Postfix queue-file record: type, length in 7-bit groups, data."""
    length, encoded = len(data), bytearray()
    while True:
        encoded.append((length & 0x7F) | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            break
    return kind.encode() + bytes(encoded) + data


def queue_file(path, arrived: int, mtime: int) -> None:
    """A queue file as cleanup writes it (the lab's, byte for byte in shape):
    the size record padded to 95 bytes, the arrival time, attributes."""
    size = b"            310             299               1               0             310               0"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        record("C", size)
        + record("T", f"{arrived} 734811".encode())
        + record("A", f"create_time={arrived}".encode())
        + record("A", b"x" * 200)  # a length over 127: two length bytes
    )
    path.chmod(0o700)
    os.utime(path, (mtime, mtime))


def test_the_oldest_age_is_the_arrival_time_not_a_deferred_files_future_mtime(tmp_path):
    now = 1_796_213_510
    # Deferred 5 minutes ago; the queue manager set the mtime to its next retry.
    queue_file(tmp_path / "deferred/B/B4346", arrived=now - 300, mtime=now + 290)
    queue_file(tmp_path / "active/A/A1", arrived=now - 2, mtime=now - 2)
    counts, oldest = queue.queue_details(str(tmp_path), now=now)
    assert counts["deferred"] == 1 and counts["active"] == 1
    assert oldest == 300.0


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"garbage",
        record("C", b"1") + record("T", b"not a time"),
        b"T\xff\xff\xff\xff\xff\xff",
        record("C", b"1") * 5,
    ],
)
def test_a_queue_file_without_a_readable_arrival_time_counts_with_its_mtime(tmp_path, head):
    assert queue.arrival_time(head) is None
    path = tmp_path / "hold" / "H1"
    path.parent.mkdir(parents=True)
    path.write_bytes(head)
    os.utime(path, (1000, 1000))
    assert queue.queue_details(str(tmp_path), now=1060)[1] == 60.0


def test_arrival_time_reads_a_record_whose_length_takes_two_bytes():
    head = record("A", b"y" * 300) + record("T", b"1796213507 1")
    assert queue.arrival_time(head) == 1796213507.0


def test_facts_report_what_the_agent_reports(tmp_path, monkeypatch, capsys):
    log = tmp_path / "vrrp.log"
    log.write_text("2024-05-01T12:00:00.123Z VI_MAIL MASTER 150\n")
    route = tmp_path / "route"
    route.write_text("* hold:[10.0.0.100]:25\n")
    monkeypatch.setattr(facts.addresses, "holds_address", lambda address: address == "10.0.0.100")
    argv = ["--config", str(tmp_path / "none.conf"), "--floating-ip", "10.0.0.100", "--vrrp-log", str(log)]
    argv += ["--queue-directory", str(tmp_path / "spool"), "--route-file", str(route)]
    assert facts.main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["holds_floating_ip"] is True and document["vrrp_state"] == "MASTER"
    assert document["route"] == "hold" and document["queue_pending"] == 0
    assert facts.main([*argv, "--get", "vrrp_state"]) == 0 and capsys.readouterr().out == "MASTER\n"
    assert facts.main([*argv, "--get", "holds_floating_ip"]) == 0 and capsys.readouterr().out == "true\n"
    assert facts.main([*argv, "--get", "nope"]) == 3


def test_the_sink_index_reads_its_maildir_from_its_settings(tmp_path, monkeypatch, capsys):
    from mailha.node import sink_index

    maildir = tmp_path / "Maildir"
    for folder in ("new", "cur"):
        (maildir / folder).mkdir(parents=True)
    (maildir / "new" / "1.msg").write_bytes(b"Subject: hi\r\nMessage-ID: <a@b>\r\n\r\nbody\r\n")
    conf = tmp_path / "sink.conf"
    conf.write_text(f"maildir={maildir}\n")
    monkeypatch.setattr(sink_index, "CONFIG_FILE", str(conf))
    assert sink_index.run(["--count-only"]) == 0 and capsys.readouterr().out == "1\n"
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert sink_index.run([]) == 0
    assert json.loads(sys.stdout.getvalue())["subject"] == "hi"


# -- the greeting probe, shared with the controller ------------------------


@pytest.fixture()
def greeter():
    """A loopback server that sends `greeting` to each connection."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    state = {"greeting": b"220 mta ESMTP\r\n"}

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(state["greeting"])
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    conn.recv(64)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], state
    server.close()


def test_the_controller_probe_and_the_node_agree_on_a_greeting(greeter):
    from mailha import probes

    port, state = greeter
    state["greeting"] = b"220-mta.example ESMTP\r\n220 second line\r\n"
    probe = probes.smtp_greeting("127.0.0.1", port, 1.0)
    assert probe.ok and probe.detail == "220 second line"
    state["greeting"] = b"554 go away\r\n"
    probe = probes.smtp_greeting("127.0.0.1", port, 1.0)
    assert not probe.ok and "greeting was not 220" in probe.detail and "554 go away" in probe.detail
    closed = probes.smtp_greeting("127.0.0.1", 1, 0.5)
    assert not closed.ok and "connect to 127.0.0.1:1 failed" in closed.detail
