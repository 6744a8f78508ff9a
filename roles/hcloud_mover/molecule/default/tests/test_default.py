"""hcloud_mover against the fake Hetzner API running in the relay itself:
the token file is root's 0600, the settings validate, the timer runs
fip-check, the recheck file starts the settled check, and `mailha-node fip-assign` puts the floating IP on this server
once (a second run reads and stops), never logs the token, and leaves the
floating IP alone while this host does not hold the address."""

import json
import shlex
import time

import pytest

testinfra_hosts = ["podman://molecule-hcloud"]

NODE = "/usr/local/bin/mailha-node"
CONF = "/etc/mailha/fip-mover.conf"
TOKEN_FILE = "/etc/mailha/hcloud-token"  # noqa: S105 - the path of the token, not one
ADDRESS = "203.0.113.10"
FIP, THIS_SERVER, PEER = 7, 2, 1
STATE = "/var/lib/hcloud-fake/state.json"
RECORD = "/var/lib/hcloud-fake/requests.jsonl"


def fake_state(host):
    return json.loads(host.file(STATE).content_string)


def server_of(host):
    (fip,) = [f for f in fake_state(host)["floating_ips"] if f["id"] == FIP]
    return fip["server"]


def requests(host):
    """What the fake answered since it was (re)started, in order."""
    text = host.run(f"cat {RECORD} 2>/dev/null").stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assigns(host):
    return [r for r in requests(host) if r["method"] == "POST" and r["path"].endswith("/actions/assign")]


def journal_cursor(host):
    out = host.check_output("journalctl --show-cursor -n 0 --no-pager")
    return out.split("-- cursor: ", 1)[1].strip()


def journal_since(host, cursor):
    host.run("journalctl --sync")
    return host.check_output(f"journalctl --no-pager -o cat --after-cursor {shlex.quote(cursor)}")


@pytest.fixture
def fresh_fake(host):
    """The fake restarted from its first state (floating IP on the peer),
    with an empty request record, and no timer run meanwhile."""
    host.check_output("systemctl stop mailha-fip-check.timer mailha-fip-check.service hcloud-fake.service")
    host.check_output(f"cp /opt/hcloud-fake/state.initial.json {STATE} && rm -f {RECORD}")
    host.check_output("systemctl start hcloud-fake.service")
    for _ in range(50):
        if host.socket("tcp://127.0.0.1:8780").is_listening:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the fake API did not listen on 127.0.0.1:8780")
    assert server_of(host) == PEER
    yield
    host.run("systemctl start mailha-fip-check.timer")


@pytest.fixture
def holding(host):
    host.check_output(f"ip addr replace {ADDRESS}/32 dev eth0")
    yield


@pytest.fixture
def not_holding(host):
    host.run(f"ip addr del {ADDRESS}/32 dev eth0")
    yield
    host.check_output(f"ip addr replace {ADDRESS}/32 dev eth0")


def the_token(host):
    return host.file("/opt/hcloud-fake/token").content_string.strip()


def test_token_file_is_roots_and_private(host):
    token = host.file(TOKEN_FILE)
    assert token.is_file and not token.is_symlink
    assert (token.user, token.group, token.mode) == ("root", "root", 0o600)
    assert token.content_string.strip() == the_token(host)


def test_sdk_installed(host):
    assert host.package("python3-hcloud").is_installed
    assert host.run("python3 -c 'import hcloud'").rc == 0


def test_settings_validate_and_point_at_the_fake(host):
    conf = host.file(CONF)
    assert (conf.user, conf.group, conf.mode) == ("root", "root", 0o644)
    checked = host.run(f"{NODE} check-config fip-mover {CONF}")
    assert checked.rc == 0, checked.stderr
    lines = set(conf.content_string.splitlines())
    for line in (
        f"floating_ip_id={FIP}",
        f"server_id={THIS_SERVER}",
        f"address={ADDRESS}",
        "api_endpoint=http://127.0.0.1:8780/v1",
        "api_ca_file=",
        f"token_file={TOKEN_FILE}",
        "total_seconds=20",
    ):
        assert line in lines
    assert the_token(host) not in conf.content_string


def test_no_api_ca_file_without_hcloud_mover_api_ca_file(host):
    """The scenario's fake is http on loopback: no CA is written."""
    assert not host.file("/etc/mailha/hcloud-api-ca.pem").exists


def test_timer_enabled_and_active(host):
    timer = host.service("mailha-fip-check.timer")
    assert timer.is_enabled
    assert timer.is_running
    unit = host.file("/etc/systemd/system/mailha-fip-check.service").content_string
    assert f"ExecStart={NODE} fip-check" in unit


def test_fip_assign_moves_the_floating_ip_once_and_never_logs_the_token(host, fresh_fake, holding):
    cursor = journal_cursor(host)
    first = host.run(f"{NODE} fip-assign")
    assert first.rc == 0, first.stderr
    assert server_of(host) == THIS_SERVER
    assert [r["body"] for r in assigns(host)] == [{"server": THIS_SERVER}]
    calls_after_first = len(requests(host))

    second = host.run(f"{NODE} fip-assign")
    assert second.rc == 0, second.stderr
    new = requests(host)[calls_after_first:]
    # One read that finds the floating IP here, one that finds no action
    # running on it (a notify settles), and nothing else.
    assert [(r["method"], r["path"]) for r in new] == [
        ("GET", f"/v1/floating_ips/{FIP}"),
        ("GET", f"/v1/floating_ips/{FIP}/actions"),
    ]
    assert len(assigns(host)) == 1
    assert server_of(host) == THIS_SERVER

    journal = journal_since(host, cursor)
    assert f"POST floating_ips/{FIP}/actions/assign server={THIS_SERVER}" in journal
    assert f"floating IP {FIP} ({ADDRESS}) is on this server {THIS_SERVER}" in journal
    token = the_token(host)
    for text in (journal, first.stdout, first.stderr, second.stdout, second.stderr):
        assert token not in text
    syslog = host.run("cat /var/log/syslog /var/log/daemon.log 2>/dev/null").stdout
    assert token not in syslog


def test_timer_service_repairs_a_drifted_assignment(host, fresh_fake, holding):
    """The unit the timer starts runs under its sandbox and assigns."""
    started = host.run("systemctl start mailha-fip-check.service")
    assert started.rc == 0, started.stderr
    assert host.check_output("systemctl show -p Result --value mailha-fip-check.service") == "success"
    assert server_of(host) == THIS_SERVER
    assert len(assigns(host)) == 1


def test_the_agents_recheck_file_starts_a_settled_check_that_assigns(host, fresh_fake, holding):
    """What the health agent does when a split brain it won ends: it writes
    the recheck file, and the path unit starts the settled check at once."""
    path = host.service("mailha-fip-recheck.path")
    assert path.is_enabled and path.is_running
    unit = host.file("/etc/systemd/system/mailha-fip-recheck.service").content_string
    assert f"ExecStart={NODE} fip-check --settle" in unit
    cursor = journal_cursor(host)
    host.check_output("mkdir -p /run/mailha && echo \"$(date +%s) the split brain ended\" > /run/mailha/fip-recheck")
    deadline = time.monotonic() + 30
    while server_of(host) != THIS_SERVER and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server_of(host) == THIS_SERVER
    assert [r["body"] for r in assigns(host)] == [{"server": THIS_SERVER}]
    for _ in range(50):
        if host.check_output("systemctl show -p ActiveState --value mailha-fip-recheck.service") == "inactive":
            break
        time.sleep(0.1)
    assert host.check_output("systemctl show -p Result --value mailha-fip-recheck.service") == "success"
    journal = journal_since(host, cursor)
    assert f"POST floating_ips/{FIP}/actions/assign server={THIS_SERVER}" in journal
    assert the_token(host) not in journal


def test_fip_assign_leaves_the_floating_ip_alone_without_the_address(host, fresh_fake, not_holding):
    cursor = journal_cursor(host)
    result = host.run(f"{NODE} fip-assign")
    assert result.rc == 0, result.stderr
    assert requests(host) == []
    assert server_of(host) == PEER
    assert f"this host does not hold {ADDRESS}: floating IP {FIP} left alone" in journal_since(host, cursor)


def test_keepalived_accepts_the_notify_lines(host):
    """The lines the README tells the integrator to set, rendered by the
    keepalived role's template, pass keepalived's own config test."""
    conf = "/etc/keepalived/mailha-mover-check.conf"
    text = host.file(conf).content_string
    assert f'notify_master "{NODE} fip-assign"' in text
    assert f'notify_master_rx_lower_pri "{NODE} fip-assign"' in text
    tested = host.run(f"keepalived --config-test -f {conf}")
    assert tested.rc == 0, tested.stdout + tested.stderr
