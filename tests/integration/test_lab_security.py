"""Attacks from a host on the relays' network that should not get in.

An outside container (neither the load balancer nor a submission client) is
started on the lab network for this module; every attack of the security
review is tried from it and must fail, while the controller's own traffic
keeps flowing. Each attack is bounded in count and time and aimed at lab
hosts only.
"""

from __future__ import annotations

import email
import http.client
import json
import shlex
import smtplib
import socket
import ssl
import subprocess
import time
from pathlib import Path

import dns.query
import dns.rcode
import dns.tsigkeyring
import dns.update
import pytest

from mailha import names
from mailha.traffic import Target, TrafficGenerator, accepted_ids
from tests.integration.labtools import REPO, wait_for
from tests.integration.test_lab_mail import dkim_verifies, send_one

pytestmark = pytest.mark.lab

ATTACKER = Path(__file__).with_name("attacker.py").read_text()
OUTSIDER = "mailha-test-outsider"
# An address on the lab network that no lab host and no submission network has.
OUTSIDER_ADDRESS = "10.213.0.66"
PROXY_PORTS = (10025, 10587)


@pytest.fixture(scope="module")
def outsider(lab):
    """A container on the lab network with raw sockets (to forge VRRP), removed afterwards."""
    podman = lab.podman
    podman.podman("rm", "-f", "-t", "0", OUTSIDER, check=False)
    network = podman.podman(
        "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}", lab.container("mx1")
    ).stdout.strip()
    podman.podman(
        "run",
        "-d",
        "--name",
        OUTSIDER,
        "--label",
        "mailha.test=outsider",
        "--network",
        network,
        "--ip",
        OUTSIDER_ADDRESS,
        "--cap-add",
        "NET_RAW",
        "localhost/mailha-lab:latest",
        "sleep",
        "900",
    )
    try:
        yield Outsider(podman)
    finally:
        podman.podman("rm", "-f", "-t", "0", OUTSIDER, check=False)


class Outsider:
    def __init__(self, podman):
        self.podman = podman

    def run(self, *args: str, timeout: float = 120) -> dict:
        result = subprocess.run(
            ["podman", "exec", "-i", OUTSIDER, "python3", "-", *args],
            input=ATTACKER,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.podman.env,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def listening_ports(lab, host: str) -> set[tuple[str, int]]:
    """(address, port) of every TCP listener of a lab host that is not loopback-only."""
    out = lab.exec(host, "ss", "-Hltn").stdout
    found = set()
    for line in out.splitlines():
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        if not address.startswith("127.") and address not in ("[::1]",):
            found.add((address, int(port)))
    return found


def test_the_proxy_listeners_are_bound_to_the_node_address_only(lab):
    for host in lab.mail:
        proxy = {(a, p) for a, p in listening_ports(lab, host) if p in PROXY_PORTS}
        assert proxy == {(lab.hosts[host]["mailha_address"], p) for p in PROXY_PORTS}, proxy


def test_a_forged_proxy_header_relays_nowhere(lab, outsider):
    """On every port a relay has open, on its own address and the floating IP, a
    PROXY header claiming the controller (a submission network) must not relay."""
    claimed = lab.vars["mailha_controller_address"]
    tried = []
    for host in lab.mail:
        ports = {port for _, port in listening_ports(lab, host)}
        assert set(PROXY_PORTS) <= ports
        for address in (lab.hosts[host]["mailha_address"], lab.floating_ip):
            for port in sorted(ports):
                result = outsider.run("proxy-relay", address, str(port), claimed)
                tried.append(result)
                assert not result["accepted"], result
    print("\nforged PROXY header:", sorted({(r["target"], r["outcome"]) for r in tried}))


@pytest.mark.parametrize("port", [25, 587])
def test_a_plain_relay_attempt_is_refused(lab, outsider, port):
    targets = [lab.balancer, lab.floating_ip] + [lab.hosts[h]["mailha_address"] for h in lab.mail]
    for address in targets:
        result = outsider.run("relay", address, str(port))
        assert not result["accepted"], result


def test_agents_statistics_and_dns_are_unreachable_from_outside(lab, outsider):
    agent_port = str(lab.vars.get("mailha_agent_port", 8025))
    for host in lab.mail:
        address = lab.hosts[host]["mailha_address"]
        assert outsider.run("connect", address, agent_port)["outcome"] == "timeout"
        assert reachable_from_controller(address, int(agent_port)), f"the controller cannot reach {host}'s agent"
    assert outsider.run("connect", lab.balancer, "8404")["outcome"] == "timeout"
    assert reachable_from_controller(lab.balancer, 8404)
    assert outsider.run("dns", lab.vars["mailha_nameserver"], "mta.mailha.test")["outcome"] == "timeout"


def lab_ssh(lab, host: str, *options: str, user: str | None = None) -> subprocess.CompletedProcess:
    """ssh from the controller to a lab host with the inventory's login and `options` on top."""
    host_vars = lab.hosts[host]
    command = [
        "ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "ControlMaster=no",
        "-p", str(host_vars["ansible_port"]), *options,
        *shlex.split(host_vars["ansible_ssh_common_args"]),
        f"{user or host_vars['ansible_user']}@{host_vars['ansible_host']}", "true",
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def test_ssh_is_reachable_from_the_operators_network_only(lab, outsider):
    """Every lab host runs sshd, as a rented server does; the host firewall admits
    the controller (mailha_operator_networks) and drops everyone else."""
    for host in lab.hosts:
        address = lab.hosts[host]["mailha_address"]
        assert outsider.run("connect", address, "22")["outcome"] == "timeout", host
        assert reachable_from_controller(address, 22), f"the controller cannot reach {host}'s sshd"


def test_ssh_takes_the_operator_key_only_and_never_root(lab):
    """Keys only: a password is never asked; root cannot log in even with the
    operator's key; an unknown host key is refused, not learnt."""
    key = lab.hosts["mx1"]["ansible_ssh_private_key_file"]
    with_key = ("-i", key, "-o", "IdentitiesOnly=yes")
    assert lab_ssh(lab, "mx1", *with_key).returncode == 0
    password = lab_ssh(lab, "mx1", "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert password.returncode == 255 and "Permission denied (publickey)" in password.stderr, password.stderr
    root = lab_ssh(lab, "mx1", *with_key, user="root")
    assert root.returncode == 255 and "Permission denied" in root.stderr, root.stderr
    empty = ("-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null")
    stranger = lab_ssh(lab, "mx1", *with_key, *empty)
    # ansible_ssh_common_args comes after these options and ssh keeps the first
    # value: the strict check against an empty known_hosts must refuse.
    assert stranger.returncode == 255 and "Host key verification failed" in stranger.stderr, stranger.stderr


def test_the_webhook_receiver_takes_events_from_the_relays_and_the_controller_only(lab, outsider):
    """The lab's receiver (sink, port 8088) listens on the sink's address
    alone; an outside host cannot even connect, the relays and the
    controller can, and an unsigned event is refused (401) all the same."""
    sink = lab.hosts["sink"]["mailha_address"]
    assert listening_ports(lab, "sink") >= {(sink, 8088)}
    assert not [(a, p) for a, p in listening_ports(lab, "sink") if p == 8088 and a != sink]
    assert outsider.run("connect", sink, "8088")["outcome"] == "timeout"
    assert reachable_from_controller(sink, 8088)
    for host in lab.mail:
        probe = lab.exec(
            host, "python3", "-c", f"import socket; socket.create_connection(({sink!r}, 8088), timeout=3); print('ok')"
        )
        assert probe.stdout.strip() == "ok", f"{host} cannot reach the receiver"
    connection = http.client.HTTPConnection(sink, 8088, timeout=5)
    try:
        connection.request("POST", "/events", body=b'{"id": "00000000-0000-4000-8000-000000000000"}')
        assert connection.getresponse().status == 401
    finally:
        connection.close()


def reachable_from_controller(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=3):
            return True
    except OSError:
        return False


def test_an_agent_flood_leaves_the_load_balancer_checks_answered(lab, outsider):
    """300 half-sent requests to the active relay's agent, from outside (dropped) and from
    the controller (admitted): HAProxy keeps its server up, mail flows, and the
    controller's idle connections are closed within seconds."""
    active = lab.active()
    address = lab.hosts[active]["mailha_address"]
    agent_port = lab.vars.get("mailha_agent_port", 8025)
    outside = outsider.run("http-flood", address, str(agent_port), "20", "1")
    assert outside["opened"] == 0, outside
    flood = subprocess.Popen(
        ["python3", "-", "http-flood", address, str(agent_port), "300", "15"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    flood.stdin.write(ATTACKER)
    flood.stdin.close()
    try:
        time.sleep(3)
        msg_id = send_one(Target(lab.balancer, 25))
        lab.wait_delivered([msg_id], timeout=60)
        established = wait_for(
            lambda: (n := agent_connections(lab, active, agent_port)) < 20 and n + 1,
            20,
            what="the agent to close the idle connections",
        )
        flood.wait(timeout=60)
        result = json.loads(flood.stdout.read())
    finally:
        flood.kill()
    print(f"\nagent flood from the controller: {result}; connections left {established - 1}")
    assert result["closed_by_peer"] >= result["opened"] - 10, result


def agent_connections(lab, host: str, port: int) -> int:
    out = lab.exec(host, "ss", "-Htn", "state", "established", f"( sport = :{port} )").stdout
    return len([line for line in out.splitlines() if line.strip()])


def test_forged_vrrp_adverts_move_nothing_and_refuse_nothing(lab, outsider):
    """VRRPv3 adverts with priority 254 for the pair's router id, 10 per second for
    10 s, to both relays and the multicast group, while mail flows through the
    load balancer: the floating IP stays where it is and no submission is refused."""
    active = lab.active()
    traffic = TrafficGenerator(targets=[Target(lab.balancer, 25)], rate=10, max_messages=150, max_seconds=13).start()
    holders_seen = set()
    try:
        dests = [lab.hosts[h]["mailha_address"] for h in lab.mail] + ["224.0.0.18"]
        attack = subprocess.Popen(
            [
                "podman",
                "exec",
                "-i",
                OUTSIDER,
                "python3",
                "-",
                "vrrp",
                OUTSIDER_ADDRESS,
                "51",
                "254",
                "10",
                "10",
                lab.floating_ip,
                *dests,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=lab.podman.env,
        )
        attack.stdin.write(ATTACKER)
        attack.stdin.close()
        while attack.poll() is None:
            holders_seen.add(tuple(lab.holders()))
            time.sleep(0.2)
        sent = json.loads(attack.stdout.read())
        attempts = traffic.wait()
    finally:
        traffic.stop()
    assert sent["sent"] >= 200, sent
    assert holders_seen == {(active,)}, f"the floating IP moved: {holders_seen}"
    refused = [a for a in attempts if not a.accepted]
    assert not refused, f"{len(refused)} of {len(attempts)} submissions refused: {refused[:3]}"
    counts = lab.wait_delivered(accepted_ids(attempts), timeout=120)
    assert all(n == 1 for n in counts.values())
    print(f"\nforged VRRP: {sent['sent']} adverts, {len(attempts)} submitted, 0 refused, holder {active}")


def tsig_update(lab, key_name: str, change) -> int:
    secret = (REPO / ".lab" / "secrets" / lab.vars["mailha_environment"] / f"tsig-{key_name}.key").read_text().strip()
    keyring = dns.tsigkeyring.from_text({key_name: ("hmac-sha256", secret)})
    update = dns.update.UpdateMessage(lab.vars["mailha_dns_zone"], keyring=keyring, keyname=key_name)
    change(update)
    response = dns.query.tcp(update, lab.vars["mailha_nameserver"], timeout=5)
    return response.rcode()


def test_the_cli_key_moves_the_relay_record_and_nothing_else(lab):
    key = "mailha-ddns"
    spf_before = lab.resolver().resolve("news.mailha.test", "TXT").rrset.to_text()
    rcode = tsig_update(lab, key, lambda u: u.replace("news", 300, "TXT", '"v=spf1 +all"'))
    assert rcode == dns.rcode.REFUSED
    assert lab.resolver().resolve("news.mailha.test", "TXT").rrset.to_text() == spf_before
    rcode = tsig_update(lab, key, lambda u: u.replace("mx9", 60, "A", "10.213.0.99"))
    assert rcode == dns.rcode.REFUSED
    # The record failover maintains: the active relay's own address.
    relay = lab.hosts[lab.active()]["mailha_address"]
    rcode = tsig_update(lab, key, lambda u: u.replace("relay", 60, "A", relay))
    assert rcode == dns.rcode.NOERROR
    assert lab.resolver().resolve("relay.mailha.test", "A")[0].to_text() == relay


def test_a_handover_is_signed_once_and_leaves_without_internal_received_headers(lab):
    """Mail accepted by the standby is handed to the active relay: one DKIM signature,
    which verifies, and no Received header from inside the pair."""
    active = lab.active()
    standby = next(h for h in lab.mail if h != active)
    msg_id = send_one(Target(lab.hosts[standby]["mailha_address"], 25))
    lab.wait_delivered([msg_id], timeout=90)
    [stored] = [m for m in lab.sink_index() if m["message_id"] == msg_id]
    raw = lab.raw_message(stored["file"])
    message = email.message_from_bytes(raw)
    assert len(message.get_all("DKIM-Signature", [])) == 1
    assert dkim_verifies(lab, raw)
    received = message.get_all("Received", [])
    # Only the sink's own: it names the floating IP it received from.
    assert len(received) == 1, received
    assert lab.floating_ip in received[0]
    for host in lab.mail:
        assert host not in received[0]


def test_tls_older_than_1_2_is_refused(lab):
    relay = lab.hosts[lab.active()]["mailha_address"]
    for version, accepted in ((ssl.TLSVersion.TLSv1_1, False), (ssl.TLSVersion.TLSv1_2, True)):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_ciphers("ALL:@SECLEVEL=0")
        context.minimum_version = version
        context.maximum_version = version
        with smtplib.SMTP(relay, 587, timeout=10) as smtp:
            smtp.ehlo("mailha-client")
            try:
                smtp.starttls(context=context)
                outcome = True
            except (ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError):
                outcome = False
        assert outcome == accepted, f"{version.name}: handshake {'succeeded' if outcome else 'failed'}"


def test_statistics_listen_on_one_address(lab):
    stats = {(a, p) for a, p in listening_ports(lab, "lb") if p == lab.vars.get("mailha_haproxy_stats_port", 8404)}
    assert stats == {(lab.balancer, 8404)}, stats


def test_greetings_name_no_relay(lab):
    """Through the load balancer, at the floating IP and at each relay: the greeting
    carries the sending host and an opaque tag, never a relay's own name."""
    own_names = [n for host in lab.mail for n in (host, lab.hosts[host]["mailha_fqdn"])]
    targets = [lab.balancer, lab.floating_ip] + [lab.hosts[h]["mailha_address"] for h in lab.mail]
    seen = set()
    for address in targets:
        with smtplib.SMTP(timeout=5) as smtp:
            _, banner = smtp.connect(address, 25)
            ehlo = smtp.ehlo("mailha-client")[1]
        text = (banner + b" " + ehlo).decode()
        assert not [n for n in own_names if n in text], text
        seen.add(lab.node_tags.get(names.NODE_TAG_IN_GREETING.search(text).group(1)))
    assert seen == set(lab.mail), "the tags still tell the relays apart"
