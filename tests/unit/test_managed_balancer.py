"""A managed load balancer (kind hcloud): no host in the inventory, no
statistics to read; status and drills see what its health check sees, the
relays' /active, and never ask for HAProxy's statistics."""

import json

import pytest
import yaml
from click.testing import CliRunner

from mailha import inventory, probes, status
from mailha import pair as pair_mod
from mailha.cli import main
from mailha.drill_sampler import Sampler
from mailha.errors import BadInput
from tests.unit.test_bad_input import (  # noqa: F401 - fixtures
    GOOD_STATUS,
    _local_agents,
    agents,
    nothing_reaches_a_pair,
    state,
)
from tests.unit.test_inventory import hcloud_contract
from tests.unit.test_status import node, topology

ACTIVE = {**GOOD_STATUS, "vrrp_state": "MASTER", "holds_floating_ip": True, "active": True}
STANDBY = {**GOOD_STATUS, "active": False}


@pytest.fixture
def managed_inventory(tmp_path, state):  # noqa: F811 - the fixture imported above
    path = tmp_path / "repo" / "inventories" / "hcloud" / "hosts.yml"
    inventory.write(inventory.build(hcloud_contract()), path)
    (path.parent / "group_vars" / "all").mkdir(parents=True)
    return path


@pytest.fixture
def no_haproxy(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a managed load balancer has no HAProxy statistics to read")

    monkeypatch.setattr(probes, "haproxy_servers", refuse)
    monkeypatch.setattr(probes, "smtp_greeting", lambda host, port, timeout: probes.SmtpProbe(True, 0.001, "220 mta"))
    monkeypatch.setattr(probes, "dns_a", lambda name, server, timeout: ["10.213.0.100"])


def _answer(answers, mx1, mx2):
    answers["127.0.0.1"] = (200, json.dumps(mx1).encode(), False)
    answers["127.0.0.2"] = (200, json.dumps(mx2).encode(), False)


def test_the_pair_of_a_managed_balancer_has_its_address_and_kind(managed_inventory):
    pair = pair_mod.load(managed_inventory)
    assert pair.managed_balancer
    assert pair.balancer["mailha_address"] == "198.51.100.20"
    assert pair.balancer["kind"] == "hcloud"


def test_an_unknown_balancer_kind_in_an_inventory_is_one_line(managed_inventory):
    data = yaml.safe_load(managed_inventory.read_text())
    data["all"]["vars"]["mailha_load_balancer_kind"] = "f5"
    managed_inventory.write_text(yaml.safe_dump(data))
    with pytest.raises(BadInput) as caught:
        pair_mod.load(managed_inventory)
    assert "mailha_load_balancer_kind is 'f5'; it must be one of haproxy, hcloud" in caught.value.message


def test_status_reads_a_managed_balancer_from_the_relays_active(agents, managed_inventory, no_haproxy):  # noqa: F811
    port, answers = agents
    _answer(answers, ACTIVE, STANDBY)
    path = _local_agents(managed_inventory, port)
    (path.parent / "group_vars" / "all" / "mailha.yml").write_text(
        yaml.safe_dump({"mailha_agent_port": port, "mailha_probe_timeout": 1.0})
    )
    result = CliRunner().invoke(main, ["status", "-i", str(path), "-o", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["balancer"]["kind"] == "hcloud"
    assert document["balancer"]["servers"] == {"mx1": "UP", "mx2": "DOWN"}
    assert document["verdict"] == "healthy"
    table = CliRunner().invoke(main, ["status", "-i", str(path)]).output
    assert "LB 198.51.100.20 (hcloud, managed): sends to the relay answering /active" in table


def test_two_relays_answering_active_behind_a_managed_balancer_is_a_finding(
    agents,  # noqa: F811
    managed_inventory,
    no_haproxy,
):
    port, answers = agents
    _answer(answers, ACTIVE, {**STANDBY, "active": True})
    path = _local_agents(managed_inventory, port)
    result = CliRunner().invoke(main, ["status", "-i", str(path), "-o", "json"])
    problems = [p["problem"] for p in json.loads(result.stdout)["problems"]]
    assert "the load balancer also sends to mx2, which is not active" in problems


def test_the_managed_view_of_an_unreadable_or_older_agent_is_unknown():
    readable = ({**ACTIVE}, "")
    older = ({k: v for k, v in ACTIVE.items() if k != "active"}, "")
    assert status.managed_balancer_view({"mx1": readable, "mx2": (None, "unreachable")}) == {
        "mx1": "UP",
        "mx2": "UNKNOWN",
    }
    assert status.managed_balancer_view({"mx1": older}) == {"mx1": "UNKNOWN"}


@pytest.mark.parametrize(("state_seen", "critical"), [("DOWN", False), ("UNKNOWN", False), ("UP", True)])
def test_an_isolated_relay_behind_a_managed_balancer_must_not_pass_its_check(state_seen, critical):
    fenced = node("mx2", lb=state_seen, isolated={"since": "now", "reason": "test"}, agent=False)
    t = topology(node("mx1", holds=True, state="MASTER", lb="UP"), fenced)
    t.balancer["kind"] = "hcloud"
    problems = status.assess(t, deferred_warning=100)
    found = [p for p in problems if "has not disabled the isolated mx2" in p["problem"]]
    assert bool(found) == critical, problems


def test_a_drill_samples_a_managed_balancer_from_the_relays_active(agents, managed_inventory, no_haproxy):  # noqa: F811
    port, answers = agents
    _answer(answers, STANDBY, {**ACTIVE})
    pair = pair_mod.load(_local_agents(managed_inventory, port))
    sampler = Sampler(pair, interval=0.05)
    sampler.start()
    try:
        deadline = 50
        while not sampler.balancer and deadline:
            sampler.stop_event.wait(0.05)
            deadline -= 1
    finally:
        sampler.stop()
    assert sampler.balancer, "no sample taken"
    assert sampler.balancer[0][1] == {"mx1": "DOWN", "mx2": "UP"}
    assert sampler.holders[0][1] == "mx2"
    assert sampler.first_balancer_switch(0, "mx2") == sampler.balancer[0][0]


def test_the_switch_plan_of_a_managed_balancer_neither_pins_nor_drains(managed_inventory):
    from mailha import switch

    steps = switch.plan_steps(pair_mod.load(managed_inventory))
    assert len(steps) == len(switch.PLAN)
    assert not [s for s in steps if "drain" in s or "return the load balancer" in s], steps
    assert steps[4] == "wait until only the target answers /active, the managed load balancer's health check"
    # The hcloud contract's zone is changed through the API, not RFC 2136.
    assert "Hetzner Cloud API" in steps[5] and "RFC 2136" not in steps[5]
