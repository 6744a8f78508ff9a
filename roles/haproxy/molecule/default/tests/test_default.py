"""Real SMTP greetings through the load balancer, health-check failover,
the standby fallback (a relay that refuses or a host that went down costs
the client nothing), the runtime API and the metrics endpoint."""

import json
import os
import subprocess
import time

import pytest
import testinfra

# podman exec directly: faster than through Ansible, which the polls need.
testinfra_hosts = ["podman://molecule-haproxy"]

LB = "10.213.1.51"
BACKENDS = {"be1": "10.213.1.52", "be2": "10.213.1.53"}
SOCKET = "/run/haproxy/admin.sock"
CONFIG = "/etc/haproxy/haproxy.cfg"
FENCED = "/etc/haproxy/mailha-fenced-servers"

# Reads one greeting line from host:port (stdlib only, bounded by a timeout).
GREETING = (
    "python3 -c 'import socket,sys; "
    "s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); "
    'print(s.makefile("rb").readline().decode().strip())\' %s %s'
)

# Inside the balancer: connect every 0.1 s until the greeting names argv[1],
# for at most argv[2] seconds; print the seconds it took, or exit 1.
POLL_UNTIL = """
import socket, sys, time
start = time.monotonic()
while time.monotonic() - start < float(sys.argv[2]):
    try:
        with socket.create_connection(("10.213.1.51", 25), timeout=1) as s:
            if s.makefile("rb").readline().decode().startswith("220 " + sys.argv[1] + " "):
                print(round(time.monotonic() - start, 2))
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
"""


def other(name):
    return testinfra.get_host(f"podman://molecule-haproxy-{name}")


def greeting(host, port=25, address=LB):
    return host.check_output(GREETING, address, str(port))


def api(host, command):
    return host.check_output("echo %s | socat stdio %s", command, SOCKET)


def server_status(host, backend, server):
    """Operational status from `show stat` (UP, DOWN, DRAIN, ...)."""
    for line in api(host, "show stat").splitlines():
        fields = line.split(",")
        if fields[:2] == [backend, server]:
            return fields[17]
    raise AssertionError(f"{backend}/{server} not in show stat")


def sessions(host):
    """Total sessions (stot) of every server, keyed by (backend, server)."""
    lines = api(host, "show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    return {
        (row["pxname"], row["svname"]): int(row["stot"])
        for row in rows
        if row["pxname"] in ("smtp", "submission") and row["svname"] not in ("FRONTEND", "BACKEND")
    }


def wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def set_active(name):
    """Make `name` the only backend whose agent answers 200 on /active."""
    for backend in BACKENDS:
        state = "touch" if backend == name else "rm -f"
        other(backend).check_output(f"{state} /run/active")


@pytest.fixture
def be1_active(host):
    set_active("be1")
    assert wait_for(lambda: server_status(host, "smtp", "be1").startswith("UP"), 5)
    assert wait_for(lambda: server_status(host, "smtp", "be2").startswith("DOWN"), 5)
    yield
    set_active("be1")


def test_configuration_is_valid(host):
    host.check_output("haproxy -c -f /etc/haproxy/haproxy.cfg")


def test_haproxy_runs_and_listens(host):
    assert host.service("haproxy").is_enabled
    assert host.service("haproxy").is_running
    for port in (25, 587):
        assert host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_only_the_active_backend_gets_traffic(host, be1_active):
    for _ in range(5):
        assert greeting(host).startswith("220 be1 ")
    assert greeting(host, port=587).startswith("220 be1 ")


def test_proxy_header_carries_the_real_client_address(host, be1_active):
    assert greeting(host) == f"220 be1 {LB} ESMTP test relay"
    # A client on another host: the relay sees that host, not the balancer.
    assert greeting(other("be2")) == f"220 be1 {BACKENDS['be2']} ESMTP test relay"


def test_traffic_follows_the_active_agent_within_five_seconds(host, be1_active):
    set_active("be2")
    poll = host.run("python3 -c %s be2 5", POLL_UNTIL)
    assert poll.rc == 0, "connections still go to be1 5 s after be2 became active"
    print(f"connections went to be2 {poll.stdout.strip()} s after the switch")
    assert greeting(host).startswith("220 be2 ")
    assert greeting(host, port=587).startswith("220 be2 ")


def test_runtime_api_shows_servers_state(host, be1_active):
    state = api(host, "show servers state")
    for backend in ("smtp", "submission"):
        for server, address in BACKENDS.items():
            assert f" {backend} " in state and f" {server} {address} " in state
            assert f" {server}-standby {address} " in state


def test_runtime_api_drains_a_server(host, be1_active):
    try:
        assert api(host, "set server smtp/be1 state drain").strip() == ""
        assert server_status(host, "smtp", "be1") == "DRAIN"
    finally:
        api(host, "set server smtp/be1 state ready")
    assert server_status(host, "smtp", "be1").startswith("UP")


def http_get(host, path, address=LB):
    """(status, body) of GET http://<address>:8404<path>, run on host."""
    out = host.check_output(
        "python3 -c 'import sys, urllib.request; r = urllib.request.urlopen(sys.argv[1], timeout=5); "
        "print(r.status); print(r.read().decode())' %s",
        f"http://{address}:8404{path}",
    )
    status, _, body = out.partition("\n")
    return int(status), body


def test_prometheus_metrics(host):
    status, body = http_get(host, "/metrics")
    assert status == 200
    assert "haproxy_process_start_time_seconds" in body
    assert 'haproxy_server_status{proxy="smtp",server="be1"' in body
    assert 'haproxy_server_status{proxy="smtp",server="be1-standby"' in body


def test_stats_page(host):
    status, body = http_get(host, "/")
    assert status == 200
    assert "Statistics Report" in body


def test_stats_listen_on_the_configured_address_only(host):
    # The scenario binds them to the balancer's own address (the firewall
    # opens it to the controller); never every address, nor loopback too.
    listening = [line.split()[3] for line in host.check_output("ss -Hltn").splitlines()]
    assert [local for local in listening if local.endswith(":8404")] == [f"{LB}:8404"], listening
    assert host.run("python3 -c %s 127.0.0.1 8404", CONNECT).stdout.strip() == "refused"
    # Reachable from another host at that address.
    status, body = http_get(other("be2"), "/metrics")
    assert status == 200 and "haproxy_process_start_time_seconds" in body


# Opens argv[3] connections to argv[1]:argv[2] one after the other, each
# reading the greeting (3 s at most); prints [first 3 bytes or "closed",
# seconds] for each.
BURST = """
import json, socket, sys, time
results = []
for _ in range(int(sys.argv[3])):
    start = time.monotonic()
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
            line = s.makefile("rb").readline().decode()
    except TimeoutError:
        line = "timeout"
    except OSError:
        line = ""
    results.append([line[:3] or "closed", round(time.monotonic() - start, 3)])
print(json.dumps(results))
"""

# Connects to argv[1]:argv[2]; prints "open", "refused" or "error <errno>".
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError as err:
    print(f"error {err.errno}")
"""


def converge(**overrides):
    """Runs the scenario's converge.yml with extra vars; returns the process."""
    environment = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    playbook = os.path.join(environment["MOLECULE_SCENARIO_DIRECTORY"], "converge.yml")
    return subprocess.run(
        ["ansible-playbook", "-i", environment["MOLECULE_INVENTORY_FILE"], playbook, "-e", json.dumps(overrides)],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
        check=False,
    )


def assert_converged(process):
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-2000:]


def burst(client, count, port=25):
    result = client.check_output("python3 -c %s %s %s %s", BURST, LB, str(port), str(count))
    return json.loads(result)


def test_a_client_opening_connections_too_fast_is_refused(host, be1_active):
    limit = 5
    try:
        assert_converged(converge(haproxy_client_connection_rate_limit=limit))
        assert f"sc0_conn_rate gt {limit} }}" in host.file(CONFIG).content_string
        assert wait_for(lambda: server_status(host, "smtp", "be1").startswith("UP"), 5)
        assert wait_for(lambda: server_status(host, "smtp", "be2").startswith("DOWN"), 5)
        noisy = burst(other("be2"), limit + 3)
        print(noisy)
        # The first ones are served; from the (limit + 1)th on, closed at
        # once, not left waiting.
        assert [answer for answer, _ in noisy[:limit]] == ["220"] * limit, noisy
        assert [answer for answer, _ in noisy[limit:]] == ["closed"] * 3, noisy
        assert all(seconds < 1 for _, seconds in noisy[limit:]), noisy
        # Per client: another address is still served meanwhile.
        assert greeting(host).startswith("220 be1 ")
    finally:
        assert_converged(converge())
    assert "sc0_conn_rate gt 2000 }" in host.file(CONFIG).content_string


def test_a_fenced_server_is_disabled_until_it_is_unfenced(host, be1_active):
    try:
        host.check_output("echo be2 > %s", FENCED)
        assert_converged(converge())
        config = host.file(CONFIG).content_string
        for port in (10025, 10587):
            assert f"server be2 {BACKENDS['be2']}:{port} disabled\n" in config
            assert f"server be1 {BACKENDS['be1']}:{port}\n" in config
            # Its standby entry too: a fenced relay gets nothing.
            assert f"server be2-standby {BACKENDS['be2']}:{port} backup disabled\n" in config
            assert f"server be1-standby {BACKENDS['be1']}:{port} backup\n" in config
        # Even with its agent answering 200, no traffic goes to it.
        other("be2").check_output("touch /run/active")
        assert wait_for(lambda: server_status(host, "smtp", "be1").startswith("UP"), 5)
        time.sleep(1)  # five check intervals
        for backend in ("smtp", "submission"):
            assert server_status(host, backend, "be2") == "MAINT"
            assert server_status(host, backend, "be2-standby") == "MAINT"
        before = sessions(host)
        for _ in range(4):
            assert greeting(host).startswith("220 be1 ")
        # No active relay left (be1 not active, be2 fenced): be1's standby
        # entry takes the traffic, never be2's.
        other("be1").check_output("rm -f /run/active")
        assert wait_for(lambda: server_status(host, "smtp", "be1").startswith("DOWN"), 5)
        for _ in range(4):
            assert greeting(host).startswith("220 be1 ")
        # Nor when be1 refuses too: the client is refused, be2 gets nothing.
        stop_relay("be1")
        refused = sequence(host, 2, timeout=10)
        print(refused)
        assert all(not answer.startswith("220") for answer, _ in refused), refused
        after = sessions(host)
        for backend in ("smtp", "submission"):
            for server in ("be2", "be2-standby"):
                assert after[(backend, server)] == before[(backend, server)], (backend, server)
        assert after[("smtp", "be1-standby")] >= before[("smtp", "be1-standby")] + 4
    finally:
        start_relay("be1")
        host.check_output("rm -f %s", FENCED)
        set_active("be1")
        assert_converged(converge())
    assert " disabled" not in host.file(CONFIG).content_string
    # Back in the rotation: checked again, and it takes traffic when active.
    set_active("be2")
    assert wait_for(lambda: server_status(host, "smtp", "be2").startswith("UP"), 5), server_status(host, "smtp", "be2")
    assert wait_for(lambda: greeting(host).startswith("220 be2 "), 5)


# Connects argv[3] times to argv[1]:argv[2], one after the other, each
# waiting at most argv[4] s for the greeting, all within argv[5] s; prints
# [greeting line, or "closed", "refused", "timeout", "error ...", seconds]
# for each.
SEQUENCE = """
import json, socket, sys, time
address, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
timeout, budget = float(sys.argv[4]), float(sys.argv[5])
results, began = [], time.monotonic()
for _ in range(count):
    if time.monotonic() - began > budget:
        break
    start = time.monotonic()
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            line = s.makefile("rb").readline().decode().strip() or "closed"
    except ConnectionRefusedError:
        line = "refused"
    except TimeoutError:
        line = "timeout"
    except OSError as err:
        line = f"error {err}"
    results.append([line, round(time.monotonic() - start, 3)])
print(json.dumps(results))
"""

RELAY_COMMAND = "systemd-run --unit=fake-relay /usr/local/bin/fake_relay.py %s 10025 10587"
# Drops every packet from the balancer: to it, the relay's host is down
# (connections and checks time out).
HOST_DOWN = (
    "nft add table inet molecule_down && "
    "nft add chain inet molecule_down input '{ type filter hook input priority -10; policy accept; }' && "
    f"nft add rule inet molecule_down input ip saddr {LB} drop"
)


def sequence(client, count, port=25, timeout=10, budget=150):
    result = client.check_output(
        "python3 -c %s %s %s %s %s %s", SEQUENCE, LB, str(port), str(count), str(timeout), str(budget)
    )
    return json.loads(result)


def stop_relay(name):
    """The relay's MTA is gone: its ports refuse connections, its agent still
    answers 200 (on /active too, if it is active) as an agent that has not
    noticed yet would."""
    other(name).check_output("systemctl stop fake-relay")
    assert other(name).run("python3 -c %s 127.0.0.1 10025", CONNECT).stdout.strip() == "refused"


def start_relay(name):
    backend = other(name)
    if backend.run("systemctl is-active --quiet fake-relay").rc != 0:
        backend.run("systemctl reset-failed fake-relay")
        backend.check_output(RELAY_COMMAND, name)
    assert wait_for(lambda: backend.run("python3 -c %s 127.0.0.1 10025", CONNECT).stdout.strip() == "open", 10)


def all_up(host):
    return all(
        server_status(host, backend, server).startswith("UP")
        for backend in ("smtp", "submission")
        for server in ("be1", "be1-standby", "be2-standby")
    )


def test_normal_operation_uses_the_active_relay_only(host, be1_active):
    # The standby entries are up (their MTAs are healthy) and yet unused.
    assert wait_for(lambda: all_up(host), 10)
    before = sessions(host)
    for _ in range(10):
        assert greeting(host).startswith("220 be1 ")
    for _ in range(5):
        assert greeting(host, port=587).startswith("220 be1 ")
    after = sessions(host)
    expected = {key: 0 for key in before}
    expected[("smtp", "be1")] = 10
    expected[("submission", "be1")] = 5
    assert {key: after[key] - before[key] for key in before} == expected


def test_a_refusing_active_relay_is_covered_by_the_standby(host, be1_active):
    """The active relay's MTA dies (connections refused at once) while its
    agent still answers 200 on /active: no client through the balancer is
    refused, the standby answers every connection."""
    assert wait_for(lambda: all_up(host), 10)
    try:
        stop_relay("be1")
        for port in (25, 587):
            results = sequence(host, 50, port=port)
            print(port, results)
            assert len(results) == 50, results
            assert all(line.startswith("220 be2 ") for line, _ in results), results
            print(f"port {port}: slowest greeting after {max(seconds for _, seconds in results)} s")
        # The agent never said otherwise: be1 keeps being tried, and is
        # marked down again by every failed connection.
        assert other("be1").file("/run/active").exists
    finally:
        start_relay("be1")
    assert wait_for(lambda: greeting(host).startswith("220 be1 "), 10)


def test_a_host_that_went_down_is_covered_by_the_standby(host, be1_active):
    """The active relay's host stops answering (connections and checks time
    out): no client through the balancer is refused."""
    assert wait_for(lambda: all_up(host), 10)
    try:
        other("be1").check_output(HOST_DOWN)
        results = sequence(host, 50)
        print(results)
        assert len(results) == 50, results
        assert all(line.startswith("220 be2 ") for line, _ in results), results
        print(f"slowest greeting after {max(seconds for _, seconds in results)} s")
        assert server_status(host, "smtp", "be1").startswith("DOWN")
        assert server_status(host, "smtp", "be1-standby").startswith("DOWN")
    finally:
        other("be1").run("nft delete table inet molecule_down")
    assert wait_for(lambda: greeting(host).startswith("220 be1 "), 10)


def test_the_standby_fallback_can_be_switched_off(host, be1_active):
    try:
        assert_converged(converge(haproxy_standby_fallback=False))
        config = host.file(CONFIG).content_string
        assert "-standby" not in config and " backup" not in config
        assert "option httpchk GET /active\n" in config
        host.check_output("haproxy -c -f %s", CONFIG)
        assert "be1-standby" not in api(host, "show stat")
        assert wait_for(lambda: server_status(host, "smtp", "be1").startswith("UP"), 5)
        assert greeting(host).startswith("220 be1 ")
    finally:
        assert_converged(converge())
    assert "server be1-standby " in host.file(CONFIG).content_string
