"""Real SMTP greetings through the load balancer, health-check failover,
the runtime API and the metrics endpoint."""

import time

import pytest
import testinfra

# podman exec directly: faster than through Ansible, which the polls need.
testinfra_hosts = ["podman://molecule-haproxy"]

LB = "10.213.1.51"
BACKENDS = {"be1": "10.213.1.52", "be2": "10.213.1.53"}
SOCKET = "/run/haproxy/admin.sock"

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
    for port in (25, 587, 8404):
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


def test_runtime_api_drains_a_server(host, be1_active):
    try:
        assert api(host, "set server smtp/be1 state drain").strip() == ""
        assert server_status(host, "smtp", "be1") == "DRAIN"
    finally:
        api(host, "set server smtp/be1 state ready")
    assert server_status(host, "smtp", "be1").startswith("UP")


def http_get(host, path):
    """(status, body) of GET http://127.0.0.1:8404<path> inside the container."""
    out = host.check_output(
        "python3 -c 'import sys, urllib.request; r = urllib.request.urlopen(sys.argv[1], timeout=5); "
        "print(r.status); print(r.read().decode())' %s",
        f"http://127.0.0.1:8404{path}",
    )
    status, _, body = out.partition("\n")
    return int(status), body


def test_prometheus_metrics(host):
    status, body = http_get(host, "/metrics")
    assert status == 200
    assert "haproxy_process_start_time_seconds" in body
    assert 'haproxy_server_status{proxy="smtp",server="be1"' in body


def test_stats_page(host):
    status, body = http_get(host, "/")
    assert status == 200
    assert "Statistics Report" in body
