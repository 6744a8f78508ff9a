"""Bad input never produces a traceback: one line and exit code 2, or a warning and the rest.

Each case is what an operator (or an attacker who can write a file or answer
on a port) can hand the CLI: the output contract, the inventory and its
settings, the history file, the state directory, a health agent's answer.
"""

import copy
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from click.testing import CliRunner

from mailha import audit, inventory, probes, status, switch
from mailha import pair as pair_mod
from mailha.audit import AuditLog, Record, Step
from mailha.cli import main
from mailha.errors import BadInput
from tests.unit.test_inventory import CONTRACT, contract

PROBES = ("smtp_greeting", "get_json", "http_json", "haproxy_servers", "dns_a")
REAL_PROBES = {name: getattr(probes, name) for name in PROBES}


@pytest.fixture(autouse=True)
def nothing_reaches_a_pair(monkeypatch):
    """Should a check here fail to refuse its input, no command may reach a real pair (the lab may be up)."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("bad input reached the pair")

    from mailha import drill, runner

    monkeypatch.setattr(switch, "run_playbook", refuse)
    monkeypatch.setattr(runner.ansible_runner, "run", refuse)
    monkeypatch.setattr(drill, "run_drill", refuse)
    for probe in PROBES:
        monkeypatch.setattr(probes, probe, refuse)


def code_for(command: list[str]) -> int:
    """Bad input exits 2, except for status, where 2 is a critical pair: 3, unknown."""
    return 3 if command[0] == "status" else 2


def one_line_error(result, code=2) -> str:
    """The CLI ended with its own one-line error, not an exception it did not expect."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def no_exception(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


@pytest.fixture
def state(tmp_path, monkeypatch):
    directory = tmp_path / "state"
    monkeypatch.setenv("MAILHA_STATE_DIR", str(directory))
    return directory


@pytest.fixture
def inventory_path(tmp_path, state):
    path = tmp_path / "repo" / "inventories" / "lab" / "hosts.yml"
    inventory.write(inventory.build(CONTRACT), path)
    settings = path.parent / "group_vars" / "all" / "mailha.yml"
    settings.parent.mkdir(parents=True)
    settings.write_text(yaml.safe_dump({"mailha_failback_hold_down_seconds": 300, "mailha_probe_timeout": 0.5}))
    return path


# -- the output contract ------------------------------------------------------


def _renamed_host(old, new):
    data = copy.deepcopy(CONTRACT)
    data["hosts"][new] = data["hosts"].pop(old)
    return data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (contract(environment="../../tmp/x"), "environment is '../../tmp/x'; it must be 1 to 32 of a-z"),
        (contract(environment="lab/../../etc"), "environment is 'lab/../../etc'"),
        (contract(environment="Lab"), "environment is 'Lab'"),
        (contract(environment=""), "environment is ''"),
        (contract(environment=7), "environment must be of type str, not int"),
        (_renamed_host("ns", "n s"), "hosts has the host name 'n s'; a host name must be a DNS label"),
        (_renamed_host("ns", "ns;id"), "hosts has the host name 'ns;id'"),
        (_renamed_host("ns", "../ns"), "hosts has the host name '../ns'"),
        (contract(hosts__mx1__target="mailha-mx1; rm -rf /"), "hosts.mx1.target is 'mailha-mx1; rm -rf /'"),
        (contract(hosts__mx1__target="--privileged"), "hosts.mx1.target is '--privileged'; it must be a container"),
        (contract(hosts__mx1__fqdn="mx1.mailha.test;id"), "hosts.mx1.fqdn is 'mx1.mailha.test;id'; it must be a DNS"),
        (contract(hosts__mx1__fqdn="mx1.other.test"), "hosts.mx1.fqdn is 'mx1.other.test'; it must be inside"),
        (contract(dns__zone="mailha.test."), "dns.zone is 'mailha.test.'"),
        (contract(dns__sending_host="mta mailha.test"), "dns.sending_host is 'mta mailha.test'"),
        (contract(dns__submission_host="smtp.elsewhere.test"), "dns.submission_host is 'smtp.elsewhere.test'"),
        (contract(dns__nameserver="10.213.0.10; id"), "dns.nameserver is not an IP address: '10.213.0.10; id'"),
        (contract(hosts__mx1__address="10.213.0.11\n"), "hosts.mx1.address is not an IP address: '10.213.0.11\\n'"),
        (contract(load_balancer__host="l b"), "load_balancer.host is 'l b'"),
        (contract(load_balancer__ports=[True]), "load_balancer.ports must be a non-empty list of TCP ports"),
        (contract(load_balancer__ports=[70000]), "not [70000]"),
        (contract(load_balancer__ports=["25"]), "not ['25']"),
        (contract(hosts__ns__groups=["mailha_switch_target"]), "hosts.ns.groups holds 'mailha_switch_target'"),
        (
            contract(connection="ssh\nProxyCommand=x"),
            "connection must be one of podman, ssh, not 'ssh\\nProxyCommand=x'",
        ),
    ],
)
def test_contract_names_are_refused_in_one_line_and_nothing_is_written(tmp_path, data, expected):
    source = tmp_path / "contract.json"
    source.write_text(json.dumps(data))
    target = tmp_path / "hosts.yml"
    line = one_line_error(
        CliRunner().invoke(main, ["inventory", "--from-json", str(source), "--inventory", str(target)])
    )
    assert expected in line
    assert line.startswith("Error: output contract: ")
    assert not target.exists()


def test_the_contract_rule_for_environments_keeps_state_directories_inside_their_root(monkeypatch):
    monkeypatch.delenv("MAILHA_STATE_DIR", raising=False)
    assert audit.state_dir("lab") == Path("/var/lib/mailha/lab")
    for name in ("../../tmp/x", "..", ".", "lab/x", "/etc", "", "a" * 33, "lab\n"):
        with pytest.raises(BadInput, match="cannot name a state directory"):
            audit.state_dir(name)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfe{}", "is not UTF-8 text (byte 1)"),
        (b"[" * 100000, "nested too deeply"),
        (b"[]", "the contract must be an object, not list"),
        (b'{"environment": "lab"', "is not JSON (line 1"),
    ],
)
def test_contract_files_that_are_not_a_contract(tmp_path, content, expected):
    source = tmp_path / "contract.json"
    source.write_bytes(content)
    target = tmp_path / "hosts.yml"
    line = one_line_error(
        CliRunner().invoke(main, ["inventory", "--from-json", str(source), "--inventory", str(target)])
    )
    assert expected in line
    assert not target.exists()


def test_inventory_output_below_a_regular_file(tmp_path):
    source = tmp_path / "contract.json"
    source.write_text(json.dumps(CONTRACT))
    blocker = tmp_path / "inventories"
    blocker.write_text("a file, not a directory\n")
    target = blocker / "lab" / "hosts.yml"
    line = one_line_error(
        CliRunner().invoke(main, ["inventory", "--from-json", str(source), "--inventory", str(target)])
    )
    assert f"cannot write inventory {target}" in line


# -- the history file -----------------------------------------------------------


def _history_line(**changes) -> bytes:
    record = json.loads(
        Record(
            command="failover",
            reason="r",
            environment="lab",
            result="ok",
            steps=[Step("Step: drain", "ok", 0.4)],
            details={"target": "mx2"},
        ).to_json()
    )
    record["finished"] = record["started"]
    for key, value in changes.items():
        if value is KeyError:
            del record[key]
        else:
            record[key] = value
    return json.dumps(record).encode()


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (_history_line(command=KeyError), "the key 'command' is missing"),
        (_history_line(started=KeyError), "the key 'started' is missing"),
        (b'["failover", "ok"]', "a JSON array, not an object"),
        (b'"failover"', "a JSON string, not an object"),
        (b"null", "a JSON null, not an object"),
        (b'{"command": "failover", "reason": "\xff\xfe"}', "not UTF-8 (byte 36)"),
        (b"{broken", "not JSON"),
        (b"[" * 100000, "not JSON"),
        (_history_line(started="yesterday"), "started is 'yesterday', not a timestamp"),
        (_history_line(finished="2025-13-01T00:00:00Z"), "finished is '2025-13-01T00:00:00Z', not a timestamp"),
        (_history_line(finished="2025-01-01T00:00:00"), "not a timestamp"),  # no zone: cannot be compared
        (_history_line(finished="9999-01-01T00:00:00Z"), "finished 9999-01-01T00:00:00Z is in the future"),
        (_history_line(started=1700000000), "started is 1700000000, not a text"),
        (_history_line(seconds="12"), "seconds is '12', not a number"),
        (_history_line(details="target"), "details is not an object"),
        (_history_line(steps=[{"name": "x"}]), "step 1 is not an object with a name, a result and seconds"),
        (_history_line(steps={"name": "x"}), "steps is not an array"),
    ],
)
def test_history_skips_a_damaged_line_with_a_warning_and_shows_the_rest(inventory_path, state, bad, why):
    state.mkdir()
    path = state / "history.jsonl"
    path.write_bytes(_history_line(reason="first") + b"\n" + bad + b"\n" + _history_line(reason="third") + b"\n")
    result = CliRunner().invoke(main, ["history", "-i", str(inventory_path)])
    no_exception(result)
    assert result.exit_code == 0
    [warning] = result.stderr.strip().splitlines()
    assert warning.startswith(f"warning: {path} line 2 skipped: ") and why in warning
    shown = result.stdout.strip().splitlines()
    assert next(line for line in shown if "failover -> mx2" in line).endswith("third")
    assert shown[-2].endswith("first")  # each record is followed by its one step

    as_json = CliRunner().invoke(main, ["history", "-i", str(inventory_path), "-o", "json"])
    assert [r["reason"] for r in json.loads(as_json.stdout)] == ["third", "first"]


def test_history_control_characters_stay_on_one_line(inventory_path, state):
    AuditLog(state).append(Record(command="failover", reason="a\nb\x1b[2J", environment="lab", result="ok"))
    result = CliRunner().invoke(main, ["history", "-i", str(inventory_path)])
    assert result.exit_code == 0
    assert result.stdout.strip().splitlines()[0].endswith("a?b?[2J")


def test_history_that_is_a_directory_is_one_line(inventory_path, state):
    (state / "history.jsonl").mkdir(parents=True)
    line = one_line_error(CliRunner().invoke(main, ["history", "-i", str(inventory_path)]))
    assert f"cannot read the history {state / 'history.jsonl'}: Is a directory" in line


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_hold_down_counts_a_damaged_last_line_as_a_switch_at_the_files_mtime(state):
    log = AuditLog(state)
    long_ago = _iso(datetime.now(UTC) - timedelta(hours=5))
    state.mkdir()
    log.path.write_bytes(_history_line(started=long_ago, finished=long_ago) + b"\n" + b'{"command": "failo')
    heard = []
    last = log.last_switch(on_damage=heard.append)
    assert last.damaged_line == 2
    assert last.age() < 60  # written just now: the hold-down is not bypassed
    assert heard == [f"{log.path} line 2 skipped: not JSON"]


def test_hold_down_bounds_a_damaged_line_by_the_next_readable_record(state):
    log = AuditLog(state)
    switch_time = datetime.now(UTC) - timedelta(hours=5)
    handover_time = datetime.now(UTC) - timedelta(hours=2)
    state.mkdir()
    log.path.write_bytes(
        _history_line(started=_iso(switch_time), finished=_iso(switch_time))
        + b"\n[]\n"
        + _history_line(command="queue-handover", started=_iso(handover_time), finished=_iso(handover_time))
        + b"\n"
    )
    last = log.last_switch(on_damage=lambda _text: None)
    assert last.damaged_line == 2
    assert abs(last.age() - 7200) < 60


def test_hold_down_is_the_last_switch_when_damage_is_older(state):
    log = AuditLog(state)
    switch_time = datetime.now(UTC) - timedelta(minutes=3)
    state.mkdir()
    log.path.write_bytes(b"\xff\n" + _history_line(started=_iso(switch_time), finished=_iso(switch_time)) + b"\n")
    last = log.last_switch(on_damage=lambda _text: None)
    assert last.damaged_line is None
    assert abs(last.age() - 180) < 30
    assert AuditLog(state / "none").last_switch() is None


def test_failback_hold_down_check_survives_a_bad_timestamp(inventory_path, state):
    pair = pair_mod.load(inventory_path)
    state.mkdir()
    (state / "history.jsonl").write_bytes(_history_line(finished="not-a-time") + b"\n")
    # No ValueError, no TypeError; and the damaged line may have been a switch, so the
    # hold-down counts it as one written when the file was (fails closed).
    age = switch.last_switch_age(AuditLog(pair.state_dir))
    assert age is not None and 0 <= age < 60


# -- a health agent's /status ------------------------------------------------------------

GOOD_STATUS = {
    "healthy": True,
    "vrrp_state": "BACKUP",
    "holds_floating_ip": False,
    "drained": False,
    "queue": {"active": 0, "deferred": 0, "incoming": 0, "hold": 0},
    "queue_oldest_age_seconds": None,
}


class _Agent(BaseHTTPRequestHandler):
    answers: ClassVar[dict] = {}

    def do_GET(self):
        code, body, trickle = self.answers[self.server.server_address[0]]
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        if not trickle:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if trickle:
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
            else:
                self.wfile.write(body)
        except OSError:
            pass  # the client gave up, as it should

    def log_message(self, *args):
        pass


@pytest.fixture
def agents(monkeypatch):
    """Health agents on 127.0.0.1 and 127.0.0.2, one port; set `answers[address] = (code, body, trickle)`.

    The HTTP probes are the real ones again: they only reach these two."""
    monkeypatch.setattr(probes, "get_json", REAL_PROBES["get_json"])
    monkeypatch.setattr(probes, "http_json", REAL_PROBES["http_json"])
    monkeypatch.setattr(probes, "haproxy_servers", REAL_PROBES["haproxy_servers"])
    answers = {}
    handler = type("Agent", (_Agent,), {"answers": answers})
    first = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = first.server_address[1]
    second = ThreadingHTTPServer(("127.0.0.2", port), handler)
    for server in (first, second):
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield port, answers
    for server in (first, second):
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>busy</html>", "answer unreadable: not JSON (JSONDecodeError"),
        (b"\xff\xfe\x00", "answer unreadable: not JSON"),
        (b"[1, 2]", "answer unreadable: a JSON array, not an object"),
        (b"[" * 100000, "answer unreadable: not JSON (ValueError: JSON nested too deeply)"),
        (json.dumps({**GOOD_STATUS, "queue": {"deferred": "3"}}).encode(), "queue is not an object of queue names"),
        (json.dumps({**GOOD_STATUS, "queue": [0, 0]}).encode(), "queue is not an object of queue names"),
        (json.dumps({**GOOD_STATUS, "holds_floating_ip": "yes"}).encode(), "holds_floating_ip is not true or false"),
        (json.dumps({**GOOD_STATUS, "vrrp_state": "\x1b[2JMASTER"}).encode(), "vrrp_state is not a VRRP state"),
        (json.dumps({**GOOD_STATUS, "queue_oldest_age_seconds": "old"}).encode(), "queue_oldest_age_seconds is not"),
        (json.dumps({"healthy": True}).encode(), "answer unreadable: vrrp_state is missing"),
        (b" " * (probes.MAX_BODY + 1), "the body is larger than 1024 KiB"),
    ],
)
def test_status_reports_a_malformed_agent_answer_as_a_finding(monkeypatch, inventory_path, agents, body, why):
    port, answers = agents
    answers["127.0.0.1"] = (200, body, False)
    answers["127.0.0.2"] = (
        200,
        json.dumps({**GOOD_STATUS, "vrrp_state": "MASTER", "holds_floating_ip": True}).encode(),
        False,
    )
    path = _local_agents(inventory_path, port)
    _quiet_other_probes(monkeypatch)
    result = CliRunner().invoke(main, ["status", "-i", str(path)])
    no_exception(result)
    assert result.exit_code == 1  # degraded: the other agent answers
    finding = [line for line in result.output.splitlines() if line.startswith("DEGRADED: mx1: health agent")]
    assert len(finding) == 1 and why in finding[0], result.output
    assert "verdict: degraded" in result.output
    table = json.loads(CliRunner().invoke(main, ["status", "-i", str(path), "-o", "json"]).stdout)
    assert table["nodes"][0]["agent_ok"] is False and why in table["nodes"][0]["agent_problem"]


def test_a_trickling_agent_is_cut_off_at_the_probe_timeout(agents):
    port, answers = agents
    answers["127.0.0.1"] = (200, json.dumps(GOOD_STATUS).encode() * 10, True)
    began = time.monotonic()
    answer = probes.get_json(f"http://127.0.0.1:{port}/status", timeout=0.3)
    assert time.monotonic() - began < 2
    assert answer.status == 200 and "took longer than 0.3s" in answer.error


def test_an_agent_answering_http_500_with_html(agents):
    port, answers = agents
    answers["127.0.0.1"] = (500, b"<h1>oops</h1>", False)
    doc, why = status.agent_status(probes.get_json(f"http://127.0.0.1:{port}/status", 1.0))
    assert doc is None and why.startswith("answer unreadable: not JSON")
    assert probes.http_json(f"http://127.0.0.1:{port}/status", 1.0)[0] is None  # the drill's view: no document


def test_haproxy_csv_with_short_rows(agents):
    port, answers = agents
    answers["127.0.0.1"] = (200, b"# pxname,svname,status\nmail,mx1\nmail,mx2,DOWN\nmail,mx3,UP,extra\n\xff\n", False)
    assert probes.haproxy_servers(f"http://127.0.0.1:{port}/;csv", 1.0) == {
        "mx1": "UNKNOWN",
        "mx2": "DOWN",
        "mx3": "UP",
    }


def _local_agents(inventory_path: Path, port: int) -> Path:
    data = yaml.safe_load(inventory_path.read_text())
    hosts = data["all"]["children"]["mail"]["hosts"]
    hosts["mx1"]["mailha_address"], hosts["mx2"]["mailha_address"] = "127.0.0.1", "127.0.0.2"
    inventory_path.write_text(yaml.safe_dump(data))
    settings = inventory_path.parent / "group_vars" / "all" / "mailha.yml"
    settings.write_text(yaml.safe_dump({"mailha_agent_port": port, "mailha_probe_timeout": 1.0}))
    return inventory_path


def _quiet_other_probes(monkeypatch):
    monkeypatch.setattr(probes, "smtp_greeting", lambda host, port, timeout: probes.SmtpProbe(True, 0.001, "220 mta"))
    monkeypatch.setattr(probes, "haproxy_servers", lambda url, timeout: {"mx1": "UP", "mx2": "DOWN"})
    monkeypatch.setattr(probes, "dns_a", lambda name, server, timeout: ["10.213.0.100"])


# -- the state directory ----------------------------------------------------------------

STATE_COMMANDS = [
    ["status"],
    ["history"],
    ["failover", "--yes"],
    ["failback", "--yes"],
    ["queue", "handover", "--node", "mx1"],
    ["drill", "--scenario", "mta-crash", "--yes"],
]


@pytest.mark.parametrize("command", STATE_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_state_directory_below_a_regular_file_is_one_line(tmp_path, monkeypatch, inventory_path, command):
    blocker = tmp_path / "somefile"
    blocker.write_text("not a directory\n")
    monkeypatch.setenv("MAILHA_STATE_DIR", str(blocker / "state"))
    line = one_line_error(CliRunner().invoke(main, [*command, "-i", str(inventory_path)]), code=code_for(command))
    assert line == (
        f"Error: state directory {blocker / 'state'} cannot be used: {blocker} is not a directory; "
        "set MAILHA_STATE_DIR to a directory"
    )


def test_a_drill_report_directory_below_a_regular_file_is_refused_before_the_fault(tmp_path, inventory_path):
    blocker = tmp_path / "reports"
    blocker.write_text("")
    command = ["drill", "-i", str(inventory_path), "--scenario", "mta-crash", "--yes", "--report", str(blocker / "x")]
    line = one_line_error(CliRunner().invoke(main, command))
    assert line == (
        f"Error: report directory {blocker / 'x'} cannot be used: {blocker} is not a directory; choose another --report"
    )


def test_a_state_directory_that_is_a_regular_file(tmp_path, monkeypatch, inventory_path):
    blocker = tmp_path / "state-file"
    blocker.write_text("")
    monkeypatch.setenv("MAILHA_STATE_DIR", str(blocker))
    line = one_line_error(CliRunner().invoke(main, ["history", "-i", str(inventory_path)]))
    assert f"{blocker} is not a directory" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_state_directory_that_cannot_be_created(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(BadInput, match="cannot create the state directory"):
        audit.make_state_dir(locked / "state")


def test_the_lock_is_refused_in_one_line_below_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BadInput, match="is not a directory"), audit.switch_lock(blocker / "state"):
        pass


def test_a_damaged_designation_falls_back_to_the_inventory(inventory_path, state):
    state.mkdir()
    for content in (b"[1]", b'{"primary": ["mx2"]}', b"\xff", b'{"primary": "mx9"}'):
        (state / "designation.json").write_bytes(content)
        assert pair_mod.load(inventory_path).designated_primary() == "mx1"


# -- the inventory and its settings ------------------------------------------------------------


def _edit_inventory(path: Path, edit) -> Path:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))
    return path


def _mail(data):
    return data["all"]["children"]["mail"]["hosts"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["all"].update(vars=["a"]), "all.vars must be a mapping, not list"),
        (lambda d: d["all"].update(children="mail"), "all.children must be a mapping, not str"),
        (lambda d: d["all"]["children"].update(mail={"hosts": ["mx1", "mx2"]}), "'mail'.hosts must be a mapping"),
        (lambda d: d["all"]["children"].update(mail=["mx1"]), "group 'mail' must be a mapping, not list"),
        (lambda d: _mail(d).update(mx1="mailha-mx1"), "host mx1 must be a mapping, not str"),
        (lambda d: _mail(d)["mx1"].pop("mailha_fqdn"), "host mx1 lacks 'mailha_fqdn'"),
        (lambda d: _mail(d)["mx1"].update(mailha_address="mx1.lab"), "mx1.mailha_address is 'mx1.lab'; it must be"),
        (lambda d: _mail(d)["mx1"].update(ansible_host="-it"), "mx1.ansible_host is '-it'"),
        (lambda d: _mail(d)["mx2"].update(mailha_vrrp_state="MASTER"), "mailha_vrrp_state are 'MASTER', 'MASTER'"),
        (lambda d: _mail(d).update({"mx 3": _mail(d).pop("mx2")}), "a host in group mail is 'mx 3'"),
        (lambda d: d["all"]["vars"].update(mailha_environment="../../x"), "mailha_environment is '../../x'"),
        (lambda d: d["all"]["vars"].update(mailha_nameserver=None), "mailha_nameserver is None"),
        (lambda d: d["all"]["vars"].update(mailha_sending_host="a b"), "mailha_sending_host is 'a b'"),
        (lambda d: d["all"]["vars"].pop("mailha_sending_host"), "lacks mailha_sending_host"),
        (lambda d: d["all"]["vars"].update(mailha_load_balancer_host=["lb"]), "mailha_load_balancer_host is ['lb']"),
        (
            lambda d: d["all"]["children"]["loadbalancer"]["hosts"]["lb"].update(mailha_address="x"),
            "balancer's address",
        ),
    ],
)
def test_hand_edited_inventories_are_one_line(inventory_path, edit, expected):
    _edit_inventory(inventory_path, edit)
    for command in (["status"], ["history"], ["failover", "--yes"], ["queue", "handover", "--node", "mx1"]):
        line = one_line_error(CliRunner().invoke(main, [*command, "-i", str(inventory_path)]), code=code_for(command))
        assert expected in line


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfeall:", "is not UTF-8 text"),
        (b"- all\n", "has no 'all' group"),
        (b"all: [", "is not valid YAML"),
    ],
)
def test_inventory_files_that_are_no_inventory(tmp_path, content, expected):
    path = tmp_path / "hosts.yml"
    path.write_bytes(content)
    assert expected in one_line_error(CliRunner().invoke(main, ["status", "-i", str(path)]), code=3)


def test_inventory_that_is_a_directory(tmp_path):
    path = tmp_path / "hosts.yml"
    path.mkdir()
    # click refuses a directory itself (a usage error, exit 2); the loader says the same to callers in Python.
    with pytest.raises(BadInput, match="is a directory"):
        inventory.load(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_inventory_that_cannot_be_read(inventory_path):
    inventory_path.chmod(0)
    assert "cannot read inventory" in one_line_error(
        CliRunner().invoke(main, ["status", "-i", str(inventory_path)]), code=3
    )


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("mailha_agent_port: 70000\n", "mailha_agent_port is 70000; it must be between 1 and 65535"),
        ("mailha_agent_port: true\n", "mailha_agent_port must be of type int, not bool"),
        ("mailha_agent_port: '8025'\n", "mailha_agent_port must be of type int, not str"),
        ("mailha_probe_timeout: -1\n", "mailha_probe_timeout is -1; it must be between 0.05 and 60"),
        ("mailha_probe_timeout: .nan\n", "mailha_probe_timeout is nan"),
        ("mailha_failback_hold_down_seconds: -5\n", "mailha_failback_hold_down_seconds is -5"),
        ("mailha_tsig_key_name: ../../../etc/passwd\n", "mailha_tsig_key_name is '../../../etc/passwd'"),
        ("mailha_tsig_algorithm: md5; rm\n", "mailha_tsig_algorithm is 'md5; rm'; it must be one of hmac-sha1"),
        ("mailha_active_record: relay.x\n", "mailha_active_record is 'relay.x'"),
        ("mailha_test_sender: nobody\n", "mailha_test_sender is 'nobody'; it must be a mail address"),
        ("mailha_test_recipient: a@b c\n", "mailha_test_recipient is 'a@b c'"),
        ("- a list\n", "must be a mapping of settings"),
        ("mailha_agent_port: [\n", "is not valid YAML"),
    ],
)
def test_group_vars_of_the_wrong_type_or_range_are_one_line(inventory_path, settings, expected):
    (inventory_path.parent / "group_vars" / "all" / "mailha.yml").write_text(settings)
    assert expected in one_line_error(CliRunner().invoke(main, ["status", "-i", str(inventory_path)]), code=3)


def test_group_vars_that_are_not_utf8_or_a_directory(inventory_path):
    settings = inventory_path.parent / "group_vars" / "all" / "mailha.yml"
    settings.write_bytes(b"mailha_agent_port: \xff\n")
    assert "is not UTF-8 text" in one_line_error(
        CliRunner().invoke(main, ["status", "-i", str(inventory_path)]), code=3
    )
    settings.unlink()
    settings.mkdir()
    assert "Is a directory" in one_line_error(CliRunner().invoke(main, ["status", "-i", str(inventory_path)]), code=3)


@pytest.mark.parametrize("node", ["mx9", "mx1; rm -rf /", "../mx1", ""])
def test_unknown_node_names_on_the_command_line(inventory_path, node):
    line = one_line_error(CliRunner().invoke(main, ["queue", "handover", "-i", str(inventory_path), "--node", node]))
    assert f"unknown node {node!r}; the pair's nodes are mx1, mx2" in line


# -- what the lab's commands hand back -------------------------------------------------------------


def test_a_recipient_target_that_is_an_option_is_refused(inventory_path):
    from mailha import hosts, lab

    def add_sink(data):
        sink = {"ansible_host": "--privileged", "mailha_address": "10.213.0.30", "mailha_fqdn": "sink.mailha.test"}
        data["all"]["children"]["recipient"] = {"hosts": {"sink": sink}}

    pair = pair_mod.load(_edit_inventory(inventory_path, add_sink))
    with pytest.raises(BadInput, match=r"sink.ansible_host is '--privileged'; it must be a container"):
        hosts.recipient_side(pair, lab.PodmanHosts(pair))


def test_a_sink_index_line_that_is_no_object_is_one_error(inventory_path, monkeypatch):
    from subprocess import CompletedProcess

    from mailha import hosts, lab
    from mailha.errors import MailhaError

    podman = lab.PodmanHosts(pair_mod.load(inventory_path))
    answer = CompletedProcess([], 0, stdout='{"message_id": "<a@b>"}\n[1]\n', stderr="")
    monkeypatch.setattr(podman, "exec", lambda *args, **kwargs: answer)
    with pytest.raises(MailhaError, match="mailha-sink-index on mailha-sink: line 2 is not a JSON object"):
        hosts.RecipientSide(podman, "mailha-sink").index()
    monkeypatch.setattr(podman, "pid", lambda target: "12 13")
    with pytest.raises(MailhaError, match="not a process id"):
        podman.cut("mailha-mx1", heal_after=300)
