"""postfix: a real relay for its submission networks, refused to everyone else."""

import json
import os

import pytest
import testinfra

testinfra_hosts = ["molecule-postfix"]

RELAY = "10.213.1.11"
CLIENT = "10.213.1.12"
OUTSIDER = "10.213.1.99"
FLOATING_IP = "10.213.1.12"  # the client plays the active node
TRANSPORT = "/etc/postfix/mailha_role_transport"

# SMTP dialogues up to RCPT (never DATA, so nothing is queued or sent on),
# all in one process per node to keep the test quick. An optional PROXY v1
# line goes first, as HAProxy's send-proxy would send it.
SMTP_PROBES = """
import json, smtplib, socket, ssl, sys

class ProxySMTP(smtplib.SMTP):
    proxy = ""

    def _get_socket(self, host, port, timeout):
        self._host = host  # for STARTTLS
        sock = socket.create_connection((host, port), timeout)
        if self.proxy:
            sock.sendall(self.proxy.encode() + b"\\r\\n")
        return sock

def probe(host, port, proxy, starttls, rcpt):
    smtp = ProxySMTP(timeout=10)
    smtp.proxy = proxy
    code, text = smtp.connect(host, port)
    result = {"greeting": [code, text.decode()]}
    smtp.ehlo("client.example")
    result["starttls"] = smtp.has_extn("starttls")
    if starttls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        result["tls"] = smtp.starttls(context=context)[0]
        result["tls_version"] = smtp.sock.version()
        smtp.ehlo("client.example")
    code, text = smtp.mail("campaign@news.mailha.test")
    result["mail"] = [code, text.decode()]
    if code == 250:
        code, text = smtp.rcpt(rcpt)
        result["rcpt"] = [code, text.decode()]
    smtp.quit()
    return result

print(json.dumps([probe(**spec) for spec in json.loads(sys.argv[1])]))
"""

# name: (port, address claimed in the PROXY header or None, STARTTLS)
CLIENT_PROBES = {
    "direct-25": (25, None, False),
    "proxy-10025": (10025, CLIENT, False),
    "outsider-10025": (10025, OUTSIDER, False),
    "plain-587": (587, None, False),
    "tls-587": (587, None, True),
    "plain-10587": (10587, CLIENT, False),
    "tls-10587": (10587, CLIENT, True),
}


def run_probes(node, probes):
    specs = [
        {
            "host": RELAY,
            "port": port,
            "proxy": f"PROXY TCP4 {claimed} {RELAY} 40000 {port}" if claimed else "",
            "starttls": starttls,
            "rcpt": "someone@inbox.test",
        }
        for port, claimed, starttls in probes.values()
    ]
    result = node.run("python3 -c %s %s", SMTP_PROBES, json.dumps(specs))
    assert result.rc == 0, result.stderr
    return dict(zip(probes, json.loads(result.stdout), strict=True))


@pytest.fixture(scope="module")
def client():
    return testinfra.get_host(
        "ansible://molecule-postfix-client", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"]
    )


@pytest.fixture(scope="module")
def client_answers(client):
    return run_probes(client, CLIENT_PROBES)


@pytest.mark.parametrize("probe", ["direct-25", "proxy-10025"])
def test_greeting(client_answers, probe):
    assert client_answers[probe]["greeting"] == [220, "mta.mailha.test ESMTP"]
    assert client_answers[probe]["starttls"] is True


@pytest.mark.parametrize("probe", ["direct-25", "proxy-10025", "tls-587", "tls-10587"])
def test_submission_network_may_relay(client_answers, probe):
    assert client_answers[probe]["rcpt"][0] == 250, client_answers[probe]


def test_outsider_behind_the_balancer_is_refused(client_answers):
    answer = client_answers["outsider-10025"]
    assert answer["rcpt"][0] == 554, answer
    assert "Relay access denied" in answer["rcpt"][1]


def test_other_source_is_refused(host):
    # From the relay's own eth0 address: neither loopback nor a submission network.
    answer = run_probes(host, {"self-25": (25, None, False)})["self-25"]
    assert answer["rcpt"][0] == 554, answer
    assert "Relay access denied" in answer["rcpt"][1]


@pytest.mark.parametrize("probe", ["plain-587", "plain-10587"])
def test_submission_ports_require_starttls(client_answers, probe):
    assert client_answers[probe]["starttls"] is True
    assert client_answers[probe]["mail"][0] == 530, client_answers[probe]


def test_main_cf(host):
    # "postfix check" first: check_output fails the test if it complains.
    output = host.check_output("postfix check && postconf -n")
    settings = dict(line.split(" = ", 1) for line in output.splitlines() if " = " in line)
    assert settings["myhostname"] == "mta.mailha.test"
    assert settings["mynetworks"] == "127.0.0.0/8 10.213.1.12/32 10.213.1.13"
    assert settings["smtpd_relay_restrictions"] == "permit_mynetworks, reject_unauth_destination"
    assert settings["transport_maps"] == f"texthash:{TRANSPORT}"
    assert settings["smtpd_milters"] == "inet:127.0.0.1:8891"
    assert settings["minimal_backoff_time"] == "5s"
    assert settings["maximal_backoff_time"] == "20s"
    assert settings["queue_run_delay"] == "5s"
    assert settings["maximal_queue_lifetime"] == "2d"
    assert settings["smtpd_client_connection_count_limit"] == "100"
    assert "smtp_bind_address" not in settings


def test_master_cf(host):
    chroot, options = host.check_output("postconf -F '*/*/chroot'; echo --; postconf -P").split("--")
    chroot, options = chroot.strip().splitlines(), options.strip().splitlines()
    assert chroot and all(line.endswith(" = n") for line in chroot), chroot
    # Outbound mail leaves from the bound address; the hand-over never does.
    assert f"smtp/unix/smtp_bind_address = {FLOATING_IP}" in options
    assert "relay/unix/smtp_bind_address =" in options
    # A hand-over never bounces acknowledged mail (see master.cf).
    assert "relay/unix/soft_bounce = yes" in options
    assert "relay/unix/smtp_data_done_timeout = 20s" in options
    for port in (10025, 10587):
        assert f"{RELAY}:{port}/inet/smtpd_upstream_proxy_protocol = haproxy" in options
    assert f"{RELAY}:10587/inet/smtpd_tls_security_level = encrypt" in options
    assert "submission/inet/smtpd_tls_security_level = encrypt" in options


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


def test_proxy_listeners_bind_the_node_address_only(host):
    # Whoever reaches a PROXY port can claim any client address: one
    # listener each, on the node's own address (the scenario's
    # postfix_proxy_bind_address), not on every address or loopback.
    listening = [line.split()[3] for line in host.check_output("ss -Hltn").splitlines()]
    for port in (10025, 10587):
        assert [local for local in listening if local.endswith(f":{port}")] == [f"{RELAY}:{port}"], listening
        assert host.check_output("python3 -c %s 127.0.0.1 %s", CONNECT, str(port)) == "refused"
    # The ports clients use directly still listen everywhere.
    assert "0.0.0.0:25" in listening and "0.0.0.0:587" in listening


def test_tls_1_2_or_newer_only(host, client_answers):
    names = "smtpd_tls_protocols smtpd_tls_mandatory_protocols smtp_tls_protocols smtp_tls_mandatory_protocols"
    values = host.check_output(f"postconf -h {names}").splitlines()
    assert values == [">=TLSv1.2"] * 4
    for probe in ("tls-587", "tls-10587"):
        assert client_answers[probe]["tls_version"] in ("TLSv1.2", "TLSv1.3"), client_answers[probe]


def test_peer_hand_overs_skip_the_milters(host):
    # A peer's hand-over was signed where it was accepted: the cidr map
    # switches the milters off for the peer only.
    milter_map = "/etc/postfix/mailha_milter_map"
    assert host.check_output("postconf -h smtpd_milter_maps") == f"cidr:{milter_map}"
    entries = [line for line in host.file(milter_map).content_string.splitlines() if not line.startswith("#")]
    assert entries == ["10.213.1.13\tDISABLE"]
    assert host.check_output("postmap -q 10.213.1.13 cidr:%s", milter_map) == "DISABLE"
    # The campaign client's mail is still signed.
    assert host.run("postmap -q %s cidr:%s", CLIENT, milter_map).rc == 1


def test_received_headers_are_stripped_on_the_way_out(host):
    checks = "/etc/postfix/mailha_outbound_header_checks"
    assert host.check_output("postconf -h smtp_header_checks") == f"regexp:{checks}"
    entries = [line for line in host.file(checks).content_string.splitlines() if not line.startswith("#")]
    assert entries == ["/^Received:/\tIGNORE"]
    received = "Received: from client.example ([10.213.1.12]) by mta.mailha.test"
    assert host.check_output("postmap -q %s regexp:%s", received, checks) == "IGNORE"
    assert host.run("postmap -q %s regexp:%s", "Subject: Received: news", checks).rc == 1


def test_tls_key_is_private(host):
    key, subject = host.check_output(
        "stat -c '%a %U' /etc/ssl/private/mailha-postfix.key;"
        " openssl x509 -noout -subject -in /etc/ssl/certs/mailha-postfix.pem"
    ).splitlines()
    assert key == "600 root"
    assert "mta.mailha.test" in subject


# Runs the command, then shows the file's size and the route it gives.
SWITCH = (
    'mailha-postfix-role "$1"; echo "rc=$?"; postfix status 2>/dev/null && echo running;'
    ' stat -c "size=%s" "$2"; postmap -q "*" "texthash:$2"; true'
)


def switch(host, state):
    result = host.run("sh -c %s switch %s %s", SWITCH, state, TRANSPORT)
    lines = result.stdout.strip().splitlines()
    return result, lines


def test_role_command_hands_over_on_standby(host):
    try:
        for state in ("backup", "FAULT", "stop"):
            result, lines = switch(host, state)
            assert "rc=0" in lines, result.stderr
            assert "postfix reloaded" in lines[0]
            assert lines[-1] == f"relay:[{FLOATING_IP}]:25", lines
    finally:
        result, lines = switch(host, "Master")
    assert lines[1:] == ["rc=0", "running", "size=0"], (lines, result.stderr)


def test_role_command_holds_mail_during_a_switch(host):
    try:
        result, lines = switch(host, "hold")
        assert "rc=0" in lines, result.stderr
        assert lines[-1] == f"hold:[{FLOATING_IP}]:25", lines
        assert host.check_output("postconf -h defer_transports") == "hold"
    finally:
        switch(host, "master")


def test_role_command_rejects_unknown_state(host):
    result, lines = switch(host, "primary")
    assert "rc=2" in lines
    assert "usage" in result.stderr


# The active node, played by the client: one SMTP session that greets like
# the real one (with the shared name), records who connected, exits.
FAKE_ACTIVE = """
import json, socket, sys
server = socket.create_server((sys.argv[1], 25))
server.settimeout(60)
conn, (peer, _) = server.accept()
conn.settimeout(30)
reader = conn.makefile("rb")
record = {"peer": peer}

def send(*lines):
    conn.sendall(b"".join(line.encode() + b"\\r\\n" for line in lines))

send("220 mta.mailha.test ESMTP")
while line := reader.readline():
    command = line.decode().strip()
    verb = command.split(" ")[0].upper()
    if verb in ("EHLO", "HELO"):
        record["helo"] = command.split(" ", 1)[1]
        send("250-mta.mailha.test", "250 8BITMIME")
    elif verb == "DATA":
        send("354 go ahead")
        data = []
        while (line := reader.readline()) not in (b".\\r\\n", b""):
            data.append(line.decode(errors="replace"))
        record["data"] = "".join(data)
        send("250 2.0.0 handed over")
    elif verb == "QUIT":
        send("221 bye")
        break
    else:
        send("250 ok")
with open(sys.argv[2], "w") as out:
    json.dump(record, out)
"""

SUBMIT = """
import smtplib, sys
with smtplib.SMTP(sys.argv[1], 25, timeout=10) as smtp:
    smtp.sendmail("campaign@news.mailha.test", ["someone@inbox.test"],
                  f"Message-ID: {sys.argv[2]}\\r\\nSubject: hand-over\\r\\n\\r\\nqueued on a standby\\r\\n")
"""

# Submit once the fake listens, then wait (bounded) for what it recorded.
HAND_OVER = (
    'for i in $(seq 50); do ss -ltn | grep -q "$1:25 " && break; sleep 0.1; done;'
    ' python3 -c "$3" "$2" "$4" || exit 1;'
    ' for i in $(seq 150); do [ -s "$5" ] && break; sleep 0.2; done; cat "$5"'
)


def test_standby_hands_mail_over_to_the_floating_ip(host, client):
    record_file = "/root/fake-active.json"
    message_id = "<hand-over-test@news.mailha.test>"
    client.run_expect([0], f"rm -f {record_file}")
    client.run_expect(
        [0], "systemd-run --unit=fake-active --collect python3 -c %s %s %s", FAKE_ACTIVE, FLOATING_IP, record_file
    )
    try:
        assert "rc=0" in switch(host, "backup")[1]
        result = client.run(
            "sh -c %s hand-over %s %s %s %s %s", HAND_OVER, FLOATING_IP, RELAY, SUBMIT, message_id, record_file
        )
    finally:
        switch(host, "master")
        client.run("systemctl stop fake-active")
    log = "" if result.stdout else host.run("journalctl -u postfix@- --no-pager | tail -n 15").stdout
    assert result.stdout, f"nothing handed over: {result.stderr}\n{log}"
    record = json.loads(result.stdout)
    # From the standby's own address (not the bound floating IP), under its
    # own name (not the shared one the active node greets with).
    assert record["peer"] == RELAY
    assert record["helo"] == "molecule-postfix"
    assert f"Message-ID: {message_id}" in record["data"]
