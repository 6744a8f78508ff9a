"""mailha_node: the zipapp built from this checkout is installed once, runs
on the node's own python3 with the standard library alone, and every
command it lists can be started."""

import hashlib
import json
import pathlib
import shlex
import subprocess
import sys
import tempfile

import pytest

testinfra_hosts = ["podman://molecule-node"]

PYZ = "/usr/local/lib/mailha/mailha-node.pyz"
ENTRY = "/usr/local/bin/mailha-node"
REPO = pathlib.Path(__file__).resolve().parents[5]


def test_package_and_entry_point_installed(host):
    pyz = host.file(PYZ)
    assert pyz.is_file
    assert (pyz.user, pyz.group, pyz.mode) == ("root", "root", 0o644)
    entry = host.file(ENTRY)
    assert (entry.user, entry.group, entry.mode) == ("root", "root", 0o755)
    assert host.file("/etc/mailha").is_directory


def test_installed_package_is_this_checkouts_build(host):
    """The same bytes as a fresh build of mailha/node here (reproducible)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "node.pyz"
        subprocess.run(
            [sys.executable, "-m", "mailha.node.build", "--output", str(out)],
            cwd=REPO,
            check=True,
        )
        expected = hashlib.sha256(out.read_bytes()).hexdigest()
    assert host.file(PYZ).sha256sum == expected


def test_lists_commands_and_rejects_unknown(host):
    listing = host.run(f"{ENTRY} --help")
    assert listing.rc == 0, listing.stderr
    for command in ("health", "health-agent", "postfix-role", "vrrp-notify", "facts"):
        assert f"  {command} " in listing.stdout
    unknown = host.run(f"{ENTRY} no-such-command")
    assert unknown.rc == 2
    assert "unknown command 'no-such-command'" in unknown.stderr


def test_no_third_party_imports(host):
    """Every module of the package imports on the node's bare python3."""
    script = (
        f"import sys, zipfile; sys.path.insert(0, {PYZ!r}); "
        f"names = [n[:-3].replace('/', '.') for n in zipfile.ZipFile({PYZ!r}).namelist() "
        "if n.endswith('.py') and n != '__main__.py']; "
        "[__import__(n) for n in names]; print(len(names))"
    )
    result = host.run(f"python3 -I -c {shlex.quote(script)}")
    assert result.rc == 0, result.stderr
    assert int(result.stdout) >= 10


@pytest.fixture
def queue_dir(host):
    path = "/tmp/mailha-node-queue"
    host.run(f"rm -rf {path}")
    for sub in ("active", "deferred/A", "hold", "incoming", "maildrop"):
        host.check_output(f"mkdir -p {path}/{sub}")
    host.check_output(f"touch {path}/deferred/A/A1B2C3 {path}/deferred/A/A1B2C4 {path}/hold/H1")
    yield path
    host.run(f"rm -rf {path}")


def test_facts_reads_the_queue_and_addresses(host, queue_dir):
    result = host.run(
        f"{ENTRY} facts --config /nonexistent --floating-ip 10.213.1.199 "
        f"--queue-directory {queue_dir} --vrrp-log /nonexistent --route-file /nonexistent"
    )
    assert result.rc == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["floating_ip"] == "10.213.1.199"
    assert facts["holds_floating_ip"] is False
    assert facts["queue"]["deferred"] == 2
    assert facts["queue"]["hold"] == 1
    assert facts["queue_total"] == 3
    own = host.run(f"{ENTRY} facts --config /nonexistent --floating-ip 10.213.1.91 --get holds_floating_ip")
    assert own.stdout.strip() == "true"


def test_facts_bad_option_is_one_line_usage_error(host):
    result = host.run(f"{ENTRY} facts --get no_such_fact --config /nonexistent")
    assert result.rc == 3
    assert "Traceback" not in result.stderr
    assert "no fact 'no_such_fact'" in result.stderr


def test_events_wait_in_the_spool_while_no_webhook_answers(host):
    """emit only writes the spool (no network: it returns at once, whatever
    the receiver does); the deliverer service keeps the event while the
    webhook at 10.213.1.92 does not answer."""
    assert host.service("mailha-events").is_running
    conf = host.file("/etc/mailha/events.conf").content_string
    assert "webhook_urls=http://10.213.1.92:8088/events" in conf
    spool = "/var/spool/mailha/events"
    before = set(host.check_output(f"ls -1 {spool}").split())
    emitted = host.run(f"{ENTRY} events emit health level=degraded reason=molecule")
    assert emitted.rc == 0, emitted.stderr
    host.run("sleep 3")  # a few of the deliverer's retries (backoff at most 2 s)
    new = [name for name in host.check_output(f"ls -1 {spool}").split() if name not in before]
    events = [name for name in new if name.endswith(".json")]
    assert len(events) == 1, new
    event = json.loads(host.file(f"{spool}/{events[0]}").content_string)
    assert (event["kind"], event["level"], event["reason"]) == ("health", "degraded", "molecule")
    assert host.service("mailha-events").is_running
