"""`mailha preflight` on the lab: the sending identity as the lab's BIND
publishes it, the certificate each relay presents, the relays compared and
measured, and the lab's test blocklist, which lists 127.0.0.2 and no relay
(roles/bind, bind_test_blocklist_zone)."""

from __future__ import annotations

import json
from functools import partial

import pytest

from mailha import probes
from mailha.preflight import dns_checks

pytestmark = pytest.mark.lab

TEST_BLOCKLIST = "bl.mailha.test"  # inventories/lab/group_vars/all/mailha.yml
TEST_ENTRY_REASON = "Listed by the mailha test blocklist (RFC 5782 test entry)"  # roles/bind/defaults


@pytest.fixture(scope="module")
def preflight(cli):
    result = cli("preflight", "--output", "json", timeout=300)
    assert result.returncode in (0, 1, 2), result.stdout + result.stderr
    document = json.loads(result.stdout)
    document["returncode"] = result.returncode
    print(f"\npreflight took {result.seconds:.1f}s: {document['verdict']} {document['summary']}")
    return document


def found(document, check: str, subject: str | None = None) -> list[dict]:
    results = [r for r in document["results"] if r["check"] == check and subject in (None, r["subject"])]
    assert results, f"no {check} result for {subject or 'anything'}"
    return results


def shown(results: list[dict]) -> str:
    return "; ".join(f"{r['level']} {r['subject']}: {r['reason']}" for r in results)


def test_every_check_ran_and_none_fails(preflight):
    assert {r["check"] for r in preflight["results"]} == {
        "reverse-dns",
        "spf",
        "dkim",
        "dmarc",
        "blocklist",
        "tls",
        "dkim-keys",
        "parity",
        "capacity",
    }
    failures = [r for r in preflight["results"] if r["level"] == "fail"]
    assert not failures, shown(failures)
    # Warnings may come from the queue (an earlier test's mail still queued).
    assert preflight["returncode"] == preflight["exit_code"] == {"pass": 0, "warn": 1}[preflight["verdict"]]


def test_the_floating_ip_has_forward_confirmed_reverse_dns(preflight, lab):
    (floating,) = found(preflight, "reverse-dns", "floating IP")
    assert floating["level"] == "pass", floating["reason"]
    assert floating["reason"] == (
        f"the PTR of {lab.floating_ip} is {lab.vars['mailha_sending_host']}, which resolves back to it (FCrDNS)"
    )
    for relay in lab.mail:
        (own,) = found(preflight, "reverse-dns", relay)
        assert own["level"] == "pass", own["reason"]
        assert lab.hosts[relay]["mailha_fqdn"] in own["reason"]


def test_spf_authorises_the_floating_ip_for_mail_from_and_helo(preflight, lab):
    results = found(preflight, "spf", "floating IP")
    assert [r["level"] for r in results] == ["pass", "pass"], shown(results)
    mail_from, helo = (r["reason"] for r in results)
    assert mail_from.startswith(f"SPF of news.mailha.test (MAIL FROM) authorises {lab.floating_ip} (ip4:")
    assert helo.startswith(f"SPF of {lab.vars['mailha_sending_host']} (HELO) authorises {lab.floating_ip} (a in ")


def test_each_relay_presents_a_valid_certificate_on_25_and_587(preflight, lab):
    for relay in lab.mail:
        results = found(preflight, "tls", relay)
        assert [r["level"] for r in results] == ["pass", "pass"], shown(results)
        assert [r["reason"].split(":")[0] for r in results] == ["port 25", "port 587"]
        assert all(f"valid for {lab.vars['mailha_sending_host']}" in r["reason"] for r in results)


def test_dkim_key_dmarc_and_the_key_each_relay_signs_with(preflight, lab):
    (record,) = found(preflight, "dkim")
    assert record["level"] == "pass" and "RSA, 2048 bits" in record["reason"], record["reason"]
    (policy,) = found(preflight, "dmarc")
    assert policy["level"] == "pass" and "DMARC policy reject at _dmarc.news.mailha.test" in policy["reason"]
    keys = found(preflight, "dkim-keys")
    assert [(r["subject"], r["level"]) for r in keys] == [(relay, "pass") for relay in lab.mail], shown(keys)


def test_the_relays_are_alike_and_have_room(preflight, lab):
    parity = found(preflight, "parity")
    assert all(r["level"] == "pass" for r in parity), shown(parity) + str([r["details"] for r in parity])
    capacity = found(preflight, "capacity")
    spool = [r for r in capacity if "free on the spool" in r["reason"]]
    assert sorted(r["subject"] for r in spool) == lab.mail
    # The lab's containers share one kernel clock: any offset is the reading's own.
    (clock,) = [r for r in capacity if r["subject"] == "relays"]
    assert clock["level"] == "pass", clock["reason"]


def test_the_test_blocklist_answers_and_lists_no_address_of_the_pair(preflight, lab):
    (zone,) = found(preflight, "blocklist", TEST_BLOCKLIST)
    assert zone["level"] == "pass", zone["reason"]
    assert zone["details"] == [f"127.0.0.2: listed (127.0.0.2): {TEST_ENTRY_REASON}", "127.0.0.1: clear"]
    for subject in ["floating IP", *lab.mail]:
        (listing,) = found(preflight, "blocklist", subject)
        assert listing["level"] == "pass", listing["reason"]


def test_the_test_blocklist_shows_a_listed_address_with_its_reason(lab):
    lookup = partial(probes.dns_lookup, probes.resolver(lab.vars["mailha_nameserver"], 3.0))
    listed = dns_checks.blocklist(lookup, "127.0.0.2", TEST_BLOCKLIST, subject="test entry")
    assert listed.level == "fail"
    assert listed.reason == f"127.0.0.2 is listed on {TEST_BLOCKLIST} (127.0.0.2): {TEST_ENTRY_REASON}"
