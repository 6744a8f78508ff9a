"""The controller's DNS setter (mailha.hcloud_dns) against the local fake of
the Hetzner Cloud API (mailha.hcloud_fake), through the real hcloud SDK:
what it asks, when it retries, when it stops and what it prints. Bounds are
a few seconds at most; no test claims a duration."""

import io
import json
import os
import secrets

import pytest

pytest.importorskip("hcloud.zones.domain")

from mailha import hcloud_dns
from mailha.hcloud_fake import FakeHcloud

TOKEN = "hc-" + secrets.token_hex(24)
ZONE = "example.com"
OLD, NEW = "10.0.1.11", "10.0.1.12"


@pytest.fixture
def fake():
    zone = {
        "id": 42,
        "name": ZONE,
        "rrsets": [{"name": "relay", "type": "A", "ttl": 60, "records": [{"value": OLD}]}],
    }
    with FakeHcloud(
        TOKEN, floating_ips=[], servers=[], zones=[zone], readonly_token="ro-" + TOKEN, rrset_latency=0.05
    ) as fake:
        yield fake


class Run:
    def __init__(self, fake, environ):
        self.fake, self.environ = fake, environ

    def __call__(self, *args, value=NEW, name="relay", total=3):
        argv = ["--zone", ZONE, "--name", name, *(["--value", value] if value is not None else [])]
        argv += ["--endpoint", self.fake.endpoint]
        argv += ["--total-seconds", str(total), "--request-timeout", "0.5", "--poll-interval", "0.02"]
        argv += ["--backoff-initial", "0.05", "--backoff-max", "0.3", *args]
        out, err = io.StringIO(), io.StringIO()
        self.code = hcloud_dns.main(argv, environ=self.environ, stdout=out, stderr=err)
        self.out, self.err = out.getvalue(), err.getvalue()
        return self.code


@pytest.fixture
def run(fake):
    return Run(fake, {"HCLOUD_TOKEN": TOKEN})


def test_sets_the_record_and_reads_it_back(run, fake):
    assert run() == hcloud_dns.EXIT_OK
    assert fake.rrset_of(ZONE, "relay", "A") == (60, [NEW])
    assert run.out.startswith(f"relay.{ZONE} A set to {NEW} [")
    assert [r.endpoint for r in fake.calls() if r.endpoint != "get_action"] == [
        "get_zone",
        "get_rrset",
        "set_rrset_records",
        "get_rrset",
    ]
    assert run.err.count("\n") >= 4 and "set_records" in run.err


def test_a_record_that_holds_the_value_already_is_left_alone(run, fake):
    assert run("-o", "json", value=OLD) == hcloud_dns.EXIT_OK
    result = json.loads(run.out)
    assert result["changed"] is False and result["value"] == OLD
    assert fake.calls("set_rrset_records") == [] and fake.calls("create_rrset") == []


def test_a_missing_rrset_is_created_with_the_ttl(run, fake):
    assert run("--ttl", "120", name="active") == hcloud_dns.EXIT_OK
    assert fake.rrset_of(ZONE, "active", "A") == (120, [NEW])
    assert [r.status for r in fake.calls("create_rrset")] == [201]


def test_locked_and_rate_limited_are_retried(run, fake):
    fake.fail("set_rrset_records", "locked", times=2)
    fake.rate_limit("get_rrset", times=1, reset_in=0)
    assert run() == hcloud_dns.EXIT_OK
    assert [r.status for r in fake.calls("set_rrset_records")] == [423, 423, 201]
    assert fake.rrset_of(ZONE, "relay", "A") == (60, [NEW])
    assert run.err.count("retrying in") == 3


def test_a_failed_action_is_retried(run, fake):
    fake.fail_actions(times=1)
    assert run() == hcloud_dns.EXIT_OK
    assert len(fake.calls("set_rrset_records")) == 2
    assert "ended in error" in run.err


@pytest.mark.parametrize(
    "fault, code, fix",
    [
        ("unauthorized", "unauthorized", "wrong or revoked"),
        ("forbidden", "forbidden", "may not change zone"),
        ("protected", "protected", "lift the protection"),
        ("incorrect_zone_mode", "incorrect_zone_mode", "secondary zone"),
    ],
)
def test_refusals_are_one_line_and_not_retried(run, fake, fault, code, fix):
    endpoint = "get_zone" if fault in ("unauthorized", "forbidden") else "set_rrset_records"
    fake.fail(endpoint, code, times=5)
    assert run() == hcloud_dns.EXIT_REFUSED
    assert len(fake.calls(endpoint)) == 1
    assert run.out.count("\n") == 1 and fix in run.out and code in run.out
    assert fake.rrset_of(ZONE, "relay", "A") == (60, [OLD])


def test_a_zone_the_token_cannot_see_is_refused(fake):
    run = Run(fake, {"HCLOUD_TOKEN": TOKEN})
    argv = ["--zone", "other.example", "--name", "relay", "--value", NEW, "--endpoint", fake.endpoint]
    out, err = io.StringIO(), io.StringIO()
    assert hcloud_dns.main(argv, environ=run.environ, stdout=out, stderr=err) == hcloud_dns.EXIT_REFUSED
    assert "zone other.example is not in the token's project" in out.getvalue()


def test_a_read_only_token_is_refused(fake):
    run = Run(fake, {"HCLOUD_TOKEN": "ro-" + TOKEN})
    assert run() == hcloud_dns.EXIT_REFUSED
    assert "token_readonly" in run.out and "read-only" in run.out
    assert fake.rrset_of(ZONE, "relay", "A") == (60, [OLD])


def test_no_answer_gives_up_within_the_bound(run, fake):
    fake.delay("get_zone", 30, times=100)
    assert run(total=1.5) == hcloud_dns.EXIT_GAVE_UP
    assert "gave up after" in run.out and "no answer within 0.5 s" in run.out
    assert run.out.count("\n") == 1


def test_the_token_never_appears_in_output(fake):
    fake.fail("get_zone", "unauthorized", times=1, message=f"token {TOKEN} is not valid")
    run = Run(fake, {"HCLOUD_TOKEN": TOKEN})
    assert run() == hcloud_dns.EXIT_REFUSED
    assert TOKEN not in run.out + run.err and "[token]" in run.err


def test_a_token_file_is_read_and_must_be_private(run, fake, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o644)
    no_env = Run(fake, {})
    assert no_env("--token-file", str(token_file)) == hcloud_dns.EXIT_USAGE
    assert "readable" in no_env.err or "mode" in no_env.err
    os.chmod(token_file, 0o600)
    assert no_env("--token-file", str(token_file)) == hcloud_dns.EXIT_OK


@pytest.mark.parametrize(
    "args, message",
    [
        (["--zone", ZONE, "--name", "relay", "--value", "not-an-ip"], "--value: 'not-an-ip' is not an IP address"),
        (["--zone", ZONE, "--name", "relay", "--value", "2001:db8::1"], "is not an IPv4 address"),
        (["--zone", ZONE, "--name", f"relay.{ZONE}", "--value", NEW], "must be relative to the zone"),
        (["--zone", ZONE, "--name", "relay", "--value", NEW, "--ttl", "5"], "60 seconds or more"),
        (["--zone", ZONE, "--name", "relay", "--value", NEW, "--endpoint", "http://192.0.2.1"], "loopback only"),
        (["--zone", ZONE, "--name", "relay", "--value", NEW, "--ca-file", "rel.pem"], "not an absolute path"),
        (["--zone", ZONE, "--value", NEW], "the following arguments are required: --name"),
    ],
)
def test_bad_arguments_are_one_line_and_ask_nothing(fake, args, message):
    out, err = io.StringIO(), io.StringIO()
    code = hcloud_dns.main(
        [*args, "--endpoint", fake.endpoint] if "--endpoint" not in args else args,
        environ={"HCLOUD_TOKEN": TOKEN},
        stdout=out,
        stderr=err,
    )
    assert code == hcloud_dns.EXIT_USAGE
    assert err.getvalue().count("\n") == 1 and message in err.getvalue()
    assert fake.calls() == []


def test_no_token_is_one_line(fake):
    run = Run(fake, {})
    assert run() == hcloud_dns.EXIT_USAGE
    assert "no Hetzner token: set HCLOUD_TOKEN or pass --token-file" in run.err
    assert fake.calls() == []


class Nameserver:
    """A UDP DNS server on loopback that answers the question with the
    values of `answers` in turn (the last one from then on); None answers
    NXDOMAIN."""

    def __init__(self, answers):
        import socket
        import threading

        self.answers, self.asked = list(answers), 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        import dns.flags
        import dns.message
        import dns.rcode
        import dns.rrset

        while self.running:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            value = self.answers[min(self.asked, len(self.answers) - 1)]
            self.asked += 1
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            question = query.question[0]
            if value is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            else:
                response.answer.append(dns.rrset.from_text(question.name, 60, "IN", question.rdtype, value))
            self.sock.sendto(response.to_wire(), peer)

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture
def nameserver():
    servers = []

    def make(answers):
        servers.append(Nameserver(answers))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_waits_until_the_authoritative_server_answers_the_value(run, fake, nameserver):
    server = nameserver([OLD, OLD, NEW])
    assert run("--wait-nameserver", "127.0.0.1", "--wait-port", str(server.port)) == hcloud_dns.EXIT_OK
    assert server.asked == 3
    assert run.err.count(f"127.0.0.1: relay.{ZONE} A {OLD}") == 2 and f"relay.{ZONE} A {NEW}" in run.err


def test_a_server_that_never_publishes_the_value_is_named(run, fake, nameserver):
    server = nameserver([OLD])
    assert run("--wait-nameserver", "127.0.0.1", "--wait-port", str(server.port), total=1) == hcloud_dns.EXIT_GAVE_UP
    assert fake.rrset_of(ZONE, "relay", "A") == (60, [NEW])
    assert f"the API holds {NEW} but 127.0.0.1 still answers {OLD}" in run.out
    assert run.out.count("\n") == 1


# -- TXT records and --absent (an isolation's DKIM rotation) ---------------

DKIM_TEXT = "v=DKIM1; k=rsa; p=" + "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" * 9


def test_a_txt_records_text_is_published_as_quoted_strings_of_255(run, fake):
    name = "mailha-20261204._domainkey.news"
    assert run("--type", "TXT", "--ttl", "300", value=DKIM_TEXT, name=name) == hcloud_dns.EXIT_OK
    ttl, values = fake.rrset_of(ZONE, name, "TXT")
    assert ttl == 300 and len(values) == 1
    assert values[0].startswith('"v=DKIM1; ') and values[0].endswith('"')
    strings = values[0][1:-1].split('" "')
    assert len(strings) == 2 and len(strings[0]) == 255 and "".join(strings) == DKIM_TEXT
    assert f"{name}.{ZONE} TXT set to " in run.out
    # Again: the rrset holds it already, nothing is changed.
    assert run("--type", "TXT", value=DKIM_TEXT, name=name) == hcloud_dns.EXIT_OK
    assert "already holds" in run.out and len(fake.calls("create_rrset")) == 1


def test_txt_rdata_escapes_quotes_and_backslashes():
    assert hcloud_dns.txt_rdata('a "b" c\\') == '"a \\"b\\" c\\\\"'
    assert hcloud_dns.txt_rdata("x" * 256) == f'"{"x" * 255}" "x"'


def test_absent_deletes_the_rrset_and_then_finds_nothing_to_do(run, fake):
    assert run("--absent", value=None) == hcloud_dns.EXIT_OK
    assert fake.rrset_of(ZONE, "relay", "A") is None
    assert run.out.startswith(f"relay.{ZONE} A removed [")
    assert [r.status for r in fake.calls("delete_rrset")] == [201]
    assert run("--absent", "-o", "json", value=None) == hcloud_dns.EXIT_OK
    result = json.loads(run.out)
    assert result["absent"] is True and result["changed"] is False and result["value"] is None
    assert len(fake.calls("delete_rrset")) == 1


def test_absent_waits_until_the_authoritative_server_has_no_record(run, fake, nameserver):
    server = nameserver([OLD, None])
    assert run("--absent", "--wait-nameserver", "127.0.0.1", "--wait-port", str(server.port), value=None) == 0
    assert server.asked == 2 and "NXDOMAIN" in run.err


def test_absent_names_a_server_that_still_answers(run, fake, nameserver):
    server = nameserver([OLD])
    code = run("--absent", "--wait-nameserver", "127.0.0.1", "--wait-port", str(server.port), value=None, total=1)
    assert code == hcloud_dns.EXIT_GAVE_UP
    assert f"the API holds no such rrset but 127.0.0.1 still answers {OLD}" in run.out


def test_a_protected_rrset_is_not_deleted():
    rrset = {"name": "relay", "type": "A", "ttl": 60, "records": [{"value": OLD}], "protection": {"change": True}}
    with FakeHcloud(TOKEN, floating_ips=[], servers=[], zones=[{"id": 42, "name": ZONE, "rrsets": [rrset]}]) as fake:
        run = Run(fake, {"HCLOUD_TOKEN": TOKEN})
        assert run("--absent", value=None) == hcloud_dns.EXIT_REFUSED
        assert "protected" in run.out and fake.rrset_of(ZONE, "relay", "A") == (60, [OLD])
        assert fake.calls("delete_rrset")[0].status == 423


@pytest.mark.parametrize(
    "args, message",
    [
        (["--value", NEW, "--absent"], "not allowed with argument"),
        ([], "one of the arguments --value --absent is required"),
        (["--type", "TXT", "--value", "tab\there"], "printable"),
    ],
)
def test_value_and_absent_are_one_of_two(fake, args, message):
    out, err = io.StringIO(), io.StringIO()
    argv = ["--zone", ZONE, "--name", "relay", "--endpoint", fake.endpoint, *args]
    assert hcloud_dns.main(argv, environ={"HCLOUD_TOKEN": TOKEN}, stdout=out, stderr=err) == hcloud_dns.EXIT_USAGE
    assert message in err.getvalue() and fake.calls() == []
