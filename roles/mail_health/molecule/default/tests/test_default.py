"""mail_health: the check and the agent judge a real Postfix correctly."""

import concurrent.futures
import json
import time

import pytest
import testinfra

FLOATING_IP = "10.213.1.100"
DRAIN_FILE = "/etc/mailha/drain"
TRACK_FILE = "/run/mailha/mta-fault"
# The split-brain guard's own track file (mail_health_split_brain_track_file).
SPLIT_BRAIN_FILE = "/run/mailha/split-brain"
# The agent listens on the node's own address only (molecule.yml sets it).
AGENT_ADDRESS = "10.213.1.25"
AGENT_PORT = 8025
AGENT = f"http://{AGENT_ADDRESS}:{AGENT_PORT}"
REQUEST_TIMEOUT = 5  # mail_health_agent_request_timeout's default
MAX_CONNECTIONS = 64  # mail_health_agent_max_connections's default
VRRP_LINE = "2026-01-01T00:00:00.000Z VI_MAIL BACKUP 100"

# One podman exec per command: the Ansible backend molecule would pick for a
# podman connection runs a whole module per command and strips output.
testinfra_hosts = ["podman://molecule-health"]

HTTP_GET = """
import sys, urllib.request, urllib.error
try:
    answer = urllib.request.urlopen(sys.argv[1], timeout=5)
except urllib.error.HTTPError as err:
    answer = err
print(answer.status)
sys.stdout.write(answer.read().decode())
"""

# Runs mailha-health inside the node and reports rc and wall time, so the
# deadline is measured without the container exec overhead.
TIMED = 's=$(date +%s%N); mailha-health "$@"; rc=$?; e=$(date +%s%N); echo "rc=$rc ms=$(( (e - s) / 1000000 ))"'


def http_get(host, path):
    result = host.run("python3 -c %s %s", HTTP_GET, AGENT + path)
    assert result.rc == 0, result.stderr
    status, _, body = result.stdout.partition("\n")
    return int(status), body.strip()


def timed_health(host, *args):
    result = host.run("sh -c %s mailha-health " + " ".join(["%s"] * len(args)), TIMED, *args)
    last = result.stdout.strip().splitlines()[-1]
    fields = dict(part.split("=") for part in last.split())
    return int(fields["rc"]), int(fields["ms"])


def wait_until(host, shell_condition, seconds=10):
    tries = int(seconds / 0.2)
    loop = f"for i in $(seq {tries}); do if {shell_condition}; then exit 0; fi; sleep 0.2; done; exit 1"
    return host.run("sh -c %s", loop).rc == 0


@pytest.fixture()
def floating_ip(host):
    host.run_expect([0], f"ip addr add {FLOATING_IP}/32 dev eth0")
    yield
    host.run(f"ip addr del {FLOATING_IP}/32 dev eth0")


def test_files_and_config(host):
    for path in ("/usr/local/bin/mailha-health", "/usr/local/bin/mailha-health-agent"):
        script = host.file(path)
        assert script.mode == 0o755 and script.user == "root"
    header = host.file("/usr/local/bin/mailha-health").content_string
    assert "0  healthy" in header and "3  usage error" in header
    conf = host.file("/etc/mailha/health.conf").content_string
    assert "floating_ip=10.213.1.100" in conf
    assert "full_check=true" in conf and "max_queue=1000" in conf
    # Split-brain handling is off by default (no peer); its track file is set all the same.
    assert "\npeer_agent_url=\n" in conf and "\nvrrp_priority=100\n" in conf
    assert f"\ntrack_file={TRACK_FILE}\n" in conf and f"\nsplit_brain_track_file={SPLIT_BRAIN_FILE}\n" in conf
    host.run_expect([0], "mailha-health --check-config")


def test_healthy_postfix_exits_0(host):
    result = host.run("mailha-health --json")
    assert result.rc == 0, result.stdout
    findings = json.loads(result.stdout)
    assert findings["exit_code"] == 0 and findings["smtp"]["ok"] is True


def test_full_dry_run_accepts_and_queues_nothing(host):
    result = host.run("mailha-health --full --max-queue 0 --json")
    assert result.rc == 0, result.stdout
    assert json.loads(result.stdout)["queue"]["messages"] == 0
    assert host.run("mailha-health --no-full").rc == 0
    # A recipient Postfix refuses fails the dry run.
    result = host.run("mailha-health --full --rcpt-to no-such-user@localhost")
    assert result.rc == 1 and "RCPT TO refused" in result.stdout


def test_usage_errors_exit_3(host):
    assert host.run("mailha-health --no-such-option").rc == 3
    assert host.run("mailha-health --max-queue -1").rc == 3
    assert host.run("mailha-health --timeout 0").rc == 3


def test_silent_server_fails_within_the_deadline(host):
    # The kernel completes the handshake but nothing ever greets.
    host.run_expect(
        [0],
        "systemd-run --unit mailha-silent --collect python3 -c "
        '\'import socket,time; s=socket.socket(); s.bind(("127.0.0.1", 2525)); '
        "s.listen(8); time.sleep(30)'",
    )
    try:
        assert wait_until(host, "ss -ltn | grep -q 127.0.0.1:2525")
        rc, elapsed_ms = timed_health(host, "--port", "2525", "--timeout", "0.5")
        assert rc == 1
        # It gave up because of its deadline, not for another reason.
        findings = json.loads(host.run("mailha-health --json --port 2525 --timeout 0.5").stdout)
        assert "deadline exceeded" in findings["smtp"]["error"], findings
        print(f"mailha-health against a silent listener, 0.5 s deadline: rc={rc} in {elapsed_ms} ms")
    finally:
        host.run("systemctl stop mailha-silent")


def test_held_message_over_max_queue_exits_2(host):
    submit = (
        "import smtplib; s = smtplib.SMTP('127.0.0.1', 25); "
        "s.sendmail('hold@health.test', ['root@localhost'], 'Subject: hold\\n\\nheld'); s.quit()"
    )
    host.run_expect([0], "python3 -c %s", submit)
    try:
        assert wait_until(host, '[ -n "$(ls -A /var/spool/postfix/hold)" ]')
        result = host.run("mailha-health --max-queue 0 --json")
        assert result.rc == 2, result.stdout
        assert json.loads(result.stdout)["queue"]["messages"] == 1
        assert host.run("mailha-health --max-queue 1").rc == 0
    finally:
        host.run("postsuper -d ALL hold")
    assert host.run("mailha-health --max-queue 0").rc == 0


def test_disk_threshold_exits_2(host):
    assert host.run("mailha-health --min-free-disk-mb 999999999").rc == 2
    assert host.run("mailha-health --min-free-disk-mb 1").rc == 0


def test_agent_health(host):
    assert host.service("mailha-health-agent").is_running
    assert host.service("mailha-health-agent").is_enabled
    assert host.socket(f"tcp://{AGENT_ADDRESS}:{AGENT_PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{AGENT_PORT}").is_listening
    assert http_get(host, "/health") == (200, "healthy")
    status, body = http_get(host, "/metrics")
    assert status == 200 and "mailha_health_exit_code 0" in body
    # The agent's reduced capabilities still read Postfix's 0700 queue.
    assert "mailha_queue_messages 0" in body


def test_the_watcher_rations_the_dry_run(host):
    """Postfix opens a queue file, and takes an in_flow_delay token, for each
    accepted RCPT TO. The watcher checks every 0.25 s, but must make a dry run
    only every full_check_interval (30 s): the rest read the greeting."""
    stamp = "/run/mailha/dry-run"
    host.run_expect([0], f"rm -f {stamp}")
    # The next check is due a dry run, and stamps it.
    assert wait_until(host, f"grep -qx ok {stamp}", seconds=5)
    # From the next whole second on, so the stamped dry run is not counted.
    since = int(host.run("date +%s").stdout) + 1
    host.run("sleep 4")
    opened = host.run(
        f"journalctl -q --no-pager --since @{since} SYSLOG_IDENTIFIER=postfix/smtpd | grep -c ': client=localhost'"
    ).stdout.strip()
    print(f"queue files the agent's checks opened in 3 s: {opened} (about 12 checks)")
    assert int(opened) == 0


def test_agent_status_document(host):
    host.run_expect(
        [0],
        "mkdir -p /var/log/mailha && echo '2026-01-01T00:00:00.000Z VI_MAIL BACKUP 100' "
        ">> /var/log/mailha/vrrp-transitions.log",
    )
    status, body = http_get(host, "/status")
    assert status == 200
    document = json.loads(body)
    assert document["healthy"] is True
    assert document["vrrp_state"] == "BACKUP"
    assert document["holds_floating_ip"] is False and document["active"] is False
    assert set(document["queue"]) == {"maildrop", "incoming", "active", "deferred", "hold"}
    # The claim a peer would read; without a peer nothing is ever demoted.
    assert (document["vrrp_priority"], document["address"]) == (100, AGENT_ADDRESS)
    assert document["split_brain"] is False and document["demoted"] is False
    assert document["demoted_reason"] is None
    # Other tests leave transient files (bounces): the age exists exactly when something is queued.
    queued = sum(document["queue"].values())
    assert (document["queue_oldest_age_seconds"] is None) == (queued == 0)
    # A quick local Postfix: the watcher's greetings take milliseconds.
    assert document["health_level"] == "ok" and document["degraded_reasons"] == []
    assert 0 <= document["greeting_latency_median_seconds"] < 0.5
    status, metrics = http_get(host, "/metrics")
    lines = metrics.splitlines()
    assert "mailha_health_level 0" in lines and 'mailha_vrrp_state{state="BACKUP"} 1' in lines
    assert 'mailha_vrrp_state{state="MASTER"} 0' in lines
    assert "mailha_vrrp_last_transition_timestamp_seconds 1767225600.000" in lines
    count = next(line for line in lines if line.startswith("mailha_smtp_greeting_seconds_count "))
    assert int(count.split()[1]) > 0 and 'mailha_smtp_greeting_seconds_bucket{le="+Inf"} ' + count.split()[1] in lines


def test_agent_active_requires_the_floating_ip(host):
    status, body = http_get(host, "/active")
    assert status == 503 and "10.213.1.100 not held" in body


def test_agent_active_with_floating_ip_and_drain(host, floating_ip):
    assert http_get(host, "/active") == (200, "active")
    host.run_expect([0], f"touch {DRAIN_FILE}")
    try:
        status, body = http_get(host, "/active")
        assert status == 503 and "drained" in body
        assert http_get(host, "/health")[0] == 200
    finally:
        host.run(f"rm -f {DRAIN_FILE}")
    assert http_get(host, "/active") == (200, "active")


def test_killed_master_is_caught_although_systemd_says_active(host, floating_ip):
    host.run_expect([0], "pgrep -f '^/usr/lib/postfix/sbin/master'")
    # Anchored pattern: an unanchored one also matches (and kills) this shell.
    host.run_expect([0], "pkill -9 -f '^/usr/lib/postfix/sbin/master'")
    try:
        assert host.run("systemctl is-active postfix").stdout.strip() == "active"
        rc, elapsed_ms = timed_health(host)
        # At once, although orphaned smtpd processes may still greet: the
        # pid file names a master that is gone.
        assert rc == 1
        findings = json.loads(host.run("mailha-health --json").stdout)
        assert "the Postfix master process (pid" in findings["reason"], findings
        print(f"mailha-health after kill -9 of the master: rc={rc} in {elapsed_ms} ms")
        # The agent's watcher sees it within a few checks: the endpoints
        # answer from its verdict, and keepalived's track file says failed.
        assert wait_until(host, f"test $(cat {TRACK_FILE}) = 1")
        # The MTA's file alone: the split-brain guard's says nothing demoted.
        assert host.file(SPLIT_BRAIN_FILE).content_string == "0\n"
        status, body = http_get(host, "/active")
        assert status == 503 and "MTA failed" in body
        assert http_get(host, "/health")[0] == 503
    finally:
        host.run_expect([0], "systemctl restart postfix")
    assert wait_until(host, "mailha-health >/dev/null")
    assert host.run("mailha-health").rc == 0
    # Healthy again only after watch_rise good checks in a row.
    assert wait_until(host, f"test $(cat {TRACK_FILE}) = 0")
    assert http_get(host, "/active") == (200, "active")


@pytest.fixture(scope="module")
def client():
    """Another host of the network, where HAProxy and an attacker would be."""
    return testinfra.get_host("podman://molecule-health-client")


def agent_pid(host):
    return host.run_expect([0], "systemctl show -P MainPID mailha-health-agent").stdout.strip()


def test_agent_answers_other_hosts_on_the_node_address_only(host, client):
    status = client.run("python3 -c %s %s", HTTP_GET, AGENT + "/health")
    assert status.rc == 0 and status.stdout.startswith("200"), status.stdout + status.stderr
    # Not on loopback, nor on the floating IP (a listener on every address would answer both).
    refused = "import socket; socket.create_connection(('127.0.0.1', 8025), timeout=2)"
    assert "ConnectionRefusedError" in host.run("python3 -c %s", refused).stderr


def test_agent_unit_limits_and_hardening(host):
    shown = host.run_expect(
        [0],
        "systemctl show -p TasksMax -p Restart -p StartLimitIntervalUSec -p NoNewPrivileges "
        "-p ProtectSystem -p PrivateTmp -p SystemCallArchitectures -p CapabilityBoundingSet mailha-health-agent",
    ).stdout
    properties = dict(line.split("=", 1) for line in shown.splitlines())
    # Without a peer no raw socket, so no CAP_NET_RAW.
    assert "cap_net_raw" not in properties["CapabilityBoundingSet"]
    assert "cap_dac_read_search" in properties["CapabilityBoundingSet"]
    assert properties["TasksMax"] == str(MAX_CONNECTIONS + 64)
    assert properties["Restart"] == "always" and properties["StartLimitIntervalUSec"] == "0"
    assert properties["NoNewPrivileges"] == "yes" and properties["ProtectSystem"] == "full"
    pid = agent_pid(host)
    status = host.file(f"/proc/{pid}/status").content_string
    # Enforced in a container too: no new privileges, the system call filter.
    assert "NoNewPrivs:\t1" in status and "Seccomp:\t2" in status
    tasks = host.run("systemctl show -P TasksCurrent mailha-health-agent").stdout.strip()
    print(f"agent unit: {properties}; tasks now: {tasks}")
    # Its own mount namespace (molecule.yml grants the SYS_ADMIN that takes):
    # /usr read-only, /run/mailha writable.
    assert host.run(f"readlink /proc/{pid}/ns/mnt").stdout != host.run("readlink /proc/1/ns/mnt").stdout
    assert "Read-only file system" in host.run(f"nsenter -t {pid} -m touch /usr/mailha-probe").stderr
    host.run_expect([0], f"nsenter -t {pid} -m sh -c 'touch /run/mailha/.probe && rm /run/mailha/.probe'")
    # With all of it the agent still reads the queue and the VRRP log, and
    # writes the track files (healthy after the previous tests; no peer, so never demoted).
    host.run_expect([0], f"mkdir -p /var/log/mailha && echo '{VRRP_LINE}' >> /var/log/mailha/vrrp-transitions.log")
    assert "mailha_queue_messages" in http_get(host, "/metrics")[1]
    assert json.loads(http_get(host, "/status")[1])["vrrp_state"] == "BACKUP"
    assert host.file(TRACK_FILE).content_string == "0\n"
    assert host.file(SPLIT_BRAIN_FILE).content_string == "0\n"


# Runs on the client: opens `count` connections to the agent, each with half a
# request that never ends, keeps them, asks for /health on a fresh connection,
# then waits for the agent to close every half-open one. One JSON line.
FLOOD = r"""
import json, selectors, socket, sys, time, urllib.request
host, port, count, patience = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
started = time.monotonic()
held, failed, slowest = [], 0, 0.0
for _ in range(count):
    sock = socket.socket()
    sock.settimeout(3)
    began = time.monotonic()
    try:
        sock.connect((host, port))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: flood\r\n")
    except OSError:
        failed += 1
        sock.close()
        continue
    slowest = max(slowest, time.monotonic() - began)
    held.append(sock)
flooded = time.monotonic()
try:
    with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=5) as answer:
        health = answer.status
except Exception as err:
    health = repr(err)
health_ms = round((time.monotonic() - flooded) * 1000)
selector = selectors.DefaultSelector()
for sock in held:
    sock.setblocking(False)
    selector.register(sock, selectors.EVENT_READ)
closed, answered = [], 0
while len(closed) < len(held) and time.monotonic() - flooded < patience:
    for key, _ in selector.select(timeout=0.2):
        try:
            data = key.fileobj.recv(4096)
        except OSError:
            data = b""
        if data:
            answered += 1
            continue
        selector.unregister(key.fileobj)
        closed.append(round(time.monotonic() - flooded, 2))
print(json.dumps({"held": len(held), "failed": failed, "open_seconds": round(flooded - started, 2),
                  "slowest_connect_ms": round(slowest * 1000),
                  "health": health, "health_ms": health_ms, "answered": answered, "closed": closed}))
"""


def agent_sockets(host):
    """(established connections to the agent, those of them the agent has
    accepted, connections in its listen queue). The kernel completes a
    connection, counted ESTABLISHED, before the agent accepts it."""
    out = host.run(
        f"ss -Htnp state established '( sport = :{AGENT_PORT} )'; echo --; ss -Hltn '( sport = :{AGENT_PORT} )'"
    ).stdout
    connections, _, listening = out.partition("--\n")
    lines = connections.splitlines()
    queued = int(listening.split()[1]) if listening.split() else 0
    return len(lines), sum("users:" in line for line in lines), queued


def test_a_flood_of_half_sent_requests_does_not_silence_the_agent(host, client):
    """300 connections from another host, each with half a request (the
    attack that once held every handler of an agent without a timeout):
    /health still answers at once, the agent keeps at most its cap of
    connections, and closes every one of them within the request timeout."""
    count, patience = 300, REQUEST_TIMEOUT + 10
    samples = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        flood = pool.submit(
            client.run, "python3 -c %s %s %s %s %s", FLOOD, AGENT_ADDRESS, str(AGENT_PORT), str(count), str(patience)
        )
        # The agent's side while the flood is held, bounded by the flood's own patience.
        deadline = time.monotonic() + patience + 15
        while not flood.done() and time.monotonic() < deadline:
            samples.append(agent_sockets(host))
            time.sleep(0.2)
        result = flood.result(timeout=max(1, deadline - time.monotonic()))
    assert result.rc == 0, result.stderr
    report = json.loads(result.stdout)
    closed = report["closed"]
    established, accepted, queued = (max(sample[i] for sample in samples) for i in range(3))
    print(
        f"flood: {report['held']} of {count} connections opened in {report['open_seconds']} s "
        f"(slowest {report['slowest_connect_ms']} ms, {report['failed']} failed); "
        f"/health during the flood: {report['health']} in {report['health_ms']} ms; "
        f"agent side over {len(samples)} samples: at most {established} ESTABLISHED, {accepted} of them accepted "
        f"by the agent, {queued} in its listen queue; closed by the agent: {len(closed)} "
        f"({sum(1 for c in closed if c < 1)} within 1 s of the flood, the last after {max(closed, default=0)} s)"
    )
    assert report["held"] == count and report["answered"] == 0
    assert report["health"] == 200 and report["health_ms"] < 2000
    # Every half-open connection is closed: the displaced ones at once, the rest at the timeout.
    assert len(closed) == count and max(closed) < REQUEST_TIMEOUT + 5
    # The cap holds (a few displaced ones may still be on their way out when sampled) ...
    assert accepted <= MAX_CONNECTIONS + 8
    # ... and nothing lingers.
    assert agent_sockets(host) == (0, 0, 0)
    # The flood is in the journal as a line or two, the counts at most 10 s late.
    journal = "journalctl -q --no-pager -o cat -u mailha-health-agent --since '-1 min'"
    assert wait_until(host, f"{journal} | grep -q 'not received in time'", seconds=15)
    print("agent journal:\n" + host.run(f"{journal} | grep 'at most every'").stdout)
    assert http_get(host, "/health") == (200, "healthy")
    assert host.service("mailha-health-agent").is_running
