"""failover and failback run the target's preflight first: a failing check
refuses the switch (exit 4, one line, nothing changed), warnings do not,
--skip-preflight skips it and the audit record says so.

The preflight runs for real against the local DNS server of
test_preflight.py (certificates and relay facts given at their boundary);
the playbook runner and the status probes are faked at theirs, so the
tests see which playbook runs would have changed the pair."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mailha import pair as pair_mod
from mailha import switch
from mailha.audit import AuditLog, Step
from mailha.cli import main
from mailha.errors import EXIT_PREFLIGHT_REFUSED
from mailha.preflight import facts, tls
from mailha.preflight.result import WARN, Result
from mailha.runner import PlaybookResult
from tests.unit.test_preflight import (  # noqa: F401 - fixtures
    dns_server,
    lab,
    nothing_reaches_a_pair,
    rsa_2048,
    signing_key_pem,
    state,
)
from tests.unit.test_status import node, topology

MX1_LISTED, MX2_LISTED = "11.0.213.10.bl.mailha.test", "12.0.213.10.bl.mailha.test"  # test_inventory.CONTRACT
ON_MX1 = topology(node("mx1", holds=True, state="MASTER", lb="UP"), node("mx2"))
ON_MX2 = topology(node("mx1"), node("mx2", holds=True, state="MASTER", lb="UP"))


@pytest.fixture
def playbooks(monkeypatch):
    """The switch's playbook runs, by tags: ["preconditions"] is a check, [None] the switch itself."""
    runs = []

    def run(playbook, inventory, extravars=None, tags=None, on_step=None, on_retry=None):
        runs.append(tags)
        name = "Precondition: target healthy" if tags == "preconditions" else "Step: move the floating IP"
        return PlaybookResult("successful", 0, steps=[Step(name, "ok", 0.1)])

    monkeypatch.setattr(switch, "run_playbook", run)
    return runs


def active(monkeypatch, topology):
    """What every status read sees: the switch decides its target from it."""
    monkeypatch.setattr(switch.status_mod, "gather", lambda _pair: topology)


def invoke(lab, *args):  # noqa: F811 - the fixture
    return CliRunner().invoke(main, [*args, "-i", str(lab)])


def error_line(result, code=EXIT_PREFLIGHT_REFUSED) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and result.output.rstrip().endswith(errors[0]), result.output
    return errors[0]


def test_a_listed_target_refuses_the_failover_and_nothing_changes(lab, dns_server, monkeypatch, playbooks):  # noqa: F811
    dns_server.add(MX2_LISTED, "A", "127.0.0.2")
    active(monkeypatch, ON_MX1)
    line = error_line(invoke(lab, "failover", "--yes"))
    assert line.startswith(
        "Error: refusing failover to mx2: preflight failed: blocklist mx2: 10.213.0.12 is listed on bl.mailha.test"
    )
    assert "(fix: find out why at the blocklist's site and ask for delisting" in line
    assert line.endswith("rerun with --skip-preflight to switch anyway; nothing was changed")
    assert playbooks == ["preconditions"]  # the switch itself never ran
    pair = pair_mod.load(lab)
    assert AuditLog(pair.state_dir).read() == []
    assert pair.designated_primary() == "mx1"


def test_the_failback_is_refused_for_the_primarys_own_failure(lab, dns_server, monkeypatch, playbooks):  # noqa: F811
    dns_server.add(MX1_LISTED, "A", "127.0.0.2")
    active(monkeypatch, ON_MX2)
    line = error_line(invoke(lab, "failback", "--yes"))
    assert line.startswith("Error: refusing failback to mx1: preflight failed: blocklist mx1: 10.213.0.11 is listed")
    assert playbooks == ["preconditions"]


def test_the_sources_own_failure_and_warnings_do_not_refuse(lab, dns_server, monkeypatch, playbooks):  # noqa: F811
    dns_server.add(MX1_LISTED, "A", "127.0.0.2")  # the relay being left: often why one fails over

    def expiring(address, host_name, now, warning_days, timeout, *, subject):
        assert subject == "mx2", "the source's certificate was fetched"
        return [Result("tls", subject, WARN, f"port {port}: the certificate expires in 9 days") for port in tls.PORTS]

    monkeypatch.setattr(tls, "check_relay", expiring)
    active(monkeypatch, ON_MX1)
    result = invoke(lab, "failover", "--yes", "--reason", "maintenance")
    assert result.exit_code == 0, result.output
    assert [line.split()[:3] for line in result.output.splitlines() if "tls" in line] == [["WARN", "tls", "mx2"]] * 2
    assert "port 25: the certificate expires in 9 days" in result.output
    assert playbooks == ["preconditions", None]
    (record,) = AuditLog(pair_mod.load(lab).state_dir).read()
    preflight = record["details"]["preflight"]
    assert (preflight["status"], preflight["relay"], preflight["verdict"]) == ("ran", "mx2", "warn")
    assert preflight["summary"]["warn"] == 2 and preflight["summary"]["fail"] == 0
    assert preflight["summary"]["pass"] > 5
    assert "warn tls mx2: port 25: the certificate expires in 9 days" in preflight["findings"]
    history = invoke(lab, "history")
    assert f"preflight: warn ({preflight['summary']['pass']} pass, 2 warn, 0 fail)" in history.output


def test_skip_preflight_switches_anyway_and_the_history_says_so(lab, dns_server, monkeypatch, playbooks):  # noqa: F811
    dns_server.add(MX2_LISTED, "A", "127.0.0.2")

    def not_asked(*_args, **_kwargs):
        raise AssertionError("the preflight ran")

    monkeypatch.setattr(tls, "check_relay", not_asked)
    monkeypatch.setattr(facts, "collect", not_asked)
    active(monkeypatch, ON_MX1)
    result = invoke(lab, "failover", "--yes", "--skip-preflight")
    assert result.exit_code == 0, result.output
    assert "Preflight of mx2: skipped (--skip-preflight)" in result.output
    assert playbooks == ["preconditions", None]
    (record,) = AuditLog(pair_mod.load(lab).state_dir).read()
    assert record["details"]["preflight"] == {"status": "skipped", "why": "--skip-preflight"}
    assert "    preflight: skipped (--skip-preflight)" in invoke(lab, "history").output


def test_skip_preflight_does_not_skip_the_preconditions(lab, monkeypatch):  # noqa: F811
    def precondition_fails(playbook, inventory, extravars=None, tags=None, on_step=None, on_retry=None):
        assert tags == "preconditions", "the switch ran after a failed precondition"
        return PlaybookResult("failed", 2, failure="mx2: the target is in FAULT")

    monkeypatch.setattr(switch, "run_playbook", precondition_fails)
    active(monkeypatch, ON_MX1)
    line = error_line(invoke(lab, "failover", "--yes", "--skip-preflight"), code=1)
    assert line == "Error: a precondition failed: mx2: the target is in FAULT; nothing was changed"


def test_a_dry_run_shows_what_the_preflight_would_refuse(lab, dns_server, monkeypatch, playbooks):  # noqa: F811
    active(monkeypatch, ON_MX1)
    clean = invoke(lab, "failover", "--dry-run")
    assert clean.exit_code == 0, clean.output
    assert "Preflight of mx2 and the floating IP:" in clean.output
    assert "verdict: pass (" in clean.output and "dry run: nothing was changed" in clean.output
    dns_server.add(MX2_LISTED, "A", "127.0.0.2")
    line = error_line(invoke(lab, "failover", "--dry-run"))
    assert line.startswith("Error: dry run: failover to mx2 would be refused: preflight failed: blocklist mx2:")
    skipped = invoke(lab, "failover", "--dry-run", "--skip-preflight")
    assert skipped.exit_code == 0, skipped.output
    assert playbooks == ["preconditions"] * 3
    assert AuditLog(pair_mod.load(lab).state_dir).read() == []


def test_json_output_carries_the_preflight(lab, dns_server, monkeypatch, playbooks):  # noqa: F811
    dns_server.add(MX2_LISTED, "A", "127.0.0.2")
    active(monkeypatch, ON_MX1)
    result = invoke(lab, "failover", "--yes", "--output", "json")
    assert result.exit_code == EXIT_PREFLIGHT_REFUSED
    outcome = json.loads(result.stdout)
    assert outcome["result"] == "refused" and outcome["message"].startswith("refusing failover to mx2")
    preflight = outcome["preflight"]
    assert (preflight["status"], preflight["verdict"], preflight["summary"]["fail"]) == ("ran", "fail", 1)
    (listed,) = [r for r in preflight["results"] if r["level"] == "fail"]
    assert (listed["check"], listed["subject"]) == ("blocklist", "mx2")
    assert not [r for r in preflight["results"] if r["subject"] in ("mx1", "relays")]


def test_a_preflight_that_cannot_run_refuses_too(lab, dns_server, monkeypatch, playbooks):  # noqa: F811
    dns_server.ignore("mailha.test")
    active(monkeypatch, ON_MX1)
    line = error_line(invoke(lab, "failover", "--yes"))
    assert line.startswith("Error: refusing failover to mx2: the preflight could not run: the name server 127.0.0.1")
    assert line.endswith("rerun with --skip-preflight to switch anyway; nothing was changed")
    assert playbooks == ["preconditions"]


@pytest.mark.parametrize("scenario", ["manual-failover", "mta-crash"])
def test_a_drills_switches_skip_the_preflight_on_purpose(lab, monkeypatch, scenario):  # noqa: F811
    """The restore must bring the pair back whatever a check says (README, "Drills")."""
    from mailha import drill

    switches = []
    monkeypatch.setattr(drill.switch_mod, "run_switch", lambda *args, **kwargs: switches.append((args, kwargs)))
    monkeypatch.setattr(drill, "recipient_side", lambda _pair, _hosts: None)  # the lab's recipient side, not used
    active(monkeypatch, ON_MX2)
    run = drill.Drill(pair_mod.load(lab), drill.DrillSettings(scenario=scenario), echo=lambda _text: None)
    if scenario == "manual-failover":
        run.inject("mx1")
    else:
        run.fail_back()
    ((args, kwargs),) = switches
    assert args[1] == ("failover" if scenario == "manual-failover" else "failback")
    assert kwargs["skip_preflight"] == "drill"
