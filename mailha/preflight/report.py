"""`mailha preflight`: run the checks, add them up, print them.

Whether a standby could take over without the mail landing in spam: the
sending identity as receivers look it up (reverse DNS, SPF, DKIM, DMARC,
blocklists), the certificate each relay presents, and the relays compared
(settings, packages, signing keys) and measured (queue, spool, clocks).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import dns.resolver

from mailha import probes
from mailha.errors import BadInput, MailhaError
from mailha.pair import Pair
from mailha.preflight import dns_checks, facts, relays, spf, tls
from mailha.preflight.result import EXIT_CODES, FAIL, LEVELS, WARN, Result, worst

# In the order they run and print.
CHECKS = ("reverse-dns", "spf", "dkim", "dmarc", "blocklist", "tls", "dkim-keys", "parity", "capacity")
DNS_CHECKS = ("reverse-dns", "spf", "dkim", "dmarc", "blocklist", "dkim-keys")
# Checks that need the relays' facts (a read-only playbook on each relay).
FACT_CHECKS = ("dkim-keys", "parity", "capacity")
# Checks that compare the relays with each other: they need both.
COMPARING_CHECKS = ("parity",)
NEEDS_SENDER_DOMAIN = ("spf", "dkim", "dmarc", "dkim-keys")
# A preflight that cannot run must not read as "warnings only" to a
# scheduler: it exits 2, like a failed check (and like bad input elsewhere).
EXIT_CANNOT_CHECK = EXIT_CODES[FAIL]
FLOATING_IP = "floating IP"  # the subject of what concerns the sending identity
TLS_TIMEOUT = 10.0  # a busy relay greets within 2 s (mail_health_timeout); the handshake follows
DNS_TIMEOUT_FLOOR = 3.0  # a recursive resolver may chase several servers


@dataclass
class Report:
    environment: str
    floating_ip: str
    sending_host: str
    sender_domain: str
    checks: list[str]
    results: list[Result] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return worst(self.results)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict:
        counts = Counter(r.level for r in self.results)
        return {
            "environment": self.environment,
            "floating_ip": self.floating_ip,
            "sending_host": self.sending_host,
            "sender_domain": self.sender_domain,
            "checks": self.checks,
            "results": [r.to_dict() for r in self.results],
            "summary": {level: counts.get(level, 0) for level in LEVELS},
            "verdict": self.verdict,
            "exit_code": self.exit_code,
        }


def _ensure_name_server_answers(lookup: spf.Lookup, resolver_address: str, zone: str) -> None:
    answer = lookup(zone, "SOA")
    if answer.status == "error":
        raise MailhaError(
            f"the name server {resolver_address} does not answer for {zone} ({answer.error}); "
            "nothing was checked: check mailha_nameserver in the inventory, or mailha_preflight_resolver",
            exit_code=EXIT_CANNOT_CHECK,
        )


def run(
    pair: Pair,
    checks: Iterable[str] = CHECKS,
    *,
    now: datetime | None = None,
    resolver: dns.resolver.Resolver | None = None,
    collect_facts: Callable[[Pair, float], Mapping[str, facts.RelayFacts]] | None = None,
    check_tls: Callable[..., list[Result]] | None = None,
    for_relays: Iterable[str] | None = None,
) -> Report:
    """Every selected check, in CHECKS order; the checks that need DNS, TLS and the
    relays' facts run side by side. `resolver`, `collect_facts` and `check_tls`
    are for tests (a local DNS server, facts without a relay).

    `for_relays` limits the checks of a relay's own (its PTR, listing, certificate,
    facts) to those relays, default both; the floating IP and the sender
    domain are always checked. With one relay, what compares the two (parity,
    the clocks) does not run: a switch's preflight (switch.py) reads its
    target only, since the source may be down, which is why it switches."""
    selected = [c for c in CHECKS if c in set(checks)]
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise BadInput(f"unknown check {', '.join(unknown)}; the checks are {', '.join(CHECKS)}")
    scope = list(pair.nodes) if for_relays is None else [pair.node(name).name for name in for_relays]
    if len(set(scope)) < len(pair.nodes):
        selected = [c for c in selected if c not in COMPARING_CHECKS]
    settings = pair.settings
    sender_domain = settings["mailha_sender_domain"]
    if not sender_domain and set(selected) & set(NEEDS_SENDER_DOMAIN):
        raise BadInput(
            "mailha_sender_domain is not set in group_vars/all/mailha.yml; SPF, DKIM and DMARC are checked for it"
        )
    # Read before anything starts: a bad selector file is one line, not a wait for the relays.
    selector = pair.dkim_selector() if {"dkim", "dkim-keys"} & set(selected) else ""
    now = now or datetime.now(UTC)
    collect_facts = collect_facts or facts.collect
    check_tls = check_tls or tls.check_relay
    probe_timeout = float(settings["mailha_probe_timeout"])
    resolver_address = settings["mailha_preflight_resolver"] or pair.nameserver
    if resolver is None:
        resolver = probes.resolver(resolver_address, max(probe_timeout, DNS_TIMEOUT_FLOOR))
    lookup = partial(probes.dns_lookup, resolver)
    if set(selected) & set(DNS_CHECKS):
        _ensure_name_server_answers(lookup, resolver_address, pair.zone)

    with ThreadPoolExecutor(max_workers=4) as pool:
        relay_facts = (
            pool.submit(collect_facts, pair, probe_timeout, relays=scope) if set(selected) & set(FACT_CHECKS) else None
        )
        certificates = (
            {
                name: pool.submit(
                    check_tls,
                    node.address,
                    pair.sending_host,
                    now,
                    int(settings["mailha_preflight_tls_warning_days"]),
                    TLS_TIMEOUT,
                    subject=name,
                )
                for name, node in pair.nodes.items()
                if name in scope
            }
            if "tls" in selected
            else {}
        )
        by_check: dict[str, list[Result]] = {check: [] for check in selected}
        published_key = None
        if "dkim" in selected or "dkim-keys" in selected:
            dkim_result, published_key = dns_checks.dkim_record(lookup, selector, sender_domain)
            if "dkim" in selected:
                by_check["dkim"] = [dkim_result]
        if "reverse-dns" in selected:
            by_check["reverse-dns"] = reverse_dns(pair, lookup, scope)
        if "spf" in selected:
            by_check["spf"] = [
                spf.check(lookup, pair.floating_ip, sender_domain, subject=FLOATING_IP, identity="MAIL FROM"),
                spf.check(lookup, pair.floating_ip, pair.sending_host, subject=FLOATING_IP, identity="HELO"),
            ]
        if "dmarc" in selected:
            by_check["dmarc"] = [dns_checks.dmarc(lookup, sender_domain)]
        if "blocklist" in selected:
            by_check["blocklist"] = blocklists(pair, lookup, settings["mailha_preflight_dnsbl_zones"], scope)
        for future in certificates.values():
            by_check["tls"] += future.result()
        if relay_facts is not None:
            collected = relay_facts.result()
            by_check.update(relay_checks(pair, selected, collected, published_key, selector, sender_domain))
            if "reverse-dns" in selected:
                by_check["reverse-dns"] += helo_names(pair, collected)
    report = Report(pair.environment, pair.floating_ip, pair.sending_host, sender_domain, selected)
    report.results = [r for check in selected for r in by_check.get(check, [])]
    return report


def reverse_dns(pair: Pair, lookup: spf.Lookup, scope: Iterable[str]) -> list[Result]:
    """The floating IP's PTR is the HELO name the relays send with; each relay's
    own PTR is the name it introduces itself with from its own address (the hand-over)."""
    results = [
        dns_checks.reverse_dns(
            lookup,
            pair.floating_ip,
            pair.sending_host,
            subject=FLOATING_IP,
            who="the relays, sending from it,",
        )
    ]
    for name, node in pair.nodes.items():
        if name not in scope:
            continue
        results.append(
            dns_checks.reverse_dns(lookup, node.address, node.fqdn, subject=name, who=f"{name}'s hand-overs")
        )
    return results


def helo_names(pair: Pair, collected: Mapping[str, facts.RelayFacts]) -> list[Result]:
    """The HELO name each relay really sends with is the one the floating IP's PTR was checked against."""
    results = []
    for name, f in sorted(collected.items()):
        helo = f.limits.get("smtp_helo_name")
        if helo is not None and helo.lower() != pair.sending_host.lower():
            results.append(
                Result(
                    "reverse-dns",
                    name,
                    FAIL,
                    f"{name} sends HELO {helo} from the floating IP, whose PTR must then be {helo}; "
                    f"the inventory's sending host is {pair.sending_host}",
                    "converge the relay with site.yml (postfix_myhostname is the sending host)",
                )
            )
    return results


def blocklists(pair: Pair, lookup: spf.Lookup, zones: list[str], scope: Iterable[str]) -> list[Result]:
    if not zones:
        return [
            Result(
                "blocklist",
                FLOATING_IP,
                WARN,
                "no blocklists configured: a listing would go unseen",
                "list the blocklists your receivers use in mailha_preflight_dnsbl_zones",
            )
        ]
    addresses = [(FLOATING_IP, pair.floating_ip)] + [
        (name, node.address) for name, node in pair.nodes.items() if name in scope
    ]
    results = []
    for zone in zones:
        results.append(dns_checks.blocklist_answers(lookup, zone))
        results += [dns_checks.blocklist(lookup, address, zone, subject=subject) for subject, address in addresses]
    return results


def relay_checks(
    pair: Pair,
    selected: list[str],
    collected: Mapping[str, facts.RelayFacts],
    published_key: dns_checks.DkimKey | None,
    selector: str,
    sender_domain: str,
) -> dict[str, list[Result]]:
    settings = pair.settings
    found: dict[str, list[Result]] = {}
    if "dkim-keys" in selected:
        found["dkim-keys"] = relays.dkim_keys(collected, published_key, selector=selector, domain=sender_domain)
    if "parity" in selected:
        found["parity"] = relays.parity(collected)
    if "capacity" in selected:
        found["capacity"] = [
            r
            for name in sorted(collected)
            for r in relays.capacity(
                collected[name],
                deferred_warning=int(settings["mailha_queue_deferred_warning"]),
                age_warning_seconds=float(settings["mailha_preflight_queue_age_warning_seconds"]),
                spool_warning_mb=float(settings["mailha_preflight_spool_free_warning_mb"]),
            )
        ]
        if len(collected) > 1:
            found["capacity"].append(
                relays.clock_offset(collected, float(settings["mailha_preflight_clock_offset_warning_seconds"]))
            )
    return found


def render_table(report: Report) -> str:
    lines = [
        f"mailha preflight {report.environment}: floating IP {report.floating_ip} ({report.sending_host}), "
        f"sender domain {report.sender_domain or '-'}"
    ]
    width_check = max([len(r.check) for r in report.results] + [5])
    width_subject = max([len(r.subject) for r in report.results] + [7])
    lines.append(f"{'LEVEL':<5}  {'CHECK':<{width_check}}  {'SUBJECT':<{width_subject}}  REASON")
    for r in report.results:
        lines.append(f"{r.level.upper():<5}  {r.check:<{width_check}}  {r.subject:<{width_subject}}  {r.reason}")
        if r.level != "pass":
            indent = " " * (width_check + width_subject + 11)
            lines += [f"{indent}- {detail}" for detail in r.details]
            if r.fix:
                lines.append(f"{indent}fix: {r.fix}")
    counts = Counter(r.level for r in report.results)
    summary = ", ".join(f"{counts.get(level, 0)} {level}" for level in LEVELS)
    lines.append(f"verdict: {report.verdict} ({summary})")
    return "\n".join(lines)


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2)
