"""sink: the MX of inbox.test stores everything for it and relays nothing."""

import json
import os
import uuid

import pytest
import testinfra

testinfra_hosts = ["molecule-sink"]

SINK = "10.213.1.31"
CLIENT = "10.213.1.32"
RUN = uuid.uuid4().hex[:12]
MESSAGES = {
    "someone@inbox.test": f"<sink-{RUN}-1@news.mailha.test>",
    "another@inbox.test": f"<sink-{RUN}-2@news.mailha.test>",
}
# Not verified by the sink, only read back by mailha-sink-index.
# Long enough to be folded on the way, like a real signature.
DKIM_SIGNATURE = "v=1; a=rsa-sha256; c=relaxed/relaxed; d=news.mailha.test; s=mailha; h=from:to:subject; bh=" + "A" * 60

# Runs on the client: two deliveries and one relay attempt, in one process.
SEND = """
import json, smtplib, sys
from email.message import EmailMessage
sink, messages, signature = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
result = {}
with smtplib.SMTP(sink, 25, timeout=10) as smtp:
    result["ehlo"] = smtp.ehlo("client.example")[0]
    for n, (rcpt, msg_id) in enumerate(sorted(messages.items())):
        message = EmailMessage()
        if n == 0:
            message["DKIM-Signature"] = signature
        message["From"] = "campaign@news.mailha.test"
        message["To"] = rcpt
        message["Subject"] = "sink test " + str(n)
        message["Message-ID"] = msg_id
        message.set_content("hello\\n")
        smtp.send_message(message)
    smtp.mail("spammer@outsider.example")
    code, text = smtp.rcpt("victim@elsewhere.test")
    result["relay"] = [code, text.decode()]
print(json.dumps(result))
"""

# Polls the index (bounded) until both messages are there, then prints it.
WAIT_AND_INDEX = (
    'for i in $(seq 50); do n=$(mailha-sink-index | grep -c -e "$1" -e "$2"); [ "$n" -ge 2 ] && break; sleep 0.2; done;'
    " mailha-sink-index; echo --; mailha-sink-index --count-only"
)


@pytest.fixture(scope="module")
def delivery():
    client = testinfra.get_host(
        "ansible://molecule-sink-client", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"]
    )
    result = client.run("python3 -c %s %s %s %s", SEND, SINK, json.dumps(MESSAGES), DKIM_SIGNATURE)
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def index(host, delivery):
    ids = sorted(MESSAGES.values())
    listing, count = host.check_output("sh -c %s index %s %s", WAIT_AND_INDEX, *ids).split("--")
    records = [json.loads(line) for line in listing.splitlines() if line.strip()]
    return records, int(count)


def test_both_messages_are_stored_with_their_origin(index):
    records, count = index
    stored = {r["message_id"]: r for r in records}
    for rcpt, msg_id in MESSAGES.items():
        record = stored[msg_id]
        assert record["to"] == rcpt
        assert record["from"] == "campaign@news.mailha.test"
        assert record["client_address"] == CLIENT
        assert record["file"].startswith("/var/spool/sink/Maildir/new/")
    assert stored[MESSAGES["another@inbox.test"]]["dkim_domain"] == "news.mailha.test"
    assert stored[MESSAGES["someone@inbox.test"]]["dkim_domain"] is None
    assert count == len(records)


def test_other_domains_are_refused(delivery):
    code, text = delivery["relay"]
    assert code == 554
    assert "Relay access denied" in text


def test_main_cf(host):
    output = host.check_output("postfix check && postconf -n")
    settings = dict(line.split(" = ", 1) for line in output.splitlines() if " = " in line)
    assert settings["myhostname"] == "sink.mailha.test"
    assert settings["virtual_mailbox_domains"] == "inbox.test"
    assert settings["virtual_mailbox_maps"] == "static:Maildir/"
    assert settings["smtpd_relay_restrictions"] == "reject_unauth_destination"


# 3000 messages of 200 header lines each in a scratch Maildir: the index must
# stay quick because it reads headers only (the body is 1 MB of text).
BULK = """
import os, subprocess, sys, time
root = "/tmp/bulk-maildir"
for sub in ("new", "cur", "tmp"):
    os.makedirs(os.path.join(root, sub), exist_ok=True)
headers = "".join(f"X-Filler-{i}: {'x' * 60}\\n" for i in range(200))
body = ("y" * 99 + "\\n") * 10000
for n in range(3000):
    with open(os.path.join(root, "new", f"{n:05d}.bulk"), "w") as out:
        out.write(f"Received: from a (b [192.0.2.1])\\n\\tby sink\\nMessage-ID: <{n}@bulk>\\n{headers}\\n{body}")
start = time.monotonic()
lines = subprocess.run(["mailha-sink-index", "--maildir", root], capture_output=True, check=True).stdout.splitlines()
print(len(lines), round(time.monotonic() - start, 2))
"""


def test_index_reads_thousands_of_messages(host):
    result = host.run("python3 -c %s; rm -rf /tmp/bulk-maildir", BULK)
    assert result.rc == 0, result.stderr
    count, seconds = result.stdout.split()
    assert int(count) == 3000
    # A figure, not a limit: the machine is shared.
    print(f"mailha-sink-index: {seconds} s for 3000 messages of 1 MB")


def test_unreadable_maildir_is_an_error(host):
    result = host.run("mailha-sink-index --maildir /nonexistent")
    assert result.rc == 1
    assert "mailha-sink-index" in result.stderr


SINCE = """
import json, os, subprocess
root = "/tmp/since-maildir"
for sub in ("new", "cur", "tmp"):
    os.makedirs(os.path.join(root, sub), exist_ok=True)
for n, stamp in enumerate((1000, 2000, 3000)):
    path = os.path.join(root, "new", f"{n}.since")
    with open(path, "w") as out:
        out.write(f"Message-ID: <{n}@since>\\n\\nbody\\n")
    os.utime(path, (stamp, stamp))
for since in ("2000", "3000.5"):
    out = subprocess.run(["mailha-sink-index", "--maildir", root, "--since", since], capture_output=True, check=True)
    ids = sorted(json.loads(line)["message_id"] for line in out.stdout.decode().splitlines())
    print("[" + ",".join(ids) + "]")
"""


def test_since_lists_only_what_was_stored_from_then_on(host):
    result = host.run("python3 -c %s; rm -rf /tmp/since-maildir", SINCE)
    assert result.rc == 0, result.stderr
    assert result.stdout.splitlines() == ["[<1@since>,<2@since>]", "[]"]
