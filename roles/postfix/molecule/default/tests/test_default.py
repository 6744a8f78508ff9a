"""postfix: a real relay for its submission networks, refused to everyone else."""

import json
import os
import re
import subprocess
import time

import pytest
import testinfra

testinfra_hosts = ["molecule-postfix"]

RELAY = "10.213.1.11"
CLIENT = "10.213.1.12"
OUTSIDER = "10.213.1.99"
FLOATING_IP = "10.213.1.12"  # the client plays the active node
SENDING_ADDRESS = "10.213.1.14"  # postfix_smtp_bind_address, held by the relay
TRANSPORT = "/etc/postfix/mailha_role_transport"
DESTINATIONS = "/etc/postfix/mailha_destinations"
# The scenario's group beside the role's providers' table.
GROUPS = ("apple", "gmx", "google", "inbox", "microsoft", "yahoo")

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
    # The bulk-relay defaults.
    assert settings["default_destination_recipient_limit"] == "50"
    assert settings["message_size_limit"] == "10240000"
    assert settings["header_size_limit"] == "102400"
    assert settings["smtpd_recipient_limit"] == "1000"
    assert settings["delay_warning_time"] == "0h"
    assert settings["bounce_size_limit"] == "10240"
    assert settings["notify_classes"] == "resource, software"
    # One set of limits per destination group: the role's table ...
    assert settings["mx_google_destination_concurrency_limit"] == "5"
    assert settings["mx_microsoft_destination_concurrency_limit"] == "2"
    assert settings["mx_google_destination_rate_delay"] == "0s"
    assert settings["mx_yahoo_destination_recipient_limit"] == "20"
    # ... and the scenario's group, merged over it.
    assert settings["mx_inbox_destination_concurrency_limit"] == "2"
    assert settings["mx_inbox_destination_recipient_limit"] == "10"
    limits = {name.split("_destination_")[0] for name in settings if re.match(r"mx_\w+_destination_", name)}
    assert limits == {f"mx_{group}" for group in GROUPS}


def test_master_cf(host):
    chroot, options = host.check_output("postconf -F '*/*/chroot'; echo --; postconf -P").split("--")
    chroot, options = chroot.strip().splitlines(), options.strip().splitlines()
    assert chroot and all(line.endswith(" = n") for line in chroot), chroot
    # Outbound mail leaves from the bound address, through every destination
    # group's transport too; the hand-over never does.
    assert f"smtp/unix/smtp_bind_address = {SENDING_ADDRESS}" in options
    assert "relay/unix/smtp_bind_address =" in options
    services = host.check_output("postconf -M").splitlines()
    group_services = sorted(line.split()[0] for line in services if line.startswith("mx_"))
    assert group_services == [f"mx_{group}" for group in GROUPS]
    for group in GROUPS:
        assert f"mx_{group}/unix/smtp_bind_address = {SENDING_ADDRESS}" in options
        assert f"mx_{group}/unix/syslog_name = postfix/$service_name" in options
    # Sessions kept for the next message to a provider; not for the client.
    assert "mx_google/unix/smtp_connection_cache_destinations = static:all" in options
    assert "mx_inbox/unix/smtp_connection_cache_on_demand = no" in options
    assert not [line for line in options if line.startswith("mx_inbox/unix/smtp_connection_cache_destinations")]
    # A hand-over never bounces acknowledged mail (see master.cf).
    assert "relay/unix/soft_bounce = yes" in options
    assert "relay/unix/smtp_data_done_timeout = 20s" in options
    assert "relay/unix/smtp_starttls_timeout = 20s" in options
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


def test_destination_table_is_sorted_and_complete(host):
    entries = [line for line in host.file(DESTINATIONS).content_string.splitlines() if not line.startswith("#")]
    domains = [line.split("\t")[0] for line in entries]
    # Sorted, so both relays' files compare equal.
    assert domains == sorted(domains) and len(domains) == len(set(domains))
    assert "gmail.com\tmx_google:" in entries
    assert "hotmail.com\tmx_microsoft:" in entries
    assert "aol.com\tmx_yahoo:" in entries
    assert "icloud.com\tmx_apple:" in entries
    assert "inbox.test\tmx_inbox:" in entries
    assert {line.split("\t")[1] for line in entries} == {f"mx_{group}:" for group in GROUPS}


# Runs the command, then shows the file's size and the routes it gives for
# a provider's domain, the scenario's group, another domain and "*"
# ("-" where there is none).
SWITCH = (
    'mailha-postfix-role "$1"; echo "rc=$?"; postfix status 2>/dev/null && echo running;'
    ' stat -c "size=%s" "$2";'
    ' for key in gmail.com inbox.test example.org "*"; do postmap -q "$key" "texthash:$2" || echo -; done'
)


def switch(host, state, holding=False):
    """Run the role command; with `holding` this node holds the floating IP
    meanwhile (on lo: the client keeps playing the active node otherwise),
    as keepalived's MASTER would."""
    if holding:
        host.run_expect([0], "ip addr add %s/32 dev lo", FLOATING_IP)
    try:
        result = host.run("sh -c %s switch %s %s", SWITCH, state, TRANSPORT)
    finally:
        if holding:
            host.run_expect([0], "ip addr del %s/32 dev lo", FLOATING_IP)
    lines = result.stdout.strip().splitlines()
    return result, lines


def test_role_command_hands_over_on_standby(host):
    try:
        for state in ("backup", "FAULT", "stop"):
            result, lines = switch(host, state)
            assert "rc=0" in lines, result.stderr
            assert "postfix reloaded" in lines[0]
            # The "*" route alone: a domain key beside it would win over it
            # and send the provider's mail from this standby directly.
            assert lines[-4:] == ["-", "-", "-", f"relay:[{FLOATING_IP}]:25"], lines
            assert host.file(TRANSPORT).content_string.splitlines() == [f"* relay:[{FLOATING_IP}]:25"]
    finally:
        result, lines = switch(host, "Master", holding=True)
    assert lines[1:3] == ["rc=0", "running"], (lines, result.stderr)
    # The active relay: the destination table's routes, no "*" route.
    assert lines[-4:] == ["mx_google:", "mx_inbox:", "-", "-"], lines
    assert host.file(TRANSPORT).sha256sum == host.file(DESTINATIONS).sha256sum
    assert "direct delivery, " in lines[0] and " domains by destination group" in lines[0]
    assert host.check_output("postmap -q gmail.com texthash:%s", TRANSPORT) == "mx_google:"


def test_role_command_holds_mail_during_a_switch(host):
    try:
        result, lines = switch(host, "hold")
        assert "rc=0" in lines, result.stderr
        assert lines[-4:] == ["-", "-", "-", f"hold:[{FLOATING_IP}]:25"], lines
        assert host.check_output("postconf -h defer_transports") == "hold"
    finally:
        switch(host, "master", holding=True)


def test_refresh_copies_the_table_on_the_active_relay_only(host):
    try:
        # A standby keeps its route to the floating IP.
        switch(host, "backup")
        result, lines = switch(host, "refresh")
        assert "rc=0" in lines and "not the active relay" in lines[0], (lines, result.stderr)
        assert lines[-4:] == ["-", "-", "-", f"relay:[{FLOATING_IP}]:25"], lines
        # The active relay's file from before the table (empty) gets it.
        switch(host, "master", holding=True)
        host.check_output("truncate -s 0 %s", TRANSPORT)
        result, lines = switch(host, "refresh", holding=True)
        assert "rc=0" in lines, result.stderr
        assert lines[-4:] == ["mx_google:", "mx_inbox:", "-", "-"], lines
    finally:
        switch(host, "master", holding=True)


def test_role_follows_the_floating_ip_not_the_state_named(host):
    # keepalived's notify scripts can run out of order on fast flaps: the
    # address decides, so a node never sends directly from an address it
    # does not hold, nor hands mail over to itself.
    try:
        result, lines = switch(host, "master")
        assert "rc=0" in lines, result.stderr
        assert f"the floating IP {FLOATING_IP} is not here, routing as backup" in lines[0], lines
        assert lines[-4:] == ["-", "-", "-", f"relay:[{FLOATING_IP}]:25"], lines
        result, lines = switch(host, "backup", holding=True)
        assert "rc=0" in lines, result.stderr
        assert "routing as master" in lines[0], lines
        assert lines[-4:] == ["mx_google:", "mx_inbox:", "-", "-"], lines
    finally:
        switch(host, "master", holding=True)


def queued_reasons(host):
    """{queue_id: [delay reason of each recipient]} of the node's queue."""
    out = host.check_output("postqueue -j")
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {e["queue_id"]: [r.get("delay_reason", "") for r in e["recipients"]] for e in entries}


def test_hold_keeps_mail_and_cancels_an_earlier_flush(host, client):
    # "postqueue -f" delivers mail in defer_transports too: a flush in hold
    # would release the mail the switch holds back.
    try:
        switch(host, "backup")
        assert host.run("systemctl is-active mailha-postfix-flush.timer").stdout.strip() == "active"
        result, lines = switch(host, "hold")
        assert "rc=0" in lines, result.stderr
        assert host.run("systemctl is-active mailha-postfix-flush.timer").stdout.strip() != "active"
        client.run_expect([0], "python3 -c %s %s %s", SUBMIT, RELAY, "<held-test@news.mailha.test>")
        reasons = {}
        for _ in range(50):
            reasons = queued_reasons(host)
            if any(r and all(r) for r in reasons.values()):
                break
            time.sleep(0.2)
        assert reasons and all("deferred transport" in reason for r in reasons.values() for reason in r), reasons
        switch(host, "hold")
        time.sleep(3)
        after = queued_reasons(host)
        assert after.keys() == reasons.keys(), "held mail left the queue"
        assert all("deferred transport" in reason for r in after.values() for reason in r), after
    finally:
        host.run("postsuper -d ALL")
        switch(host, "master", holding=True)


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

name = sys.argv[3] if len(sys.argv) > 3 else "mta.mailha.test"
send(f"220 {name} ESMTP")
while line := reader.readline():
    command = line.decode().strip()
    verb = command.split(" ")[0].upper()
    if verb in ("EHLO", "HELO"):
        record["helo"] = command.split(" ", 1)[1]
        send(f"250-{name}", "250 8BITMIME")
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
                  f"Message-ID: {sys.argv[2]}\\r\\nSubject: relay test\\r\\n\\r\\nfrom the relay test\\r\\n")
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
        switch(host, "master", holding=True)
        client.run("systemctl stop fake-active")
    log = "" if result.stdout else host.run("journalctl -u postfix@- --no-pager | tail -n 15").stdout
    assert result.stdout, f"nothing handed over: {result.stderr}\n{log}"
    record = json.loads(result.stdout)
    # From the standby's own address (not the sending address), under its
    # own name (not the shared one the active node greets with); inbox.test
    # is a destination group's domain, handed over all the same.
    assert record["peer"] == RELAY
    assert record["helo"] == "molecule-postfix"
    assert f"Message-ID: {message_id}" in record["data"]


def test_a_group_domain_goes_out_through_its_transport(host, client):
    """On the active relay, mail for inbox.test (the scenario's group) leaves
    through mx_inbox, from the sending address, and is delivered."""
    record_file = "/root/fake-inbox.json"
    message_id = "<destination-group-test@news.mailha.test>"
    since = host.check_output("date +%s")
    client.run_expect([0], f"rm -f {record_file}")
    client.run_expect(
        [0],
        "systemd-run --unit=fake-inbox --collect python3 -c %s %s %s mx.inbox.test",
        FAKE_ACTIVE,
        CLIENT,
        record_file,
    )
    try:
        assert "rc=0" in switch(host, "master", holding=True)[1]
        result = client.run("sh -c %s send %s %s %s %s %s", HAND_OVER, CLIENT, RELAY, SUBMIT, message_id, record_file)
    finally:
        client.run("systemctl stop fake-inbox")
    log = host.run(f"journalctl -q -o cat --no-pager --since @{since} SYSLOG_FACILITY=2").stdout
    assert result.stdout, f"nothing delivered: {result.stderr}\n{log[-3000:]}"
    record = json.loads(result.stdout)
    assert record["peer"] == SENDING_ADDRESS
    assert record["helo"] == "mta.mailha.test"
    assert f"Message-ID: {message_id}" in record["data"]
    sent = host.run(
        f"journalctl -q -o short --no-pager --since @{since} SYSLOG_IDENTIFIER=postfix/mx_inbox/smtp"
        " | grep -F 'to=<someone@inbox.test>' | grep -F status=sent"
    )
    assert sent.rc == 0, log[-3000:]


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


def group(**changes):
    return {
        "mx": "mx.example.org",
        "domains": ["example.org"],
        "concurrency_limit": 2,
        "rate_delay": "0s",
        "recipient_limit": 10,
        "connection_reuse": True,
        **changes,
    }


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"Bad-Name": group()}, "Bad-Name: a group name has 1 to 40 lowercase letters"),
        ({"bad": group(domains=["not a domain"])}, "bad: not a domain is not a DNS name"),
        ({"bad": group(domains=["googlemail.com"])}, "google: googlemail.com is in group bad too"),
        ({"bad": group(rate_delay="1s")}, "bad: a non-zero rate_delay sends one message at a time"),
        ({"bad": group(recipient_limit=1)}, "bad: recipient_limit must be 2 or more"),
        ({"bad": {"domains": ["example.org"]}}, "bad: missing ['mx', 'concurrency_limit'"),
    ],
    ids=["name", "domain", "duplicate", "rate-delay", "recipient-limit", "missing"],
)
def test_bad_destination_groups_are_refused_before_anything_changes(host, groups, message):
    before = host.file(DESTINATIONS).sha256sum, host.file("/etc/postfix/main.cf").sha256sum
    process = converge(postfix_extra_destination_groups=groups)
    assert process.returncode != 0
    assert message in process.stdout + process.stderr, process.stdout[-3000:] + process.stderr[-2000:]
    assert re.search(r"^molecule-postfix\s*:.* changed=0 ", process.stdout, re.MULTILINE), process.stdout[-1000:]
    assert (host.file(DESTINATIONS).sha256sum, host.file("/etc/postfix/main.cf").sha256sum) == before
