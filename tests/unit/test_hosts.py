"""mailha.hosts: the pair's hosts over SSH, with a fake `ssh` on PATH that
writes down its arguments and answers as told (no network)."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import sys
from pathlib import Path

import pytest
import yaml

from mailha import faults, hosts, inventory
from mailha import pair as pair_mod
from mailha.errors import BadInput, MailhaError
from mailha.lab import PodmanHosts

FAKE_SSH = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
answer = json.load(open(os.environ["FAKE_SSH_ANSWER"]))
sys.stdout.buffer.write(answer.get("stdout", "").encode("latin-1"))
sys.stderr.write(answer.get("stderr", ""))
if answer.get("sleep"):
    import time; time.sleep(answer["sleep"])
sys.exit(answer.get("code", 0))
"""

SSH_CONTRACT = {
    "environment": "existing",
    "connection": "ssh",
    "ssh": {
        "user": "admin",
        "port": 2222,
        "private_key_file": "/keys/id_ed25519",
        "known_hosts_file": "/keys/known_hosts",
    },
    "network": {"cidr": "192.0.2.0/24", "gateway": "198.51.100.5"},
    "floating_ip": "192.0.2.100",
    "dns": {
        "zone": "example.com",
        "nameserver": "192.0.2.10",
        "sending_host": "mta.example.com",
        "submission_host": "smtp.example.com",
    },
    "load_balancer": {"host": "lb", "address": "192.0.2.20", "ports": [25, 587]},
    "hosts": {
        "mx1": {
            "address": "192.0.2.11",
            "fqdn": "mx1.example.com",
            "target": "192.0.2.11",
            "groups": ["mail"],
            "vrrp_priority": 150,
            "vrrp_state": "MASTER",
        },
        "mx2": {
            "address": "192.0.2.12",
            "fqdn": "mx2.example.com",
            "target": "192.0.2.12",
            "groups": ["mail"],
            "vrrp_priority": 100,
            "vrrp_state": "BACKUP",
        },
        "lb": {
            "address": "192.0.2.20",
            "fqdn": "lb.example.com",
            "target": "192.0.2.20",
            "groups": ["loadbalancer"],
            "vrrp_priority": None,
            "vrrp_state": None,
        },
        "sink": {
            "address": "192.0.2.30",
            "fqdn": "sink.example.com",
            "target": "192.0.2.30",
            "groups": ["recipient"],
            "vrrp_priority": None,
            "vrrp_state": None,
        },
    },
}


def make_pair(tmp_path: Path, settings: dict | None = None, contract: dict | None = None) -> pair_mod.Pair:
    path = tmp_path / "repo" / "inventories" / "existing" / "hosts.yml"
    inventory.write(inventory.build(contract or SSH_CONTRACT), path)
    settings_file = path.parent / "group_vars" / "all" / "mailha.yml"
    settings_file.parent.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(yaml.safe_dump(settings or {"mailha_sender_domain": "news.example.com"}))
    return pair_mod.load(path)


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    """`ssh` on PATH is the fake; answer(...) sets its next answers, calls() reads its argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(FAKE_SSH)
    ssh.chmod(0o755)
    log, answer_file = tmp_path / "ssh.log", tmp_path / "answer.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    monkeypatch.setenv("FAKE_SSH_ANSWER", str(answer_file))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)

    class Fake:
        @staticmethod
        def answer(**kwargs) -> None:
            answer_file.write_text(json.dumps(kwargs))

        @staticmethod
        def calls() -> list[list[str]]:
            return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    Fake.answer()
    return Fake


def remote(argv: list[str]) -> list[str]:
    """The command the fake ssh was asked to run on the host, as argv."""
    return shlex.split(argv[-1])


def test_exec_logs_in_as_the_inventory_says_and_becomes_root_with_sudo(tmp_path, fake_ssh):
    pair = make_pair(tmp_path)
    fake_ssh.answer(stdout="running\n")
    result = hosts.SshHosts(pair).exec("192.0.2.11", "systemctl", "is-system-running")
    assert result.stdout == "running\n"
    (argv,) = fake_ssh.calls()
    assert argv[argv.index("-p") : argv.index("-p") + 2] == ["-p", "2222"]
    assert argv[argv.index("-l") : argv.index("-l") + 2] == ["-l", "admin"]
    assert argv[argv.index("-i") : argv.index("-i") + 4] == ["-i", "/keys/id_ed25519", "-o", "IdentitiesOnly=yes"]
    assert "BatchMode=yes" in argv and "UserKnownHostsFile=/keys/known_hosts" in argv
    assert "StrictHostKeyChecking=yes" in argv
    control = next(a for a in argv if a.startswith("ControlPath="))
    directory = Path(control.split("=", 1)[1]).parent
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700 and directory.stat().st_uid == os.getuid()
    assert argv[-3:-1] == ["--", "192.0.2.11"]
    assert remote(argv) == ["sudo", "-n", "--", "systemctl", "is-system-running"]


def test_root_logs_in_without_sudo_and_odd_words_arrive_as_one_argument_each(tmp_path, fake_ssh):
    contract = json.loads(json.dumps(SSH_CONTRACT))
    contract["ssh"] = {"user": "root", "port": 22}
    pair = make_pair(tmp_path, contract=contract)
    words = ("sh", "-c", "echo 'a b'; rm -rf / #", "$HOME", "x\ny")
    hosts.SshHosts(pair).exec("192.0.2.12", *words)
    (argv,) = fake_ssh.calls()
    assert remote(argv) == list(words)
    assert "-i" not in argv and not any(a.startswith("UserKnownHostsFile") for a in argv)


def test_a_failed_login_a_failed_command_and_a_hang_are_one_line_each(tmp_path, fake_ssh):
    ssh = hosts.SshHosts(make_pair(tmp_path))
    fake_ssh.answer(code=255, stderr="ssh: connect to host 192.0.2.11 port 2222: Connection timed out\n")
    with pytest.raises(MailhaError, match=r"^ssh to mx1 failed: ssh: connect to host .* timed out$"):
        ssh.exec("192.0.2.11", "true")
    fake_ssh.answer(code=1, stderr="pkill: nothing\n")
    with pytest.raises(MailhaError, match=r"^pkill on mx1 failed: pkill: nothing$"):
        ssh.exec("192.0.2.11", "pkill", "-9", "master")
    assert ssh.exec("192.0.2.11", "pkill", check=False).returncode == 1
    fake_ssh.answer(sleep=5)
    with pytest.raises(MailhaError, match=r"^tail on mx1 over ssh did not finish within 0.5s$"):
        ssh.exec("192.0.2.11", "tail", "log", timeout=0.5)
    with pytest.raises(MailhaError, match="is no host of inventory"):
        ssh.exec("203.0.113.9", "true")


def test_read_returns_the_files_bytes_unchanged(tmp_path, fake_ssh):
    raw = "".join(chr(i) for i in range(256))
    fake_ssh.answer(stdout=raw)
    data = hosts.SshHosts(make_pair(tmp_path)).read("192.0.2.30", "/var/mail/sink/new/1")
    assert data == raw.encode("latin-1")
    assert remote(fake_ssh.calls()[0])[-3:] == ["cat", "--", "/var/mail/sink/new/1"]


def test_booted_is_false_while_the_host_cannot_be_reached(tmp_path, fake_ssh):
    ssh = hosts.SshHosts(make_pair(tmp_path))
    fake_ssh.answer(code=255, stderr="No route to host")
    assert ssh.booted("192.0.2.11") is False
    fake_ssh.answer(stdout="degraded\n", code=1)
    assert ssh.booted("192.0.2.11") is True


def test_host_down_needs_power_commands_and_runs_them_with_the_host_name(tmp_path, fake_ssh, monkeypatch):
    without = hosts.SshHosts(make_pair(tmp_path / "a"))
    assert "set mailha_host_power_off and mailha_host_power_on" in without.power_problem()
    assert "existing environment" in without.power_problem()
    with pytest.raises(MailhaError, match="set mailha_host_power_off"):
        without.stop("192.0.2.11")
    assert faults.fault_for("host-down", without).problem() == without.power_problem()
    assert faults.fault_for("mta-crash", without).problem() is None

    log = tmp_path / "power.log"
    script = tmp_path / "power"
    script.write_text(f'#!/bin/sh\necho "$PWD $*" >> {log}\n[ "$1" != fail ]\n')
    script.chmod(0o755)
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setattr(hosts.project, "project_dir", lambda: project)
    settings = {
        "mailha_sender_domain": "news.example.com",
        "mailha_host_power_off": [str(script), "off", "{host}"],
        "mailha_host_power_on": [str(script), "fail", "{host}"],
    }
    ssh = hosts.SshHosts(make_pair(tmp_path / "b", settings))
    assert ssh.power_problem() is None
    ssh.stop("192.0.2.11")
    assert log.read_text() == f"{project} off mx1\n"
    with pytest.raises(MailhaError, match=r"^mailha_host_power_on for mx1 failed: exit 1$"):
        ssh.start("192.0.2.11")


def test_a_power_setting_that_is_no_list_of_words_is_refused(tmp_path):
    for bad in (["poweroff", ""], "poweroff {host}", [1, 2]):
        with pytest.raises(BadInput, match="mailha_host_power_off"):
            make_pair(tmp_path, {"mailha_host_power_off": bad})


def test_the_partition_keeps_the_controllers_ssh_and_heals_from_a_timer_set_first(tmp_path, fake_ssh):
    ssh = hosts.SshHosts(make_pair(tmp_path))
    ssh.cut("192.0.2.11", heal_after=300)
    ssh.heal("192.0.2.11")
    cut, heal = (remote(argv) for argv in fake_ssh.calls())
    assert cut[:4] == ["sudo", "-n", "--", "sh"]
    script, unit, seconds, healing, rules = cut[5], cut[7], cut[8], cut[9], cut[10]
    assert (unit, seconds, healing) == (hosts.PARTITION_HEAL_UNIT, "300s", hosts.PARTITION_HEAL)
    assert script.index("systemd-run") < script.index('nft "$4"'), "the heal timer must exist before the cut"
    assert "--on-active=" in script
    assert "ip saddr 198.51.100.5 tcp dport 2222 accept" in rules
    assert "ip daddr 198.51.100.5 tcp sport 2222 accept" in rules
    assert "arp saddr ip 198.51.100.5 accept" in rules and "arp daddr ip 198.51.100.5 accept" in rules
    assert heal[-2:] == [hosts.PARTITION_HEAL_UNIT, hosts.PARTITION_HEAL]
    assert "systemctl stop" in heal[5]


def test_every_partition_chain_drops_by_default_ahead_of_the_host_firewall():
    chains = re.findall(r"add chain [^{]*\{[^}]*\}", hosts.partition_rules("10.213.0.1", 22))
    assert len(chains) == 4
    assert all("priority -50; policy drop;" in chain for chain in chains)
    for table in ("inet", "arp"):
        assert f"delete table {table} {hosts.PARTITION_TABLE}" in hosts.PARTITION_HEAL


def test_hosts_for_follows_the_inventorys_connection(tmp_path, fake_ssh):
    assert isinstance(hosts.hosts_for(make_pair(tmp_path / "ssh")), hosts.SshHosts)
    contract = json.loads(json.dumps(SSH_CONTRACT))
    contract["connection"], contract["ssh"] = "podman", None
    assert isinstance(hosts.hosts_for(make_pair(tmp_path / "podman", contract=contract)), PodmanHosts)
    pair = make_pair(tmp_path / "other")
    pair.vars["ansible_connection"] = "winrm"
    with pytest.raises(MailhaError, match=r"reached over 'winrm'; drills reach hosts over ssh or podman"):
        hosts.hosts_for(pair)
    assert isinstance(hosts.SshHosts(make_pair(tmp_path / "p")), faults.Hosts)


def test_a_drill_without_a_recipient_side_is_refused_in_one_line(tmp_path, fake_ssh):
    contract = json.loads(json.dumps(SSH_CONTRACT))
    del contract["hosts"]["sink"]
    pair = make_pair(tmp_path, contract=contract)
    with pytest.raises(MailhaError, match=r"no host in group recipient.*sink role"):
        hosts.recipient_side(pair, hosts.SshHosts(pair))
