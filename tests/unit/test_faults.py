"""The drills' faults (mailha.faults): each scenario's inject and restore issue
the operations a drill has always issued, through the Hosts operations an
environment implements; the registry knows every host fault; the Drill asks
it instead of choosing by scenario name.

RecordingHosts implements the Hosts protocol by writing down each call: a
test of which operations a fault asks for, not a fake environment."""

from __future__ import annotations

import subprocess

import dkim
import pytest
from cryptography.hazmat.primitives import serialization

from mailha import drill, drill_dkim, faults, probes
from mailha import pair as pair_mod
from mailha.drill_sampler import Sampler, timeline_events
from mailha.errors import MailhaError
from mailha.lab import PodmanHosts
from mailha.traffic import Attempt
from tests.unit.test_preflight import (  # noqa: F401 - fixtures
    DNS_TIMEOUT,
    LAB_SETTINGS,
    dns_server,
    lab_zone,
    rsa_2048,
    state,
    write_inventory,
)

TARGET = "mailha-mx1"
BLOCK = (
    "add table inet mailha_drill; "
    "add chain inet mailha_drill input { type filter hook input priority -50; }; "
    "add rule inet mailha_drill input meta l4proto vrrp drop; "
    "add chain inet mailha_drill output { type filter hook output priority -50; }; "
    "add rule inet mailha_drill output meta l4proto vrrp drop"
)


class RecordingHosts:
    """Writes down every operation; booted answers from `boots` (then True)."""

    def __init__(self, targets=None, boots=(), fail=None):
        self.calls: list[tuple] = []
        self.targets = targets or {}
        self.boots = list(boots)
        self.fail = fail  # an operation's name that raises MailhaError

    def _record(self, *call):
        self.calls.append(call)
        if call[0] == self.fail:
            raise MailhaError(f"{call[0]} failed")

    def exec(self, target, *command, timeout=60, check=True):
        self._record("exec", target, *command)
        return subprocess.CompletedProcess(["exec", target, *command], 0, stdout="", stderr="")

    def stop(self, target):
        self._record("stop", target)

    def start(self, target):
        self._record("start", target)

    def cut(self, target, heal_after):
        self._record("cut", target, heal_after)

    def heal(self, target):
        self._record("heal", target)

    def power_problem(self):
        return None

    def read(self, target, path):
        self._record("read", target, path)
        return b""

    def booted(self, target):
        self._record("booted", target)
        return self.boots.pop(0) if self.boots else True


class RecordingWait:
    """The drill's wait, polling at once: what was awaited, how long it could take."""

    def __init__(self):
        self.waits: list[tuple[float, str]] = []

    def __call__(self, predicate, timeout, what):
        self.waits.append((timeout, what))
        for _ in range(10):
            if value := predicate():
                return value
        raise MailhaError(f"drill: timed out after {timeout:.0f}s waiting for {what}")


# What each fault did to the active relay before the registry, call for call.
INJECT = {
    "mta-crash": [("exec", TARGET, "pkill", "-9", "-f", "^/usr/lib/postfix/sbin/master")],
    "host-down": [("stop", TARGET)],
    "network-partition": [("cut", TARGET, faults.PARTITION_HEAL_SECONDS)],
    "keepalived-crash": [("exec", TARGET, "pkill", "-9", "-x", "keepalived")],
    "vrrp-blocked": [("exec", TARGET, "nft", BLOCK)],
}
RESTORE = {
    "mta-crash": [("exec", TARGET, "systemctl", "restart", "postfix@-.service")],
    "host-down": [("start", TARGET), ("booted", TARGET), ("booted", TARGET)],  # booted: not yet, then yes
    "network-partition": [("heal", TARGET)],
    "keepalived-crash": [("exec", TARGET, "systemctl", "restart", "keepalived")],
    "vrrp-blocked": [("exec", TARGET, "nft", "delete table inet mailha_drill")],
}
LEFT_TO_DO = {
    "mta-crash": "start Postfix on mx1 (systemctl restart postfix@-.service)",
    "host-down": "start the host mx1",
    "network-partition": (
        "heal the partition of mx1 (it heals by itself 300s after the fault; "
        "over ssh: nft delete table inet mailha_partition; nft delete table arp mailha_partition)"
    ),
    "keepalived-crash": "start keepalived on mx1",
    "vrrp-blocked": "nft delete table inet mailha_drill on mx1",
}
HOST_FAULTS = list(INJECT)


@pytest.mark.parametrize("scenario", HOST_FAULTS)
def test_inject_issues_the_faults_operations_on_the_target_only(scenario):
    hosts = RecordingHosts()
    faults.fault_for(scenario, hosts).inject(TARGET)
    assert hosts.calls == INJECT[scenario]


@pytest.mark.parametrize("scenario", HOST_FAULTS)
def test_restore_undoes_the_fault_and_host_down_waits_for_the_boot(scenario):
    hosts, wait = RecordingHosts(boots=[False, True]), RecordingWait()
    faults.fault_for(scenario, hosts).restore(TARGET, wait, "mx1")
    assert hosts.calls == RESTORE[scenario]
    assert wait.waits == ([(120, "mx1 to boot")] if scenario == "host-down" else [])


@pytest.mark.parametrize("scenario", HOST_FAULTS)
def test_left_to_do_says_what_to_run_by_hand(scenario):
    assert faults.fault_for(scenario, RecordingHosts()).left_to_do("mx1") == LEFT_TO_DO[scenario]


def test_only_host_down_has_no_vrrp_log_and_only_vrrp_blocked_splits_the_pair():
    assert {name for name, fault in faults.FAULTS.items() if not fault.has_vrrp_log} == {"host-down"}
    assert {name for name, fault in faults.FAULTS.items() if fault.splits_the_pair} == {"vrrp-blocked"}


def test_the_registry_holds_every_scenario_but_the_planned_switch_in_the_clis_order():
    assert drill.SCENARIOS == (
        "mta-crash",
        "host-down",
        "network-partition",
        "keepalived-crash",
        "vrrp-blocked",
        "manual-failover",
    )
    assert list(faults.FAULTS) == [s for s in drill.SCENARIOS if s != "manual-failover"]
    hosts = RecordingHosts()
    for scenario in faults.FAULTS:
        fault = faults.fault_for(scenario, hosts)
        assert (fault.name, fault.hosts) == (scenario, hosts)


def test_an_unknown_scenario_is_one_error_listing_the_scenarios():
    expected = (
        "unknown scenario 'disk-full'; choose one of mta-crash, host-down, network-partition, "
        "keepalived-crash, vrrp-blocked, manual-failover"
    )
    with pytest.raises(MailhaError) as raised:
        faults.fault_for("disk-full", RecordingHosts())
    assert raised.value.message == expected
    with pytest.raises(MailhaError) as raised:
        drill.Drill(None, drill.DrillSettings(scenario="disk-full"), echo=print)
    assert raised.value.message == expected


def test_the_planned_switch_is_no_host_fault():
    with pytest.raises(MailhaError, match="manual-failover is a planned switch, not a host fault"):
        faults.fault_for("manual-failover", RecordingHosts())


def test_the_labs_hosts_implement_the_protocol_with_todays_podman_commands(monkeypatch):
    assert isinstance(RecordingHosts(), faults.Hosts)
    assert issubclass(PodmanHosts, faults.Hosts)
    hosts = PodmanHosts.__new__(PodmanHosts)  # no inventory needed: only the commands are looked at
    commands = []
    monkeypatch.setattr(hosts, "podman", lambda *args, **kwargs: commands.append(args))
    hosts.stop(TARGET)
    hosts.start(TARGET)
    assert commands == [("stop", "-t", "0", TARGET), ("start", TARGET)]


# -- the Drill asks the registry ---------------------------------------------------------------------


@pytest.fixture
def lab_pair(tmp_path, state):  # noqa: F811
    return pair_mod.load(write_inventory(tmp_path, LAB_SETTINGS))


def drill_on(monkeypatch, pair, scenario, hosts):
    hosts.targets = {name: node.target for name, node in pair.nodes.items()}
    monkeypatch.setattr(drill, "hosts_for", lambda _pair: hosts)
    monkeypatch.setattr(drill, "recipient_side", lambda _pair, _hosts: None)  # not used here
    said = []
    return drill.Drill(pair, drill.DrillSettings(scenario=scenario), echo=said.append), said


@pytest.mark.parametrize("scenario", HOST_FAULTS)
def test_the_drill_injects_and_restores_through_the_fault(monkeypatch, lab_pair, scenario):
    hosts = RecordingHosts(boots=[False, True])
    run, _ = drill_on(monkeypatch, lab_pair, scenario, hosts)
    target = lab_pair.nodes["mx1"].target
    run.inject("mx1")
    run.restore("mx1")
    expected = [(call[0], target, *call[2:]) for call in INJECT[scenario] + RESTORE[scenario]]
    assert hosts.calls == expected
    assert [e["name"] for e in run.events] == ["fault_injected", "fault_in_place", "restored"]


@pytest.mark.parametrize("scenario", HOST_FAULTS)
def test_a_failed_restore_says_what_is_left_to_do(monkeypatch, lab_pair, scenario):
    failing = {"host-down": "start", "network-partition": "heal"}.get(scenario, "exec")
    run, said = drill_on(monkeypatch, lab_pair, scenario, RecordingHosts(fail=failing))
    run.restore_or_say("mx1")
    left = LEFT_TO_DO[scenario]
    assert said[-1] == f"  could not restore mx1 ({failing} failed); left to do: {left}"
    assert (run.steps[-1].name, run.steps[-1].result) == ("restore mx1", "failed")


@pytest.mark.parametrize("scenario", ["host-down", "mta-crash"])
def test_the_timeline_reads_the_failed_relays_vrrp_log_unless_it_was_down(monkeypatch, lab_pair, scenario):
    hosts = RecordingHosts()
    run, _ = drill_on(monkeypatch, lab_pair, scenario, hosts)
    run.timeline("mx1", "mx2", 100.0, [], Sampler(lab_pair))
    read = [call[1] for call in hosts.calls if call[0] == "exec" and call[2] == "tail"]
    mx1, mx2 = lab_pair.nodes["mx1"].target, lab_pair.nodes["mx2"].target
    assert read == ([mx2] if scenario == "host-down" else [mx1, mx2])


def test_timeline_events_from_the_logs_the_traffic_and_the_balancer(lab_pair):
    sampler = Sampler(lab_pair)
    sampler.balancer = [
        (99.0, {"mx1": "UP", "mx2": "UP"}),
        (101.0, {"mx1": "UP", "mx2": "UP"}),
        (102.0, {"mx1": "DOWN", "mx2": "UP"}),
    ]
    attempts = [
        Attempt(1, "<a@x>", "lb:25", 100.5, 103.5, 250, "ok", node="mx2"),
        Attempt(2, "<b@x>", "lb:25", 100.2, 103.0, 250, "ok", node="mx2"),
        Attempt(3, "<c@x>", "lb:25", 99.0, 99.5, 250, "ok", node="mx2"),  # before the fault
    ]
    found = timeline_events(
        active="mx1",
        standby="mx2",
        fault_at=100.0,
        attempts=attempts,
        failed_log=[(90.0, "MASTER"), (101.5, "FAULT")],
        standby_log=[(90.0, "BACKUP"), (101.8, "MASTER")],
        sampler=sampler,
    )
    assert found == [
        ("failure_detected", 101.5),
        ("floating_ip_moved", 101.8),
        ("first_accept_from_standby", 103.0),
        ("balancer_left_failed", 102.0),
        ("balancer_switched", 102.0),
    ]
    # Without the failed relay's log, detection is the standby's claim.
    found = timeline_events(
        active="mx1",
        standby="mx2",
        fault_at=100.0,
        attempts=[],
        failed_log=[],
        standby_log=[(101.8, "MASTER")],
        sampler=sampler,
    )
    assert found[:2] == [("failure_detected", 101.8), ("floating_ip_moved", 101.8)]


# -- the DKIM check ------------------------------------------------------------------------------


def test_dkim_of_the_standbys_mail_is_checked_against_the_pairs_dns(dns_server, rsa_2048):  # noqa: F811
    lab_zone(dns_server, rsa_2048[1])
    private_pem = rsa_2048[0].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    message = b"From: list@news.mailha.test\r\nTo: a@recipient.test\r\nSubject: drill\r\n\r\nhello\r\n"
    signed = dkim.sign(message, b"mailha", b"news.mailha.test", private_pem, include_headers=[b"From", b"Subject"])
    stored = {"good": signed + message, "tampered": (signed + message).replace(b"hello", b"bye"), "bare": message}
    attempts = [Attempt(n, f"<{name}@x>", "lb:25", 1.0, 2.0, 250, "ok", node="mx2") for n, name in enumerate(stored)]
    attempts.append(Attempt(9, "<mx1@x>", "lb:25", 1.0, 2.0, 250, "ok", node="mx1"))  # not the standby's
    entries = {f"<{name}@x>": {"file": name} for name in [*stored, "mx1"]}
    results = drill_dkim.check_dkim(
        attempts,
        entries,
        "mx2",
        read=lambda file: stored[file],
        resolver=probes.resolver("127.0.0.1", DNS_TIMEOUT, port=dns_server.port),
    )
    assert results == {"<good@x>": True, "<tampered@x>": False, "<bare@x>": False}


def test_host_down_is_refused_before_anything_where_hosts_cannot_be_powered(monkeypatch, lab_pair):
    from mailha.errors import BadInput

    hosts = RecordingHosts()
    hosts.power_problem = lambda: "host-down powers a relay off and on, and this environment has no way to"
    with pytest.raises(BadInput, match=r"^drill host-down: host-down powers a relay off and on"):
        drill_on(monkeypatch, lab_pair, "host-down", hosts)
    assert hosts.calls == []
    drill_on(monkeypatch, lab_pair, "mta-crash", hosts)  # the other faults need no power
