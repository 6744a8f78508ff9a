"""keepalived: a real VRRP pair elects, fails over, and does not preempt."""

import datetime
import re

import pytest

VIP = "10.213.1.100"
LOG = "/var/log/mailha/vrrp-transitions.log"
FAIL_FILE = "/run/mailha-fail"
# The health agent's split-brain guard writes it (keepalived_track_files' default).
SPLIT_BRAIN_FILE = "/run/mailha/split-brain"
PRIORITY_FILE = "/etc/keepalived/mailha-priority"
PRIMARY, STANDBY = "molecule-vrrp1", "molecule-vrrp2"
LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) VI_MAIL (MASTER|BACKUP|FAULT|STOP) (\d+)$")

# One podman exec per command: the Ansible backend molecule would pick for a
# podman connection runs a whole module per command.
testinfra_hosts = [f"podman://{PRIMARY}", f"podman://{STANDBY}"]


def holds_vip(node):
    return node.run(f"ip -o -4 addr show dev eth0 | grep -q ' {VIP}/'").rc == 0


def transitions(node):
    text = node.run(f"cat {LOG}").stdout
    return [LINE.match(line).groups() for line in text.splitlines()]


def wait_for(node, shell_condition, seconds):
    """Poll inside the node (no exec round trips), bounded by seconds."""
    tries = int(seconds / 0.05)
    loop = f"for i in $(seq {tries}); do if {shell_condition}; then exit 0; fi; sleep 0.05; done; exit 1"
    return node.run("sh -c %s", loop).rc == 0


def log_has(state, priority):
    return f"grep -q ' VI_MAIL {state} {priority}$' {LOG}"


def epoch(stamp):
    parsed = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    return parsed.replace(tzinfo=datetime.UTC).timestamp()


def dumped_priority(node):
    """Ask the running keepalived for its data dump and read the priority."""
    node.run("rm -f /tmp/keepalived.data")
    node.run_expect([0], "kill -s $(keepalived --signum=DATA) $(cat /run/keepalived.pid)")
    assert wait_for(node, "grep -q 'Effective priority' /tmp/keepalived.data", 5)
    match = re.search(r"^\s*Priority = (\d+)$", node.file("/tmp/keepalived.data").content_string, re.M)
    return int(match.group(1))


def test_service_and_files(host):
    assert host.service("keepalived").is_enabled
    assert host.service("keepalived").is_running
    host.run_expect([0], "keepalived --config-test -f /etc/keepalived/keepalived.conf")
    notify = host.file("/usr/local/sbin/mailha-vrrp-notify")
    assert notify.user == "root" and notify.mode == 0o755
    assert not host.file(PRIORITY_FILE).exists
    # The track file's directory exists at every boot (tmpfiles), so keepalived keeps tracking it.
    assert "d /run/mailha 0755 root root -" in host.file("/etc/tmpfiles.d/mailha-keepalived.conf").content_string
    assert host.file("/run/mailha").is_directory
    assert "does not exist - removing" not in host.run("journalctl -u keepalived --no-pager").stdout
    # Both of the health agent's files are tracked: the MTA's and the split-brain guard's.
    conf = host.file("/etc/keepalived/keepalived.conf").content_string
    for name, path in (("mta_watch", "/run/mailha/mta-fault"), ("split_brain", SPLIT_BRAIN_FILE)):
        assert f'track_file {name} {{\n  file "{path}"\n  weight 0\n}}' in conf
    assert "  track_file {\n    mta_watch\n    split_brain\n  }\n" in conf


def test_nopreempt_renders_state_backup_everywhere(host):
    conf = host.file("/etc/keepalived/keepalived.conf").content_string
    assert "  state BACKUP\n  nopreempt\n" in conf
    assert "  version 3\n" in conf and "  advert_int 0.2\n" in conf
    # Only the intended BACKUP delays its start (first-election tie-break).
    delayed = "vrrp_startup_delay 2" in conf
    assert delayed == (host.backend.get_hostname() == STANDBY)


def test_unicast_peers_render_check_unicast_src(host):
    # With unicast peers set, adverts from any other source are ignored.
    conf = host.file("/etc/keepalived/keepalived.conf").content_string
    assert re.search(r"^  check_unicast_src\n(?:.*\n)*?  unicast_peer \{\n", conf, re.M)


def test_failover_and_no_preempt(host):
    if host.backend.get_hostname() != PRIMARY:
        pytest.skip("the pair scenario runs once, driven from the primary")
    primary, standby = host, host.get_host(f"podman://{STANDBY}")

    # First election: the priority decided although both started as BACKUP.
    assert wait_for(primary, f"ip -o -4 addr show dev eth0 | grep -q ' {VIP}/'", 10)
    assert not holds_vip(standby)
    assert ("MASTER", "150") in [(s, p) for _, s, p in transitions(primary)]
    assert ("BACKUP", "100") in [(s, p) for _, s, p in transitions(standby)]
    assert "MASTER" not in [s for _, s, _ in transitions(standby)]
    # Hooks got the state in lower case; the failing one was logged, not fatal.
    assert "master" in primary.file("/run/mailha-hook.log").content_string.split()
    assert "/bin/false" in primary.run("journalctl -t mailha-vrrp-notify --no-pager").stdout

    # Fail the primary's track script and time the move.
    started = float(primary.run(f"date +%s.%N && touch {FAIL_FILE}").stdout.strip())
    try:
        moved = wait_for(standby, f"ip -o -4 addr show dev eth0 | grep -q ' {VIP}/'", 3)
        seen = float(standby.run("date +%s.%N").stdout.strip())
        assert moved, "the VIP did not reach the standby within 3 s"
        assert wait_for(primary, log_has("FAULT", "150"), 3)
        assert not holds_vip(primary)
        master_at = max(epoch(t) for t, s, _ in transitions(standby) if s == "MASTER")
        fault_at = max(epoch(t) for t, s, _ in transitions(primary) if s == "FAULT")
        print(f"\nVIP move after the track script failed: standby MASTER "
              f"{master_at - started:.3f} s after the fault was injected "
              f"(primary FAULT at {fault_at - started:.3f} s; standby seen holding "
              f"the VIP by polling at {seen - started:.3f} s, an upper bound)")
        assert "master" in standby.file("/run/mailha-hook.log").content_string.split()
    finally:
        primary.run(f"rm -f {FAIL_FILE}")

    # Recovery: rise 2 brings the primary back as BACKUP; nopreempt keeps the
    # VIP on the standby, and exactly one node holds it.
    assert wait_for(primary, f"tail -n 1 {LOG} | grep -q ' VI_MAIL BACKUP 150$'", 10)
    primary.run("sleep 2")
    assert holds_vip(standby) and not holds_vip(primary)
    assert transitions(standby)[-1][1] == "MASTER"

    # Priority override: the file wins over the inventory value after a reload
    # and goes away without a trace; a reload moves nothing.
    assert dumped_priority(primary) == 150
    primary.run_expect([0], f"echo 'priority 120' > {PRIORITY_FILE} && systemctl reload keepalived")
    try:
        primary.run("sleep 1")
        assert dumped_priority(primary) == 120
    finally:
        primary.run(f"rm -f {PRIORITY_FILE} && systemctl reload keepalived")
    primary.run("sleep 1")
    assert dumped_priority(primary) == 150
    assert holds_vip(standby) and not holds_vip(primary)


def test_a_killed_keepalived_releases_the_vip_and_comes_back(host):
    """kill -9 leaves keepalived no chance to clean up: the drop-in's
    ExecStopPost releases the VIP (no second holder), systemd restarts the
    daemon, and it returns as BACKUP while the peer keeps the VIP."""
    if host.backend.get_hostname() != PRIMARY:
        pytest.skip("the pair scenario runs once, driven from the primary")
    nodes = [host, host.get_host(f"podman://{STANDBY}")]
    holder = next((n for n in nodes if holds_vip(n)), None)
    assert holder is not None, "no node holds the VIP before the crash"
    peer = nodes[1] if holder is nodes[0] else nodes[0]
    before = int(holder.run("systemctl show -p NRestarts --value keepalived").stdout.strip())
    # SIGKILL to every keepalived process of the unit at once: with pkill,
    # one by one, a parent still alive for a moment may restart its killed
    # VRRP child, which then stops cleanly and releases the VIP itself.
    holder.run_expect([0], "systemctl kill --kill-whom=all --signal=KILL keepalived")
    # Bounds, not speed targets (the benchmark measures the move): two
    # Molecule lanes share the machine.
    assert wait_for(peer, f"ip -o -4 addr show dev eth0 | grep -q ' {VIP}/'", 15), "the peer did not take the VIP"
    assert wait_for(holder, f"! ip -o -4 addr show dev eth0 | grep -q ' {VIP}/'", 15), "the VIP stayed behind"
    assert wait_for(holder, log_has("STOP", "0"), 15), holder.run(f"tail -n 5 {LOG}").stdout
    assert "released" in holder.run("journalctl -t mailha-vrrp-release --no-pager").stdout
    # systemd brings keepalived back; nopreempt keeps the VIP on the peer.
    assert wait_for(holder, f"tail -n 1 {LOG} | grep -q ' VI_MAIL BACKUP '", 20)
    assert int(holder.run("systemctl show -p NRestarts --value keepalived").stdout.strip()) == before + 1
    holder.run("sleep 1")
    assert holds_vip(peer) and not holds_vip(holder)


def test_a_demotion_in_the_split_brain_file_releases_the_vip(host):
    """1 in the split-brain guard's file (as its agent writes it, by rename)
    puts the holder in FAULT and the peer takes the VIP; 0 lets it return
    as BACKUP, and nopreempt keeps the VIP where it is."""
    if host.backend.get_hostname() != PRIMARY:
        pytest.skip("the pair scenario runs once, driven from the primary")
    nodes = [host, host.get_host(f"podman://{STANDBY}")]
    holder = next((n for n in nodes if holds_vip(n)), None)
    assert holder is not None, "no node holds the VIP before the demotion"
    peer = nodes[1] if holder is nodes[0] else nodes[0]
    write = f"printf '%s\\n' > {SPLIT_BRAIN_FILE}.new && mv {SPLIT_BRAIN_FILE}.new {SPLIT_BRAIN_FILE}"
    holder.run_expect([0], write % "1")
    try:
        assert wait_for(peer, f"ip -o -4 addr show dev eth0 | grep -q ' {VIP}/'", 3), "the peer did not take the VIP"
        assert wait_for(holder, f"tail -n 1 {LOG} | grep -q ' VI_MAIL FAULT '", 3)
        assert not holds_vip(holder)
    finally:
        holder.run(write % "0")
    assert wait_for(holder, f"tail -n 1 {LOG} | grep -q ' VI_MAIL BACKUP '", 20)
    holder.run(f"sleep 1 && rm -f {SPLIT_BRAIN_FILE}")
    assert holds_vip(peer) and not holds_vip(holder)
