"""mailha preflight without a lab: each check against a real DNS server on
loopback (tests/unit/dns_server.py), certificates made here, a STARTTLS
server on loopback, and the relays' facts as the read-only playbook prints
them."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import socketserver
import ssl
import threading
from decimal import Decimal
from functools import partial
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID

from mailha import inventory, probes
from mailha import pair as pair_mod
from mailha.cli import main
from mailha.errors import MailhaError
from mailha.preflight import dns_checks, facts, relays, report, spf, tls
from mailha.preflight.result import FAIL, PASS, WARN, Result, exit_code
from mailha.runner import HostReport, PlaybookResult, _Progress
from tests.unit.dns_server import LocalDnsServer
from tests.unit.test_bad_input import one_line_error
from tests.unit.test_inventory import CONTRACT

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
FLOATING_IP = "10.213.0.100"


@pytest.fixture(autouse=True)
def nothing_reaches_a_pair(monkeypatch):
    """DNS only to the local server, no playbook: the lab's real servers may be up."""
    real_resolver = probes.resolver

    def loopback_only(address, timeout=1.0, port=53):
        assert address == "127.0.0.1", f"a test asked the name server {address}"
        return real_resolver(address, timeout, port)

    def refuse(*_args, **_kwargs):
        raise AssertionError("a test ran a playbook")

    monkeypatch.setattr(probes, "resolver", loopback_only)
    monkeypatch.setattr(facts, "run_playbook", refuse)


@pytest.fixture
def dns_server():
    server = LocalDnsServer().start()
    yield server
    server.stop()


# Generous: on a busy machine a loopback answer can take a while; only the
# tests of silence wait this long.
DNS_TIMEOUT = 3.0


@pytest.fixture
def lookup(dns_server):
    return partial(probes.dns_lookup, probes.resolver("127.0.0.1", DNS_TIMEOUT, port=dns_server.port))


def levels(results: list[Result]) -> list[str]:
    return [r.level for r in results]


# The local DNS server ---------------------------------------------------------


def test_the_local_dns_server_answers_as_an_authoritative_server_does(dns_server, lookup):
    long_text = "v=DKIM1; k=rsa; p=" + "A" * 700  # over 512 bytes: truncated over UDP, whole over TCP
    dns_server.add("mta.example.test", "A", "10.213.0.100")
    dns_server.add("key.example.test", "TXT", " ".join(f'"{long_text[i : i + 255]}"' for i in range(0, 718, 255)))
    dns_server.add("deep.below.example.test", "A", "10.0.0.1")
    dns_server.fail("broken.example.test", "SERVFAIL")
    assert [r.address for r in lookup("mta.example.test", "A").records] == ["10.213.0.100"]
    assert lookup("mta.example.test", "TXT").status == "nodata"
    assert lookup("below.example.test", "A").status == "nodata"  # a name with only names below it exists
    assert lookup("nothing.example.test", "A").status == "nxdomain"
    assert b"".join(lookup("key.example.test", "TXT").records[0].strings).decode() == long_text
    failed = lookup("broken.example.test", "A")
    assert failed.status == "error" and "SERVFAIL" in failed.error


def test_a_name_server_that_does_not_answer_is_an_error_within_the_timeout(dns_server):
    dns_server.ignore("slow.example.test")
    answer = probes.dns_lookup(probes.resolver("127.0.0.1", 0.3, port=dns_server.port), "slow.example.test", "A")
    assert answer.status == "error"
    assert "no answer within 0.3s" in answer.error


def txt(text: str) -> str:
    """A TXT value as the bind role writes it: strings of at most 255 bytes."""
    return " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))


# SPF ------------------------------------------------------------------------------


def spf_record(server: LocalDnsServer, domain: str, text: str) -> None:
    server.add(domain, "TXT", txt(text))


def test_spf_follows_includes_to_the_floating_ip(dns_server, lookup):
    spf_record(dns_server, "news.example.test", "v=spf1 include:_spf.esp.test include:_spf.example.test -all")
    spf_record(dns_server, "_spf.esp.test", "v=spf1 ip4:192.0.2.0/24 ~all")
    spf_record(dns_server, "_spf.example.test", "v=spf1 ip4:10.213.0.96/28 -all")
    evaluation = spf.evaluate(lookup, FLOATING_IP, "news.example.test")
    assert (evaluation.result, evaluation.matched, evaluation.lookups) == (
        "pass",
        "ip4:10.213.0.96/28 in _spf.example.test",
        2,
    )
    result = spf.check(lookup, FLOATING_IP, "news.example.test", subject="floating IP")
    assert result.level == PASS
    assert "2 of 10 lookups" in result.reason


def test_spf_follows_a_redirect_but_not_when_the_record_has_all(dns_server, lookup):
    spf_record(dns_server, "news.example.test", "v=spf1 redirect=_spf.example.test")
    spf_record(dns_server, "_spf.example.test", "v=spf1 a:mta.example.test -all")
    dns_server.add("mta.example.test", "A", FLOATING_IP)
    assert spf.evaluate(lookup, FLOATING_IP, "news.example.test").result == "pass"
    spf_record(dns_server, "ignored.example.test", "v=spf1 ?all redirect=_spf.example.test")
    assert spf.evaluate(lookup, FLOATING_IP, "ignored.example.test").result == "neutral"
    spf_record(dns_server, "nowhere.example.test", "v=spf1 redirect=none.example.test")
    evaluation = spf.evaluate(lookup, FLOATING_IP, "nowhere.example.test")
    assert evaluation.result == "permerror"
    assert "redirect=none.example.test has no SPF record" in evaluation.problem


def test_spf_include_loop_is_a_permerror_and_fails(dns_server, lookup):
    spf_record(dns_server, "news.example.test", "v=spf1 include:a.example.test -all")
    spf_record(dns_server, "a.example.test", "v=spf1 include:b.example.test ~all")
    spf_record(dns_server, "b.example.test", "v=spf1 include:a.example.test ~all")
    evaluation = spf.evaluate(lookup, FLOATING_IP, "news.example.test")
    assert evaluation.result == "permerror"
    assert evaluation.problem == "loop: news.example.test -> a.example.test -> b.example.test -> a.example.test"
    result = spf.check(lookup, FLOATING_IP, "news.example.test", subject="floating IP")
    assert result.level == FAIL and "loop" in result.reason


def test_spf_loop_after_the_match_still_fails(dns_server, lookup):
    spf_record(dns_server, "news.example.test", f"v=spf1 ip4:{FLOATING_IP} include:a.example.test -all")
    spf_record(dns_server, "a.example.test", "v=spf1 include:news.example.test ~all")
    assert spf.evaluate(lookup, FLOATING_IP, "news.example.test").result == "pass"
    result = spf.check(lookup, FLOATING_IP, "news.example.test", subject="floating IP")
    assert result.level == FAIL
    assert "loop: news.example.test -> a.example.test -> news.example.test" in result.reason


def test_spf_more_than_ten_lookups_is_a_permerror(dns_server, lookup):
    includes = " ".join(f"include:s{i}.example.test" for i in range(11))
    spf_record(dns_server, "news.example.test", f"v=spf1 {includes} ip4:{FLOATING_IP} -all")
    for i in range(11):
        spf_record(dns_server, f"s{i}.example.test", f"v=spf1 ip4:192.0.2.{i} -all")
    evaluation = spf.evaluate(lookup, FLOATING_IP, "news.example.test")
    assert evaluation.result == "permerror"
    assert "the 11th is include:s10.example.test" in evaluation.problem
    assert spf.check(lookup, FLOATING_IP, "news.example.test", subject="floating IP").level == FAIL


def test_spf_that_passes_early_but_needs_eleven_lookups_in_all_fails(dns_server, lookup):
    names = " ".join(f"a:h{i}.example.test" for i in range(11))
    spf_record(dns_server, "news.example.test", f"v=spf1 ip4:{FLOATING_IP} {names} -all")
    assert spf.evaluate(lookup, FLOATING_IP, "news.example.test").result == "pass"
    result = spf.check(lookup, FLOATING_IP, "news.example.test", subject="floating IP")
    assert result.level == FAIL
    assert "needs 11 DNS lookups in all" in result.reason
    spf_record(dns_server, "ten.example.test", f"v=spf1 ip4:{FLOATING_IP} {' '.join(names.split()[:10])} -all")
    assert spf.check(lookup, FLOATING_IP, "ten.example.test", subject="floating IP").level == PASS


def test_spf_more_than_two_void_lookups_is_a_permerror(dns_server, lookup):
    spf_record(dns_server, "news.example.test", f"v=spf1 a:gone1.test a:gone2.test a:gone3.test ip4:{FLOATING_IP} -all")
    evaluation = spf.evaluate(lookup, FLOATING_IP, "news.example.test")
    assert evaluation.result == "permerror"
    assert "more than 2 lookups found nothing" in evaluation.problem


def test_spf_that_does_not_cover_the_floating_ip_fails_with_the_mechanism_to_add(dns_server, lookup):
    spf_record(dns_server, "news.example.test", "v=spf1 ip4:192.0.2.1 ~all")
    result = spf.check(lookup, FLOATING_IP, "news.example.test", subject="floating IP")
    assert result.level == FAIL
    assert "the result is softfail (~all in news.example.test)" in result.reason
    assert f"ip4:{FLOATING_IP}" in result.fix
    assert "there is no SPF record" in spf.check(lookup, FLOATING_IP, "none.example.test", subject="x").reason


def test_spf_mx_a_with_prefix_ip6_and_exists_with_macros(dns_server, lookup):
    dns_server.add("news.example.test", "MX", "10 mx.example.test.")
    dns_server.add("mx.example.test", "A", "10.213.0.50")
    dns_server.add("100.0.213.10.bl.example.test", "A", "127.0.0.2")
    spf_record(dns_server, "mx.example.test", "v=spf1 mx:news.example.test/24 -all")
    spf_record(dns_server, "v6.example.test", "v=spf1 ip6:2001:db8::/32 -all")
    spf_record(dns_server, "exists.example.test", "v=spf1 exists:%{ir}.bl.%{o} -all")
    spf_record(dns_server, "macro.example.test", "v=spf1 exists:%{i2r}.nothing.example.test -all")
    assert spf.evaluate(lookup, FLOATING_IP, "mx.example.test").result == "pass"
    assert spf.evaluate(lookup, "2001:db8::25", "v6.example.test").result == "pass"
    assert spf.evaluate(lookup, FLOATING_IP, "v6.example.test").result == "fail"
    exists = spf.evaluate(lookup, FLOATING_IP, "exists.example.test", sender="campaign@example.test")
    assert (exists.result, exists.matched) == ("pass", "exists:%{ir}.bl.%{o} in exists.example.test")
    assert spf.evaluate(lookup, FLOATING_IP, "macro.example.test").result == "fail"
    assert ("213.10.nothing.example.test.", "A") in dns_server.queries  # reversed, then the rightmost two


def test_spf_syntax_errors_and_two_records_are_permerrors(dns_server, lookup):
    spf_record(dns_server, "typo.example.test", "v=spf1 ip4:10.213.0.100 inclde:x.test -all")
    spf_record(dns_server, "bad.example.test", "v=spf1 ip4:10.213.0.300 -all")
    dns_server.add("two.example.test", "TXT", '"v=spf1 -all"', '"v=spf1 ~all"')
    assert "unknown term 'inclde:x.test'" in spf.evaluate(lookup, FLOATING_IP, "typo.example.test").problem
    assert "not an address or network" in spf.evaluate(lookup, FLOATING_IP, "bad.example.test").problem
    assert "2 SPF records" in spf.evaluate(lookup, FLOATING_IP, "two.example.test").problem


def test_spf_that_cannot_be_looked_up_warns(dns_server, lookup):
    spf_record(dns_server, "news.example.test", "v=spf1 include:_spf.broken.test -all")
    dns_server.fail("_spf.broken.test", "SERVFAIL")
    assert spf.evaluate(lookup, FLOATING_IP, "news.example.test").result == "temperror"
    assert spf.check(lookup, FLOATING_IP, "news.example.test", subject="floating IP").level == WARN


# Reverse DNS (FCrDNS) ---------------------------------------------------------------


def test_reverse_dns_passes_when_the_ptr_is_the_helo_name_and_resolves_back(dns_server, lookup):
    dns_server.add("100.0.213.10.in-addr.arpa", "PTR", "mta.example.test.")
    dns_server.add("mta.example.test", "A", FLOATING_IP)
    result = dns_checks.reverse_dns(lookup, FLOATING_IP, "mta.example.test", subject="floating IP", who="the relays")
    assert result.level == PASS and "FCrDNS" in result.reason


@pytest.mark.parametrize(
    ("records", "level", "words"),
    [
        ([], FAIL, "has no PTR record"),
        ([("100.0.213.10.in-addr.arpa", "PTR", "host-100.isp.test.")], FAIL, "but the relays introduce"),
        (
            [("100.0.213.10.in-addr.arpa", "PTR", "mta.example.test."), ("mta.example.test", "A", "10.213.0.99")],
            FAIL,
            "resolves to 10.213.0.99, not back to 10.213.0.100",
        ),
        ([("100.0.213.10.in-addr.arpa", "PTR", "mta.example.test.")], FAIL, "resolves to nothing"),
        (
            [
                ("100.0.213.10.in-addr.arpa", "PTR", "mta.example.test."),
                ("100.0.213.10.in-addr.arpa", "PTR", "other.example.test."),
                ("mta.example.test", "A", FLOATING_IP),
            ],
            WARN,
            "has 2 PTR records",
        ),
    ],
)
def test_reverse_dns_failures(dns_server, lookup, records, level, words):
    dns_server.add("example.test", "SOA", "ns.example.test. hostmaster.example.test. 1 3600 600 1209600 300")
    for name, rdtype, value in records:
        dns_server.add(name, rdtype, value)
    result = dns_checks.reverse_dns(lookup, FLOATING_IP, "mta.example.test", subject="floating IP", who="the relays")
    assert result.level == level
    assert words in result.reason
    assert result.fix


def test_reverse_dns_that_cannot_be_looked_up_warns(dns_server, lookup):
    dns_server.fail("100.0.213.10.in-addr.arpa", "REFUSED")
    result = dns_checks.reverse_dns(lookup, FLOATING_IP, "mta.example.test", subject="floating IP", who="the relays")
    assert result.level == WARN and "REFUSED" in result.reason
    assert "mailha_preflight_resolver" in result.fix


# DKIM ------------------------------------------------------------------------


def rsa_public(bits: int) -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def rsa_2048():
    return rsa_public(2048)


def test_dkim_key_of_2048_bits_split_over_two_strings_parses(dns_server, lookup, rsa_2048):
    dns_server.add("mailha._domainkey.news.example.test", "TXT", txt(f"v=DKIM1; k=rsa; p={rsa_2048[1]}"))
    result, key = dns_checks.dkim_record(lookup, "mailha", "news.example.test")
    assert result.level == PASS and "RSA, 2048 bits" in result.reason
    assert key.der == base64.b64decode(rsa_2048[1])


def test_dkim_key_under_2048_bits_fails(dns_server, lookup):
    dns_server.add("mailha._domainkey.news.example.test", "TXT", txt(f"p={rsa_public(1024)[1]}"))
    result, key = dns_checks.dkim_record(lookup, "mailha", "news.example.test")
    assert result.level == FAIL and "RSA of 1024 bits" in result.reason
    assert key.bits == 1024


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("v=DKIM1; k=rsa; p=", "the key is revoked"),
        ("v=DKIM1; k=rsa; p=bm90IGEga2V5", "not an RSA public key"),
        ("v=DKIM1; k=rsa; p=***", "not base64"),
        ("k=rsa; v=DKIM1; p=AAAA", "v= must be DKIM1 and come first"),
        ("v=DKIM1; k=dsa; p=AAAA", "k=dsa is not a key type"),
        ("v=DKIM1; h=sha1; p=AAAA", "allows no sha256"),
        ("v=DKIM1; k=rsa", "no p= (public key) tag"),
        ("v=DKIM1; p=AAAA; p=AAAA", "the tag p appears twice"),
    ],
)
def test_unusable_dkim_records_fail(dns_server, lookup, text, words):
    dns_server.add("mailha._domainkey.news.example.test", "TXT", txt(text))
    result, key = dns_checks.dkim_record(lookup, "mailha", "news.example.test")
    assert result.level == FAIL and words in result.reason
    assert key is None


def test_dkim_testing_mode_and_ed25519_warn_and_a_missing_key_fails(dns_server, lookup, rsa_2048):
    dns_server.add("t._domainkey.news.example.test", "TXT", txt(f"v=DKIM1; t=y; p={rsa_2048[1]}"))
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    dns_server.add(
        "ed._domainkey.news.example.test", "TXT", f'"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"'
    )
    assert dns_checks.dkim_record(lookup, "t", "news.example.test")[0].level == WARN
    assert dns_checks.dkim_record(lookup, "ed", "news.example.test")[0].level == WARN
    missing, _ = dns_checks.dkim_record(lookup, "gone", "news.example.test")
    assert missing.level == FAIL and "no DKIM key at gone._domainkey.news.example.test" in missing.reason


# DMARC -----------------------------------------------------------------------------


def test_dmarc_record_parses():
    tags = dns_checks.parse_dmarc_record("v=DMARC1; p=reject; adkim=s; aspf=r; rua=mailto:d@example.test; pct=100")
    assert tags["p"] == "reject" and tags["adkim"] == "s"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("p=reject; v=DMARC1", "must start with v=DMARC1"),
        ("v=DMARC1; adkim=s", "no p= (policy) tag"),
        ("v=DMARC1; p=block", "p=block is not one of none, quarantine, reject"),
        ("v=DMARC1; p=none; pct=150", "pct=150 is not a percentage"),
        ("v=DMARC1; p=none; rua=d@example.test", "not a mailto: address"),
        ("v=DMARC1; p=none; aspf=x", "aspf=x is not r or s"),
    ],
)
def test_dmarc_records_that_do_not_parse(text, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        dns_checks.parse_dmarc_record(text)


def test_dmarc_found_at_the_domain_inherited_from_a_parent_missing_or_doubled(dns_server, lookup):
    dns_server.add("_dmarc.news.example.test", "TXT", '"v=DMARC1; p=reject; adkim=s; aspf=r"')
    own = dns_checks.dmarc(lookup, "news.example.test")
    assert own.level == PASS and "DMARC policy reject at _dmarc.news.example.test" in own.reason
    dns_server.add("_dmarc.other.test", "TXT", '"v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@other.test"')
    inherited = dns_checks.dmarc(lookup, "news.other.test")
    assert inherited.level == PASS and "quarantine at _dmarc.other.test (inherited from other.test)" in inherited.reason
    assert dns_checks.dmarc(lookup, "news.missing.test").level == FAIL
    dns_server.add("_dmarc.two.test", "TXT", '"v=DMARC1; p=none"', '"v=DMARC1; p=reject"')
    assert "2 DMARC records" in dns_checks.dmarc(lookup, "two.test").reason
    dns_server.add("_dmarc.broken.test", "TXT", '"v=DMARC1; p=maybe"')
    assert dns_checks.dmarc(lookup, "broken.test").level == FAIL


# DNS blocklists --------------------------------------------------------------------


def test_blocklist_query_names_reverse_the_address():
    assert dns_checks.blocklist_name("10.213.0.100", "bl.example.test") == "100.0.213.10.bl.example.test"
    assert dns_checks.blocklist_name("2001:db8::1", "bl6.example.test") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl6.example.test"
    )


def test_blocklist_listing_clear_refusal_and_odd_answers(dns_server, lookup):
    dns_server.add("100.0.213.10.bl.example.test", "A", "127.0.0.2", "127.0.0.4")
    dns_server.add("100.0.213.10.bl.example.test", "TXT", '"Listed: spam trap hits, see https://bl.example.test"')
    dns_server.add("11.0.213.10.bl.example.test", "A", "127.255.255.254")
    dns_server.add("12.0.213.10.bl.example.test", "A", "198.51.100.7")
    dns_server.fail("13.0.213.10.bl.example.test", "SERVFAIL")
    listed = dns_checks.blocklist(lookup, FLOATING_IP, "bl.example.test", subject="floating IP")
    assert listed.level == FAIL
    assert listed.reason == (
        "10.213.0.100 is listed on bl.example.test (127.0.0.2, 127.0.0.4): Listed: spam trap hits, "
        "see https://bl.example.test"
    )
    assert dns_checks.blocklist(lookup, "10.213.0.10", "bl.example.test", subject="x").level == PASS
    refused = dns_checks.blocklist(lookup, "10.213.0.11", "bl.example.test", subject="mx1")
    assert refused.level == WARN and "refused to answer" in refused.reason
    odd = dns_checks.blocklist(lookup, "10.213.0.12", "bl.example.test", subject="mx2")
    assert odd.level == WARN and "not a blocklist answer" in odd.reason
    assert dns_checks.blocklist(lookup, "10.213.0.13", "bl.example.test", subject="x").level == WARN


def test_a_blocklist_must_list_its_test_entry_and_not_127_0_0_1(dns_server, lookup):
    dns_server.add("2.0.0.127.bl.example.test", "A", "127.0.0.2")
    dns_server.add("2.0.0.127.bl.example.test", "TXT", '"test entry"')
    answering = dns_checks.blocklist_answers(lookup, "bl.example.test")
    assert answering.level == PASS
    assert answering.details == ["127.0.0.2: listed (127.0.0.2): test entry", "127.0.0.1: clear"]
    silent = dns_checks.blocklist_answers(lookup, "typo.example.test")
    assert silent.level == WARN and "does not list its test entry 127.0.0.2" in silent.reason
    dns_server.add("2.0.0.127.all.example.test", "A", "127.0.0.2")
    dns_server.add("1.0.0.127.all.example.test", "A", "127.0.0.2")
    assert "lists 127.0.0.1" in dns_checks.blocklist_answers(lookup, "all.example.test").reason


# TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(key, common_name="mta.example.test", alt_names=("mta.example.test",), days=(-30, 365)):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0]))
        .not_valid_after(NOW + dt.timedelta(days=days[1]))
    )
    if alt_names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in alt_names]), False)
    return builder.sign(key, hashes.SHA256())


def judge(cert, host="mta.example.test", warning_days=21):
    der = cert.public_bytes(serialization.Encoding.DER)
    return tls.judge_certificate(der, host, NOW, warning_days, subject="mx1", port=25)


def test_tls_certificate_valid_for_the_sending_host_passes(tls_key):
    result = judge(certificate(tls_key))
    assert result.level == PASS and "valid for mta.example.test until" in result.reason
    assert "self-signed" in result.details[0]
    cn_only = judge(certificate(tls_key, alt_names=None))  # what the postfix role makes by default
    assert cn_only.level == PASS and "common name (no subjectAltName)" in cn_only.details[0]
    assert judge(certificate(tls_key, alt_names=("*.example.test",))).level == PASS


@pytest.mark.parametrize(
    ("kwargs", "level", "words"),
    [
        ({"alt_names": ("mx1.example.test",)}, FAIL, "not valid for mta.example.test; it is for mx1.example.test"),
        ({"alt_names": ("*.test",)}, FAIL, "not valid for mta.example.test"),
        ({"days": (-400, -1)}, FAIL, "expired on"),
        ({"days": (2, 400)}, FAIL, "not valid before"),
        ({"days": (-300, 20)}, WARN, "expires in 20 days"),
        ({"days": (-300, 22)}, PASS, "(22 days)"),
    ],
)
def test_tls_certificate_name_and_dates(tls_key, kwargs, level, words):
    result = judge(certificate(tls_key, **kwargs))
    assert result.level == level
    assert words in result.reason
    assert bool(result.fix) == (level != PASS)


def test_tls_name_matching_follows_rfc_6125():
    assert tls.name_matches("*.example.test", "mta.example.test")
    assert not tls.name_matches("*.example.test", "a.mta.example.test")
    assert not tls.name_matches("*.example.test", "example.test")
    assert not tls.name_matches("m*.example.test", "mta.example.test")
    assert tls.name_matches("MTA.example.test.", "mta.example.test")


class _StartTlsSession(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"220 mta.example.test ESMTP\r\n")
        while line := self.rfile.readline():
            verb = line.decode().strip().split(" ")[0].upper()
            if verb == "EHLO":
                offer = b"250-STARTTLS\r\n" if self.server.offer_tls else b""
                self.wfile.write(b"250-mta.example.test\r\n" + offer + b"250 8BITMIME\r\n")
            elif verb == "STARTTLS":
                self.wfile.write(b"220 2.0.0 Ready to start TLS\r\n")
                self.wfile.flush()
                with self.server.context.wrap_socket(self.connection, server_side=True) as wrapped:
                    wrapped.recv(1024)  # QUIT, or the client closing
                return
            else:
                self.wfile.write(b"221 bye\r\n")
                return


@pytest.fixture
def starttls_server(tmp_path, tls_key):
    cert = certificate(tls_key, days=(-1, 10))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        tls_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _StartTlsSession)
    server.daemon_threads = True
    server.offer_tls = True
    server.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_tls_certificate_is_read_after_starttls(starttls_server, tls_key):
    port = starttls_server.server_address[1]
    der = tls.fetch_certificate("127.0.0.1", port, timeout=5)
    result = tls.judge_certificate(der, "mta.example.test", dt.datetime.now(dt.UTC), 21, subject="mx1", port=port)
    assert result.level == WARN and "expires in" in result.reason
    starttls_server.offer_tls = False
    with pytest.raises(tls.CertificateUnavailable, match="does not offer STARTTLS"):
        tls.fetch_certificate("127.0.0.1", port, timeout=5)


def test_tls_check_of_a_relay_that_does_not_listen_fails_for_each_port():
    results = tls.check_relay("127.0.0.1", "mta.example.test", NOW, 21, 2, subject="mx1")
    if any(r.level != FAIL for r in results):
        pytest.skip("something on this machine listens on 25 or 587")
    assert [r.reason.split(":")[0] for r in results] == ["no certificate from 127.0.0.1"] * 2


# The relays' facts, as playbooks/relay-facts.yml prints them ---------------------


POSTCONF = """compatibility_level = 3.6
myhostname = mta.mailha.test
mydomain = mailha.test
myorigin = $myhostname
mydestination = $myhostname, localhost
inet_interfaces = all
smtpd_banner = $myhostname ESMTP {tag}
mynetworks = 127.0.0.0/8 10.213.0.1/32 10.213.0.11 10.213.0.12
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
transport_maps = texthash:/etc/postfix/mailha_role_transport
smtpd_milters = unix:/run/opendkim-milter/opendkim.sock
smtp_bind_address = 10.213.0.100
smtpd_tls_cert_file = /etc/ssl/certs/mailha-postfix.pem
minimal_backoff_time = 5s
maximal_backoff_time = 20s
message_size_limit = {size}
default_destination_concurrency_limit = 20"""

OPENDKIM = """# Ansible managed
Syslog\t\t\tyes
UserID\t\t\topendkim:opendkim
Socket\t\t\tlocal:/run/opendkim-milter/opendkim.sock
Mode\t\t\ts
Canonicalization\trelaxed/simple
SignatureAlgorithm\trsa-sha256

# One domain, one key: mail whose From is in Domain, from InternalHosts, is signed.
Domain\t\t\tnews.mailha.test
Selector\t\t{selector}
KeyFile\t\t\t/etc/opendkim/keys/news.mailha.test/{selector}.private
InternalHosts\t\t/etc/opendkim/internal-hosts"""

KEEPALIVED = """# Ansible managed
global_defs {{
  enable_script_security
  script_user root{startup_delay}
}}

vrrp_instance mailha {{
  # keepalived drops nopreempt when the initial state is MASTER, so every
  # node starts as BACKUP (intended initial state: {state})
  state BACKUP
  nopreempt
  interface eth0
  virtual_router_id 51
  version 3
  advert_int {advert}
  priority {priority}
  include /etc/keepalived/mailha-priority.conf
  unicast_src_ip {address}
  check_unicast_src
  unicast_peer {{
    {peer}
  }}
  virtual_ipaddress {{
    10.213.0.100/24 dev eth0
  }}
  notify /usr/local/sbin/mailha-vrrp-notify
}}"""


def facts_output(
    node="mx1",
    *,
    size="10240000",
    selector="mailha",
    advert="0.2",
    postfix="3.7.11-0+deb12u1",
    free_kb=9_000_000,
    public_key="",
    extra_opendkim="",
):
    address, peer, priority, tag = {
        "mx1": ("10.213.0.11", "10.213.0.12", 150, "a1b2c3d4e5"),
        "mx2": ("10.213.0.12", "10.213.0.11", 100, "0f9e8d7c6b"),
    }[node]
    keepalived = KEEPALIVED.format(
        state="MASTER" if node == "mx1" else "BACKUP",
        # The intended BACKUP waits at start (roles/keepalived, nopreempt).
        startup_delay="" if node == "mx1" else "\n  vrrp_startup_delay 2",
        advert=advert,
        priority=priority,
        address=address,
        peer=peer,
    )
    return "\n".join(
        [
            "### postconf",
            POSTCONF.format(tag=tag, size=size),
            "### limits",
            "smtp_helo_name = mta.mailha.test",
            f"message_size_limit = {size}",
            "queue_minfree = 0",
            "### opendkim",
            OPENDKIM.format(selector=selector) + extra_opendkim,
            "### keepalived",
            keepalived,
            "### packages",
            "keepalived 1:2.2.7-1+b2 installed",
            f"postfix {postfix} installed",
            "opendkim 2.11.0~beta2-8+deb12u1 installed",
            "### spool",
            "Filesystem     1024-blocks     Used Available Capacity Mounted on",
            f"overlay         61611820 40000000  {free_kb}      82% /",
            "### dkim",
            public_key.strip(),
        ]
    )


@pytest.fixture(scope="module")
def signing_key_pem(rsa_2048):
    return (
        rsa_2048[0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def pair_facts(mx1="", mx2="", **kwargs):
    return {
        "mx1": facts.parse_facts("mx1", mx1 or facts_output("mx1", **kwargs)),
        "mx2": facts.parse_facts("mx2", mx2 or facts_output("mx2", **kwargs)),
    }


def test_facts_parse_from_the_playbooks_output(signing_key_pem):
    f = facts.parse_facts("mx1", facts_output("mx1", public_key=signing_key_pem))
    assert f.postconf["message_size_limit"] == "10240000"
    assert f.postconf["smtpd_banner"] == "$myhostname ESMTP a1b2c3d4e5"
    assert f.limits["smtp_helo_name"] == "mta.mailha.test"
    assert f.setting(f.opendkim, "Selector") == "mailha"
    assert "Canonicalization relaxed/simple" in f.opendkim
    assert "unicast_src_ip 10.213.0.11" in f.keepalived
    assert f.packages == {
        "keepalived": "1:2.2.7-1+b2",
        "postfix": "3.7.11-0+deb12u1",
        "opendkim": "2.11.0~beta2-8+deb12u1",
    }
    assert f.spool_free_bytes == 9_000_000 * 1024
    assert f.dkim_public_key.startswith("-----BEGIN PUBLIC KEY-----")
    assert f.problems == {}


def test_facts_name_the_sections_that_failed():
    text = facts_output("mx2").replace(
        "### dkim\n", "### dkim\n!!! cannot read the key /etc/opendkim/keys/news.mailha.test/mailha.private\n"
    )
    text = text.replace("postfix 3.7.11-0+deb12u1 installed", "dpkg-query: no packages found matching postfix")
    f = facts.parse_facts("mx2", text)
    assert f.problems["dkim"] == "cannot read the key /etc/opendkim/keys/news.mailha.test/mailha.private"
    assert f.packages["postfix"] == ""
    assert facts.parse_facts("mx2", "").problems["postconf"] == "not in the output"


def test_runner_keeps_each_hosts_report_and_when_it_ran():
    progress = _Progress(None)
    for host, stdout, start, end in (
        ("mx1", "1764676800.250000000", "2025-12-02T12:00:00.100000+00:00", "2025-12-02T12:00:00.400000+00:00"),
        ("mx2", "1764676800.300000000", "2025-12-02T12:00:00.150000", "2025-12-02T12:00:00.500000"),
    ):
        progress(
            {
                "event": "runner_on_ok",
                "event_data": {
                    "task": facts.CLOCK_TASK,
                    "host": host,
                    "res": {"stdout": stdout},
                    "start": start,
                    "end": end,
                },
            }
        )
    reports = progress.host_reports[facts.CLOCK_TASK]
    assert set(reports) == {"mx1", "mx2"}
    clock = facts.parse_clock(reports["mx2"])
    assert clock.relay == Decimal("1764676800.300000000")
    low, high = clock.offset_bounds()
    assert (round(low, 3), round(high, 3)) == (-0.2, 0.15)


def test_a_step_name_run_twice_is_timed_from_its_own_start(monkeypatch):
    clock = iter([100.0, 100.5, 160.0, 160.2])
    monkeypatch.setattr("mailha.runner.time.monotonic", lambda: next(clock))
    seen = []
    progress = _Progress(lambda step, host: seen.append((step.name, step.seconds)))
    name = "Precondition: a Hetzner token for the DNS change"
    for uuid in ("task-in-isolate", "task-in-switch"):
        progress({"event": "playbook_on_task_start", "event_data": {"task": name, "task_uuid": uuid}})
        progress({"event": "runner_on_ok", "event_data": {"task": name, "host": "localhost", "res": {}}})
    assert seen == [(name, 0.5), (name, 0.2)]


def test_relays_whose_facts_cannot_be_read_are_named(tmp_path, state, monkeypatch):
    pair = pair_mod.load(write_inventory(tmp_path, LAB_SETTINGS))
    monkeypatch.setattr(facts, "_agent_queues", lambda pair, timeout, names: {n: (None, "unreachable") for n in names})

    def mx2_unreachable(playbook, inventory_path, limit):
        assert playbook.name == "relay-facts.yml"
        assert limit == "mx1,mx2"
        report = HostReport(facts_output("mx1"), NOW, NOW + dt.timedelta(seconds=0.3))
        return PlaybookResult("failed", 4, unreachable=["mx2"], host_reports={facts.FACTS_TASK: {"mx1": report}})

    monkeypatch.setattr(facts, "run_playbook", mx2_unreachable)
    collected = facts.collect(pair, 1.0)
    assert collected["mx1"].postconf["myhostname"] == "mta.mailha.test"
    assert collected["mx1"].agent_problem == "health agent unreachable"
    assert collected["mx2"].error == "unreachable (ansible)"

    def cannot_start(playbook, inventory_path, limit):
        raise MailhaError("could not start ansible-playbook: no such file")

    monkeypatch.setattr(facts, "run_playbook", cannot_start)
    assert {f.error for f in facts.collect(pair, 1.0).values()} == {
        "its facts could not be read: could not start ansible-playbook: no such file"
    }


# Parity ---------------------------------------------------------------------------------


def test_parity_passes_when_only_per_node_values_differ():
    results = relays.parity(pair_facts())
    assert levels(results) == [PASS] * 4, [r.reason for r in results]


def test_parity_lists_each_difference():
    results = relays.parity(
        pair_facts(
            mx1=facts_output("mx1", size="20480000", advert="1"),
            mx2=facts_output("mx2", extra_opendkim="\nOversignHeaders\t\tFrom"),
        )
    )
    by_title = {r.reason.split(" differ")[0].split(" are ")[0]: r for r in results}
    postconf = by_title["Postfix settings (postconf -n)"]
    assert postconf.level == FAIL
    assert postconf.details == ["postconf message_size_limit: mx1: 20480000, mx2: 10240000"]
    assert by_title["OpenDKIM settings"].details == ["opendkim.conf: only on mx2: OversignHeaders From"]
    assert by_title["keepalived settings (priority and peers aside)"].details == [
        "keepalived.conf: only on mx1: advert_int 1",
        "keepalived.conf: only on mx2: advert_int 0.2",
    ]


def test_parity_warns_on_package_versions_and_fails_on_a_missing_package():
    differing = relays.parity(pair_facts(mx2=facts_output("mx2", postfix="3.7.10-0+deb12u1")))[-1]
    assert differing.level == WARN
    assert differing.details == ["package postfix: mx1: 3.7.11-0+deb12u1, mx2: 3.7.10-0+deb12u1"]
    missing_text = facts_output("mx2").replace(
        "opendkim 2.11.0~beta2-8+deb12u1 installed", "dpkg-query: no packages found matching opendkim"
    )
    missing = relays.parity(pair_facts(mx2=missing_text))[-1]
    assert missing.level == FAIL and missing.reason == "opendkim is not installed on mx2"


def test_parity_of_an_unreachable_relay_fails():
    collected = pair_facts()
    collected["mx2"] = facts.RelayFacts("mx2", error="unreachable (ansible)")
    assert [(r.level, r.reason) for r in relays.parity(collected)] == [(FAIL, "mx2: unreachable (ansible)")]


# Capacity ---------------------------------------------------------------------------


def capacity_of(f, **overrides):
    limits = {"deferred_warning": 100, "age_warning_seconds": 3600, "spool_warning_mb": 1024} | overrides
    return relays.capacity(f, **limits)


def test_capacity_of_a_quiet_relay_passes():
    f = pair_facts()["mx1"]
    f.queue, f.queue_oldest_age_seconds = {"active": 2, "deferred": 3, "hold": 0, "incoming": 0}, 42.0
    results = capacity_of(f)
    assert levels(results) == [PASS, PASS]
    assert results[0].reason == "queue 2/3/0 (active/deferred/hold), oldest 42 s"
    assert results[1].reason == "8789 MB free on the spool"


def test_capacity_warns_on_a_backlog_an_old_message_and_an_unknown_queue():
    f = pair_facts()["mx1"]
    f.queue, f.queue_oldest_age_seconds = {"active": 0, "deferred": 250, "hold": 0}, 120.0
    assert "250 deferred messages" in capacity_of(f)[0].reason
    f.queue, f.queue_oldest_age_seconds = {"active": 0, "deferred": 4, "hold": 0}, 5 * 3600.0
    assert capacity_of(f)[0].level == WARN and "5.0 h old" in capacity_of(f)[0].reason
    f.queue, f.agent_problem = None, "health agent unreachable"
    assert capacity_of(f)[0].level == WARN and "health agent unreachable" in capacity_of(f)[0].reason


def test_capacity_fails_when_postfix_would_refuse_mail_for_want_of_space():
    # 1.5 x message_size_limit (10240000) is about 15 MB.
    tight = facts.parse_facts("mx1", facts_output("mx1", free_kb=14_000))
    tight.queue = {"active": 0, "deferred": 0, "hold": 0}
    assert capacity_of(tight)[1].level == FAIL
    assert "below 15 MB Postfix refuses mail" in capacity_of(tight)[1].reason
    low = facts.parse_facts("mx1", facts_output("mx1", free_kb=500_000))
    low.queue = {"active": 0, "deferred": 0, "hold": 0}
    assert capacity_of(low)[1].level == WARN and "warning below 1024 MB" in capacity_of(low)[1].reason


def clocks(offset_mx2: float, spread: float = 0.2):
    start = dt.datetime(2026, 12, 2, 12, 0, 0, tzinfo=dt.UTC)
    collected = pair_facts()
    for name, offset in (("mx1", 0.0), ("mx2", offset_mx2)):
        relay = Decimal(str(start.timestamp() + spread / 2 + offset))
        collected[name].clock = facts.Clock(relay, start, start + dt.timedelta(seconds=spread))
    return collected


def test_clock_offset_between_relays():
    agree = relays.clock_offset(clocks(0.3), 1.0)
    assert agree.level == PASS and "-0.30 s (+/- 0.20 s)" in agree.reason
    # 1.1 s apart, read within 0.2 s each: it could be 0.9, within the limit.
    assert relays.clock_offset(clocks(1.1), 1.0).level == PASS
    apart = relays.clock_offset(clocks(5.0), 1.0)
    assert apart.level == WARN and "mx1's clock minus mx2's: -5.00 s" in apart.reason
    unknown = clocks(0.0)
    unknown["mx2"].clock = None
    assert relays.clock_offset(unknown, 1.0).level == WARN


# DKIM keys on the relays against DNS ---------------------------------------------------------


def test_relays_sign_with_the_published_key(signing_key_pem, rsa_2048):
    published = dns_checks.parse_dkim_record(f"v=DKIM1; k=rsa; p={rsa_2048[1]}")
    collected = pair_facts(public_key=signing_key_pem)
    results = relays.dkim_keys(collected, published, selector="mailha", domain="news.mailha.test")
    assert levels(results) == [PASS, PASS]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    other_pem = other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    collected["mx2"] = facts.parse_facts("mx2", facts_output("mx2", public_key=other_pem.decode()))
    results = relays.dkim_keys(collected, published, selector="mailha", domain="news.mailha.test")
    assert levels(results) == [PASS, FAIL]
    assert "the key mx2 signs with is not the one published at mailha._domainkey.news.mailha.test" in results[1].reason


def test_a_relay_signing_with_another_selector_fails(signing_key_pem, rsa_2048):
    published = dns_checks.parse_dkim_record(f"p={rsa_2048[1]}")
    collected = pair_facts(public_key=signing_key_pem)
    collected["mx1"] = facts.parse_facts("mx1", facts_output("mx1", selector="old", public_key=signing_key_pem))
    results = relays.dkim_keys(collected, published, selector="mailha", domain="news.mailha.test")
    assert levels(results) == [FAIL, PASS]
    assert "selector old, not news.mailha.test with mailha" in results[0].reason
    nothing_published = relays.dkim_keys(collected, None, selector="mailha", domain="news.mailha.test")
    assert levels(nothing_published) == [FAIL, WARN]


# The whole command ----------------------------------------------------------------


def lab_zone(server: LocalDnsServer, public_key_b64: str) -> None:
    """The records the bind role publishes for the lab (mailha.dns_records.zones), and its test blocklist."""
    server.add("mailha.test", "SOA", "ns.mailha.test. hostmaster.mailha.test. 1 3600 600 1209600 300")
    for name, address in (("mta", FLOATING_IP), ("mx1", "10.213.0.11"), ("mx2", "10.213.0.12")):
        server.add(f"{name}.mailha.test", "A", address)
        server.add(f"{address.rsplit('.', 1)[1]}.0.213.10.in-addr.arpa", "PTR", f"{name}.mailha.test.")
    server.add("mta.mailha.test", "TXT", '"v=spf1 a -all"')
    server.add("news.mailha.test", "TXT", f'"v=spf1 ip4:{FLOATING_IP} -all"')
    server.add("mailha._domainkey.news.mailha.test", "TXT", txt(f"v=DKIM1; k=rsa; p={public_key_b64}"))
    server.add("_dmarc.news.mailha.test", "TXT", '"v=DMARC1; p=reject; adkim=s; aspf=r"')
    server.add("2.0.0.127.bl.mailha.test", "A", "127.0.0.2")
    server.add("2.0.0.127.bl.mailha.test", "TXT", '"Listed by the mailha test blocklist (RFC 5782 test entry)"')


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILHA_STATE_DIR", str(tmp_path / "state"))


def write_inventory(tmp_path: Path, settings: dict) -> Path:
    path = tmp_path / "repo" / "inventories" / "lab" / "hosts.yml"
    inventory.write(inventory.build(CONTRACT), path)
    settings_file = path.parent / "group_vars" / "all" / "mailha.yml"
    settings_file.parent.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(yaml.safe_dump(settings))
    return path


LAB_SETTINGS = {"mailha_sender_domain": "news.mailha.test", "mailha_preflight_dnsbl_zones": ["bl.mailha.test"]}


@pytest.fixture
def lab(tmp_path, state, dns_server, monkeypatch, rsa_2048, signing_key_pem):
    """The CLI against the local DNS server, with certificates and relay facts given."""
    lab_zone(dns_server, rsa_2048[1])
    real_resolver = probes.resolver
    monkeypatch.setattr(
        probes, "resolver", lambda address, timeout=1.0: real_resolver(address, DNS_TIMEOUT, dns_server.port)
    )
    inventory_path = write_inventory(tmp_path, LAB_SETTINGS | {"mailha_preflight_resolver": "127.0.0.1"})

    def certificates(address, host_name, now, warning_days, timeout, *, subject):
        return [Result("tls", subject, PASS, f"port {port}: valid for {host_name}") for port in tls.PORTS]

    def relay_facts(pair, timeout, relays):
        collected = {n: f for n, f in pair_facts(public_key=signing_key_pem).items() if n in relays}
        for f in collected.values():
            f.queue, f.queue_oldest_age_seconds = {"active": 0, "deferred": 0, "hold": 0}, None
        return _with_clocks(collected)

    monkeypatch.setattr(tls, "check_relay", certificates)
    monkeypatch.setattr(facts, "collect", relay_facts)
    return inventory_path


def _with_clocks(collected):
    start = dt.datetime.now(dt.UTC)
    for f in collected.values():
        f.clock = facts.Clock(Decimal(str(start.timestamp() + 0.05)), start, start + dt.timedelta(seconds=0.1))
    return collected


def test_preflight_of_a_ready_pair_passes_everything(lab):
    result = CliRunner().invoke(main, ["preflight", "-i", str(lab)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "mailha preflight lab: floating IP 10.213.0.100 (mta.mailha.test), sender domain news.mailha.test"
    )
    assert lines[-1].startswith("verdict: pass (")
    assert not [line for line in lines[2:-1] if line.split()[0] != "PASS"]


def test_preflight_json_names_every_check_and_the_listed_test_entry(lab):
    result = CliRunner().invoke(main, ["preflight", "-i", str(lab), "--output", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["verdict"] == "pass" and document["exit_code"] == 0
    assert {r["check"] for r in document["results"]} == set(report.CHECKS)
    zone = next(r for r in document["results"] if r["check"] == "blocklist" and r["subject"] == "bl.mailha.test")
    assert zone["details"][0] == (
        "127.0.0.2: listed (127.0.0.2): Listed by the mailha test blocklist (RFC 5782 test entry)"
    )
    subjects = {(r["check"], r["subject"]) for r in document["results"]}
    assert {("reverse-dns", "floating IP"), ("reverse-dns", "mx1"), ("reverse-dns", "mx2")} <= subjects


def test_preflight_exits_1_on_warnings_and_2_on_failures(lab, dns_server):
    dns_server.add("mailha._domainkey.news.mailha.test", "TXT", '"v=DKIM1; t=y; p="')  # a second record
    only_spf = CliRunner().invoke(main, ["preflight", "-i", str(lab), "--check", "spf", "--check", "dmarc"])
    assert only_spf.exit_code == 0, only_spf.output
    failing = CliRunner().invoke(main, ["preflight", "-i", str(lab), "--check", "dkim"])
    assert failing.exit_code == 2, failing.output
    assert "FAIL   dkim" in failing.output and "fix: publish the selector's key" in failing.output
    settings = lab.parent / "group_vars" / "all" / "mailha.yml"
    settings.write_text(yaml.safe_dump(LAB_SETTINGS | {"mailha_preflight_dnsbl_zones": ["bl2.mailha.test"]}))
    warning = CliRunner().invoke(main, ["preflight", "-i", str(lab), "--check", "blocklist"])
    assert warning.exit_code == 1, warning.output


def test_preflight_runs_only_the_checks_asked_for(lab, monkeypatch):
    def no_relays(*_args, **_kwargs):
        raise AssertionError("a DNS check read the relays")

    monkeypatch.setattr(facts, "collect", no_relays)
    monkeypatch.setattr(tls, "check_relay", no_relays)
    result = CliRunner().invoke(main, ["preflight", "-i", str(lab), "--check", "reverse-dns", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert {r["check"] for r in json.loads(result.output)["results"]} == {"reverse-dns"}


def test_a_relay_that_says_another_helo_name_fails_reverse_dns(lab, monkeypatch, signing_key_pem):
    def relay_facts(pair, timeout, relays):
        collected = pair_facts(public_key=signing_key_pem)
        collected["mx2"].limits["smtp_helo_name"] = "mx2.mailha.test"
        return collected

    monkeypatch.setattr(facts, "collect", relay_facts)
    pair = pair_mod.load(lab)
    found = report.run(pair, ["reverse-dns", "parity"])
    failed = [r for r in found.results if r.level == FAIL]
    assert [(r.check, r.subject) for r in failed] == [("reverse-dns", "mx2")]
    assert "sends HELO mx2.mailha.test from the floating IP" in failed[0].reason


def test_a_preflight_for_one_relay_leaves_the_other_and_the_comparisons_out(lab, dns_server):
    # mx1 is listed: a switch to mx2 does not send from mx1's address.
    dns_server.add("11.0.213.10.bl.mailha.test", "A", "127.0.0.2")
    found = report.run(pair_mod.load(lab), for_relays=["mx2"])
    subjects = {r.subject for r in found.results}
    assert "mx1" not in subjects and "relays" not in subjects
    assert {"floating IP", "mx2", "bl.mailha.test", "news.mailha.test"} <= subjects
    assert "parity" not in found.checks
    assert {r.check for r in found.results if r.subject == "mx2"} == {
        "reverse-dns",
        "blocklist",
        "tls",
        "dkim-keys",
        "capacity",
    }
    assert found.verdict == PASS, [r.reason for r in found.results if r.level != PASS]
    everything = report.run(pair_mod.load(lab))
    assert [r.subject for r in everything.results if r.level == FAIL] == ["mx1"]


def test_facts_of_one_relay_ask_that_relay_only(tmp_path, state, monkeypatch):
    pair = pair_mod.load(write_inventory(tmp_path, LAB_SETTINGS))
    asked = []

    def agents(pair, timeout, relays):
        asked.append(list(relays))
        return {n: (None, "unreachable") for n in relays}

    def only_mx2(playbook, inventory_path, limit):
        assert limit == "mx2"
        report = HostReport(facts_output("mx2"), NOW, NOW + dt.timedelta(seconds=0.3))
        return PlaybookResult("successful", 0, host_reports={facts.FACTS_TASK: {"mx2": report}})

    monkeypatch.setattr(facts, "_agent_queues", agents)
    monkeypatch.setattr(facts, "run_playbook", only_mx2)
    assert list(facts.collect(pair, 1.0, relays=["mx2"])) == ["mx2"]
    assert asked == [["mx2"]]


def test_preflight_without_an_inventory_is_one_line(tmp_path, state):
    result = CliRunner().invoke(main, ["preflight", "-i", str(tmp_path / "none.yml")])
    assert "does not exist" in one_line_error(result)


def test_preflight_with_a_name_server_that_does_not_answer_is_one_line(lab, dns_server):
    dns_server.ignore("mailha.test")
    line = one_line_error(CliRunner().invoke(main, ["preflight", "-i", str(lab)]))
    assert line.startswith("Error: the name server 127.0.0.1 does not answer for mailha.test (no answer within 3s)")


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"mailha_preflight_dnsbl_zones": ["bl.mailha.test"]}, "mailha_sender_domain is not set"),
        (LAB_SETTINGS | {"mailha_preflight_dnsbl_zones": "bl.mailha.test"}, "must be of type list, not str"),
        (LAB_SETTINGS | {"mailha_preflight_dnsbl_zones": ["Bad Zone"]}, "'Bad Zone' is not one"),
        (LAB_SETTINGS | {"mailha_preflight_tls_warning_days": -1}, "must be between 0 and 3650"),
        (LAB_SETTINGS | {"mailha_preflight_resolver": "ns.example.test"}, "must be an IP address"),
    ],
)
def test_preflight_with_bad_settings_is_one_line(tmp_path, state, settings, words):
    path = write_inventory(tmp_path, settings)
    assert words in one_line_error(CliRunner().invoke(main, ["preflight", "-i", str(path)]))


def test_a_bad_dkim_selector_file_is_one_line(lab):
    secrets = lab.parent.parent.parent / ".lab" / "secrets" / "lab"
    secrets.mkdir(parents=True)
    (secrets / "dkim-selector").write_text("../../etc\n")
    line = one_line_error(CliRunner().invoke(main, ["preflight", "-i", str(lab), "--check", "dkim"]))
    assert "the DKIM selector in" in line and "'../../etc'" in line


def test_results_add_up_to_the_exit_code():
    assert exit_code([]) == 0
    assert exit_code([Result("a", "b", PASS, "r"), Result("a", "b", WARN, "r")]) == 1
    assert exit_code([Result("a", "b", WARN, "r"), Result("a", "b", FAIL, "r")]) == 2
    with pytest.raises(ValueError, match="level must be one of"):
        Result("a", "b", "ok", "r")
