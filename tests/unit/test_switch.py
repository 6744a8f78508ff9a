"""Switch decisions, refusals, the audit log and the lock, without a lab."""

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mailha import pair as pair_mod
from mailha import switch
from mailha.audit import AuditLog, Record, Step
from mailha.cli import main
from mailha.errors import MailhaError
from tests.unit.test_inventory import CONTRACT
from tests.unit.test_status import node, topology


@pytest.fixture
def state(tmp_path, monkeypatch):
    directory = tmp_path / "state"
    monkeypatch.setenv("MAILHA_STATE_DIR", str(directory))
    return directory


@pytest.fixture
def pair(tmp_path, state):
    from mailha import inventory

    path = tmp_path / "repo" / "inventories" / "lab" / "hosts.yml"
    inventory.write(inventory.build(CONTRACT), path)
    settings = path.parent / "group_vars" / "all" / "mailha.yml"
    settings.parent.mkdir(parents=True)
    settings.write_text(yaml.safe_dump({"mailha_failback_hold_down_seconds": 300}))
    return pair_mod.load(path)


def test_failover_targets_the_peer_of_the_active_relay(pair):
    t = topology(node("mx1", holds=True, state="MASTER", lb="UP"), node("mx2"))
    assert switch.choose(pair, "failover", t, "auto") == ("mx2", "mx1", "planned")


def test_failover_is_forced_when_the_active_relay_does_not_answer(pair):
    t = topology(node("mx1", holds=True, state="MASTER", smtp=False), node("mx2"))
    assert switch.choose(pair, "failover", t, "auto")[2] == "forced"


def test_failover_after_an_automatic_failover_completes_it_forced(pair):
    t = topology(node("mx1", state="FAULT", smtp=False), node("mx2", holds=True, state="MASTER", lb="UP"))
    assert switch.choose(pair, "failover", t, "auto") == ("mx2", "mx1", "forced")
    with pytest.raises(MailhaError, match="use --mode forced"):
        switch.choose(pair, "failover", t, "planned")


def test_failback_targets_the_inventory_master_and_refuses_when_already_there(pair):
    t = topology(node("mx1", holds=True, state="MASTER", lb="UP"), node("mx2"))
    with pytest.raises(MailhaError, match="mx1 is already the active relay"):
        switch.choose(pair, "failback", t, "auto")


def test_a_switch_interrupted_where_it_began_is_finished_by_reconciling(pair):
    # Killed during the quiesce: mx1 still holds the floating IP, both relays hold their mail.
    t = topology(node("mx1", holds=True, state="MASTER", lb="DRAIN", route="hold"), node("mx2", lb="no check"))
    assert switch.choose(pair, "failback", t, "auto") == ("mx1", "mx2", "reconcile")
    # failover completes it instead: the planned switch runs again.
    assert switch.choose(pair, "failover", t, "auto") == ("mx2", "mx1", "planned")


def test_failback_refuses_an_unhealthy_primary(pair):
    t = topology(node("mx1", smtp=False), node("mx2", holds=True, state="MASTER", lb="UP"))
    with pytest.raises(MailhaError, match="primary mx1 is not healthy"):
        switch.refuse_failback(pair, t, "mx1", AuditLog(pair.state_dir))


def test_failback_refuses_while_a_handover_is_pending(pair):
    pair.state_dir.mkdir(parents=True)
    switch.pending_handover_path(pair).write_text(json.dumps({"node": "mx1"}))
    t = topology(node("mx1"), node("mx2", holds=True, state="MASTER", lb="UP"))
    with pytest.raises(MailhaError, match="run 'mailha queue handover' first"):
        switch.refuse_failback(pair, t, "mx1", AuditLog(pair.state_dir))


def test_failback_refuses_within_the_hold_down(pair):
    log = AuditLog(pair.state_dir)
    record = Record(command="failover", reason="test", environment="lab", result="ok")
    record.finished = record.started
    log.append(record)
    t = topology(node("mx1"), node("mx2", holds=True, state="MASTER", lb="UP"))
    with pytest.raises(MailhaError, match="within the hold-down of 300s"):
        switch.refuse_failback(pair, t, "mx1", log)


def test_audit_log_is_newest_first_and_reports_damage(state):
    log = AuditLog(state)
    for command in ("failover", "failback"):
        log.append(Record(command=command, reason="r", environment="lab", steps=[Step("Step: x", "ok", 1.5)]))
    assert [r["command"] for r in log.read()] == ["failback", "failover"]
    with open(log.path, "a") as handle:
        handle.write("{broken\n")
    damage = []
    assert [r["command"] for r in log.read(on_damage=damage.append)] == ["failback", "failover"]
    assert damage == [f"{log.path} line 3 skipped: not JSON"]


def test_history_cli_prints_steps_and_json(pair):
    AuditLog(pair.state_dir).append(
        Record(
            command="failover",
            reason="maintenance",
            environment="lab",
            result="ok",
            steps=[Step("Step: drain", "ok", 0.4)],
            details={"target": "mx2"},
        )
    )
    runner = CliRunner()
    table = runner.invoke(main, ["history", "-i", str(pair.inventory_path)])
    assert table.exit_code == 0
    assert "failover -> mx2  ok" in table.output and "Step: drain" in table.output
    data = json.loads(runner.invoke(main, ["history", "-i", str(pair.inventory_path), "-o", "json"]).output)
    assert data[0]["reason"] == "maintenance"


def test_handover_without_pending_or_node_is_refused(pair):
    result = CliRunner().invoke(main, ["queue", "handover", "-i", str(pair.inventory_path)])
    assert result.exit_code == 1
    assert "no queue hand-over is pending" in result.output


def test_handover_of_an_unknown_node_is_bad_input(pair):
    result = CliRunner().invoke(main, ["queue", "handover", "-i", str(pair.inventory_path), "--node", "mx9"])
    assert result.exit_code == 2
    assert "unknown node 'mx9'; the pair's nodes are mx1, mx2" in result.output


def test_missing_tsig_key_is_one_clear_line(pair):
    with pytest.raises(MailhaError, match=r"TSIG key .* is missing; run 'make provision'"):
        pair.tsig_secret()


@pytest.mark.parametrize("command", ["failover", "failback"])
def test_switch_commands_with_a_missing_inventory(tmp_path: Path, command):
    result = CliRunner().invoke(main, [command, "--yes", "-i", str(tmp_path / "none.yml")])
    assert result.exit_code == 2
    assert "does not exist; run 'make provision'" in result.output
    assert "Traceback" not in result.output


def test_settings_with_jinja_are_refused(pair):
    settings = pair.inventory_path.parent / "group_vars" / "all" / "mailha.yml"
    settings.write_text("mailha_agent_port: '{{ port }}'\n")
    with pytest.raises(MailhaError, match="must be a plain value"):
        pair_mod.load(pair.inventory_path)


def test_the_quiesce_countdown_says_what_is_open_and_how_long_it_waited():
    lines: list[str] = []
    now = [100.0]
    show = switch.echo_retry(lines.append, every=2, clock=lambda: now[0])
    name = "Step: wait for the source relay's deliveries in flight to end"
    for attempt in range(1, 5):
        show(name, "mx1", attempt, 120, {"stdout_lines": ["a", "b", "c"]})
        now[0] += 3.0
    assert lines == [
        "         waiting (mx1): 3 still in delivery, 3 s of 120 s",
        "         waiting (mx1): 3 still in delivery, 9 s of 120 s",
    ]


def test_other_waits_count_attempts():
    lines: list[str] = []
    show = switch.echo_retry(lines.append, every=5)
    for attempt in range(1, 11):
        show("Step: wait until the target relay holds the floating IP", "mx2", attempt, 30, {})
    assert lines == ["         waiting (mx2): attempt 5 of 30", "         waiting (mx2): attempt 10 of 30"]
