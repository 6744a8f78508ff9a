"""The milter runs, and signs: a message sent through the running daemon
comes back with a DKIM-Signature that verifies against the public key."""

import re

import pytest

# podman exec directly: faster than through Ansible.
testinfra_hosts = ["podman://molecule-opendkim"]

KEY = "/etc/opendkim/keys/news.mailha.test/mailha.private"
SOCKET = "/run/opendkim-milter/opendkim.sock"
# The milter client as Postfix runs it: user and primary group postfix, no
# supplementary groups (Postfix drops them).
AS_POSTFIX = "setpriv --reuid postfix --regid postfix --clear-groups"
MESSAGE = (
    "From: Campaign <campaign@news.mailha.test>\r\n"
    "To: someone@inbox.test\r\n"
    "Subject: DKIM test\r\n"
    "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
    "Message-ID: <dkim-test@news.mailha.test>\r\n"
    "\r\n"
    "Hello from the sending pair.\r\n"
)


def tags(signature):
    """The tags of a DKIM-Signature header value, unfolded."""
    value = re.sub(r"\s+", "", signature)
    return dict(tag.split("=", 1) for tag in value.split(";") if "=" in tag)


@pytest.fixture
def message(host):
    path = "/tmp/dkim-test.eml"
    host.check_output("printf '%%s' %s > %s", MESSAGE, path)
    return path


def test_opendkim_runs_on_a_unix_socket_only(host):
    assert host.service("opendkim").is_enabled
    assert host.service("opendkim").is_running
    assert host.socket(f"unix://{SOCKET}").is_listening
    # Nothing on TCP: OpenDKIM's only listener is the socket.
    listening = host.check_output("ss -Hltnp")
    assert "opendkim" not in listening


def test_only_the_mta_group_may_connect(host):
    directory = host.file("/run/opendkim-milter")
    assert (directory.user, directory.group, directory.mode) == ("opendkim", "postfix", 0o2750)
    assert host.file(SOCKET).group == "postfix"
    # nobody is neither opendkim nor in group postfix: the directory stops it.
    as_nobody = "setpriv --reuid nobody --regid nogroup --clear-groups"
    denied = host.run(f"{as_nobody} milter_sign.py unix:%s < /dev/null", SOCKET)
    assert denied.rc != 0 and "Permission denied" in denied.stderr


def test_the_socket_directory_comes_back_after_a_boot(host):
    entry = host.file("/etc/tmpfiles.d/mailha-opendkim.conf").content_string
    assert "d /run/opendkim-milter 2750 opendkim postfix -" in entry


def test_configuration_is_valid(host):
    host.check_output("opendkim -n -x /etc/opendkim.conf")


def test_key_is_private_to_opendkim(host):
    key = host.file(KEY)
    assert key.user == "opendkim"
    assert key.group == "opendkim"
    assert key.mode == 0o600
    assert host.file("/etc/opendkim/keys/news.mailha.test").mode == 0o700


def test_running_milter_signs(host, message):
    headers = host.check_output(f"{AS_POSTFIX} milter_sign.py unix:{SOCKET} < %s", message)
    assert headers.startswith("DKIM-Signature:")
    signature = tags(headers.split(":", 1)[1])
    assert signature["d"] == "news.mailha.test"
    assert signature["s"] == "mailha"
    assert signature["a"] == "rsa-sha256"
    assert signature["c"] == "relaxed/simple"


def test_test_mode_signs_with_the_same_configuration(host, message):
    # opendkim -t runs the message through the filter offline and prints the
    # headers it would add.
    out = host.run("opendkim -x /etc/opendkim.conf -t %s", message)
    assert out.rc == 0, out.stderr
    assert "DKIM-Signature:" in out.stdout
    signature = tags(out.stdout.split("DKIM-Signature:", 1)[1])
    assert (signature["d"], signature["s"]) == ("news.mailha.test", "mailha")


def test_signature_verifies_with_the_public_key(host, message):
    # The signed message, verified by OpenDKIM against the public key derived
    # from the installed private key (TestPublicKeys instead of a DNS lookup).
    host.check_output(
        "set -e; cd /tmp; "
        f"{{ {AS_POSTFIX} milter_sign.py unix:{SOCKET} < %s | sed 's/$/\\r/'; cat %s; }} > dkim-signed.eml; "
        "p=$(openssl pkey -in %s -pubout | grep -v -- ----- | tr -d '\\n'); "
        'echo "mailha._domainkey.news.mailha.test v=DKIM1; k=rsa; p=$p" > dkim-test-keys; '
        "printf 'Mode v\\nTestPublicKeys /tmp/dkim-test-keys\\nAuthservID verify.test\\n' > dkim-verify.conf",
        message,
        message,
        KEY,
    )
    # -vv prints the Authentication-Results header the verifier would add.
    verified = host.check_output("opendkim -vv -x /tmp/dkim-verify.conf -t /tmp/dkim-signed.eml 2>&1")
    assert "dkim=pass" in verified
    assert "header.d=news.mailha.test" in verified
    # The same signature over a changed body must fail.
    host.check_output("sed -i 's/Hello/Hullo/' /tmp/dkim-signed.eml")
    tampered = host.check_output("opendkim -vv -x /tmp/dkim-verify.conf -t /tmp/dkim-signed.eml 2>&1")
    assert "dkim=fail" in tampered
