"""SPF (RFC 7208) as a receiver evaluates it, for the floating IP.

`evaluate` runs check_host(): the first mechanism that matches decides,
include: and redirect= are followed, and a record that needs more than 10
DNS-querying terms (include, a, mx, ptr, exists, redirect) or more than 2
lookups that find nothing is a permerror. Evaluation stops at the first
match, so `tree_lookups` also counts the whole record: one that passes for
the floating IP and still needs 11 lookups fails for every receiver that
counts them all, and for every other sender the domain has.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from mailha.preflight.result import FAIL, PASS, WARN, Result
from mailha.probes import DnsAnswer

PASS_, FAIL_, SOFTFAIL, NEUTRAL, NONE = "pass", "fail", "softfail", "neutral", "none"
PERMERROR, TEMPERROR = "permerror", "temperror"
QUALIFIERS = {"+": PASS_, "-": FAIL_, "~": SOFTFAIL, "?": NEUTRAL}
LOOKUP_LIMIT = 10  # RFC 7208 section 4.6.4
VOID_LOOKUP_LIMIT = 2
NAME_LIMIT = 10  # MX and PTR names looked at per term
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
DNS_TERMS = ("include", "a", "mx", "ptr", "exists")
MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)")
MECHANISM = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9_.-]*)(?::(.*?))?((?:/\d+)?(?://\d+)?)")
MACRO = re.compile(r"%\{([A-Za-z])(\d*)(r?)([.\-+,/_=]*)\}")

Lookup = Callable[[str, str], DnsAnswer]


class SpfError(Exception):
    """A permerror or temperror: evaluation ends with it."""

    def __init__(self, result: str, problem: str):
        super().__init__(problem)
        self.result = result
        self.problem = problem


@dataclass
class Term:
    text: str
    qualifier: str
    name: str  # the mechanism, or "redirect" / "exp" / an unknown modifier
    argument: str | None
    cidr4: int | None = None
    cidr6: int | None = None
    modifier: bool = False


@dataclass
class SpfEvaluation:
    result: str
    domain: str
    matched: str = ""  # "ip4:10.213.0.100 in news.example.test": the term that decided
    lookups: int = 0
    void_lookups: int = 0
    problem: str = ""
    trace: list[str] = field(default_factory=list)


def parse(text: str, domain: str) -> list[Term]:
    """The terms of an SPF record; SpfError(permerror) for anything RFC 7208 does not allow."""
    terms: list[Term] = []
    seen_modifiers: set[str] = set()
    for word in text.split()[1:]:
        modifier = MODIFIER.fullmatch(word)
        if modifier and modifier.group(1).lower() not in MECHANISMS:
            name = modifier.group(1).lower()
            if name in ("redirect", "exp") and name in seen_modifiers:
                raise SpfError(PERMERROR, f"{domain}: {name}= appears twice")
            seen_modifiers.add(name)
            terms.append(Term(word, "", name, modifier.group(2), modifier=True))
            continue
        match = MECHANISM.fullmatch(word)
        if not match or match.group(2).lower() not in MECHANISMS:
            raise SpfError(PERMERROR, f"{domain}: unknown term {word!r}")
        qualifier, name, argument, cidr = match.group(1) or "+", match.group(2).lower(), match.group(3), match.group(4)
        term = Term(word, qualifier, name, argument)
        if cidr:
            if name not in ("a", "mx", "ip4", "ip6"):
                raise SpfError(PERMERROR, f"{domain}: {word!r} takes no prefix length")
            four, _, six = cidr.lstrip("/").partition("//")
            if cidr.startswith("//"):
                four, six = "", cidr[2:]
            term.cidr4 = int(four) if four else None
            term.cidr6 = int(six) if six else None
            if name in ("ip4", "ip6") and "//" in cidr:
                raise SpfError(PERMERROR, f"{domain}: {word!r}: a dual prefix length is for a and mx only")
            if name == "ip6":  # its one prefix length is an IPv6 one
                term.cidr4, term.cidr6 = None, term.cidr4
            if (term.cidr4 is not None and term.cidr4 > 32) or (term.cidr6 is not None and term.cidr6 > 128):
                raise SpfError(PERMERROR, f"{domain}: {word!r} has a prefix length out of range")
        needs_argument = name in ("include", "exists", "ip4", "ip6")
        if needs_argument and not argument:
            raise SpfError(PERMERROR, f"{domain}: {word!r} needs a value")
        if name == "all" and argument is not None:
            raise SpfError(PERMERROR, f"{domain}: {word!r}: all takes no value")
        if name in ("ip4", "ip6"):
            _network(term, domain)
        terms.append(term)
    return terms


def _network(term: Term, domain: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = term.argument or ""
    length = term.cidr4 if term.name == "ip4" else term.cidr6
    try:
        network = ipaddress.ip_network(f"{text}/{length}" if length is not None else text, strict=False)
    except ValueError:
        raise SpfError(PERMERROR, f"{domain}: {term.text!r} is not an address or network") from None
    if (term.name == "ip4") != (network.version == 4):
        raise SpfError(PERMERROR, f"{domain}: {term.text!r} is not an IPv{4 if term.name == 'ip4' else 6} network")
    return network


class _Evaluation:
    def __init__(self, lookup: Lookup, ip: str, sender: str, helo: str):
        self.lookup = lookup
        self.ip = ipaddress.ip_address(ip)
        self.sender = sender
        self.helo = helo
        self.lookups = 0
        self.voids = 0
        self.chain: list[str] = []
        self.trace: list[str] = []
        self.tree_lookups = 0

    # DNS -----------------------------------------------------------------
    def count(self, term: Term, domain: str) -> None:
        self.lookups += 1
        if self.lookups > LOOKUP_LIMIT:
            raise SpfError(
                PERMERROR,
                f"more than {LOOKUP_LIMIT} DNS lookups: the {self.lookups}th is {term.text} in {domain} "
                "(RFC 7208 section 4.6.4)",
            )

    def query(self, name: str, rdtype: str, *, void_counts: bool = True) -> list:
        answer = self.lookup(name, rdtype)
        if answer.status == "error":
            raise SpfError(TEMPERROR, f"{rdtype} {name}: {answer.error}")
        if answer.void:
            if void_counts:
                self.voids += 1
                if self.voids > VOID_LOOKUP_LIMIT:
                    raise SpfError(
                        PERMERROR,
                        f"more than {VOID_LOOKUP_LIMIT} lookups found nothing, the last {rdtype} {name} "
                        "(RFC 7208 section 4.6.4)",
                    )
            return []
        return answer.records

    def record(self, domain: str) -> str | None:
        answer = self.lookup(domain, "TXT")
        if answer.status == "error":
            raise SpfError(TEMPERROR, f"TXT {domain}: {answer.error}")
        texts = [b"".join(r.strings).decode("utf-8", "replace") for r in answer.records]
        records = [t for t in texts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
        if len(records) > 1:
            raise SpfError(PERMERROR, f"{domain} has {len(records)} SPF records; RFC 7208 allows one")
        return records[0] if records else None

    def addresses(self, name: str, *, void_counts: bool = True) -> list:
        rdtype = "A" if self.ip.version == 4 else "AAAA"
        return [ipaddress.ip_address(r.address) for r in self.query(name, rdtype, void_counts=void_counts)]

    # Macros (RFC 7208 section 7) --------------------------------------------
    def expand(self, spec: str, domain: str) -> str:
        local, _, sender_domain = self.sender.rpartition("@")
        values = {
            "s": self.sender,
            "l": local or "postmaster",
            "o": sender_domain,
            "d": domain,
            "i": self._ip_macro(),
            "p": "unknown",
            "v": "in-addr" if self.ip.version == 4 else "ip6",
            "h": self.helo,
        }
        out, position = [], 0
        while position < len(spec):
            char = spec[position]
            if char != "%":
                out.append(char)
                position += 1
                continue
            following = spec[position + 1 : position + 2]
            if following in ("%", "_", "-"):
                out.append({"%": "%", "_": " ", "-": "%20"}[following])
                position += 2
                continue
            macro = MACRO.match(spec, position)
            if not macro or macro.group(1).lower() not in values:
                raise SpfError(PERMERROR, f"{domain}: bad macro in {spec!r}")
            letter, digits, reverse, delimiters = macro.groups()
            parts = re.split("[" + re.escape(delimiters or ".") + "]", values[letter.lower()])
            if reverse:
                parts.reverse()
            if digits:
                if int(digits) == 0:
                    raise SpfError(PERMERROR, f"{domain}: bad macro in {spec!r}")
                parts = parts[-int(digits) :]
            value = ".".join(parts)
            out.append(urllib.parse.quote(value, safe="") if letter.isupper() else value)
            position = macro.end()
        expanded = "".join(out).rstrip(".")
        while len(expanded) > 253 and "." in expanded:
            expanded = expanded.split(".", 1)[1]
        return expanded

    def _ip_macro(self) -> str:
        if self.ip.version == 4:
            return str(self.ip)
        return ".".join(self.ip.exploded.replace(":", ""))

    # Evaluation ----------------------------------------------------------
    def check_host(self, domain: str) -> tuple[str, str]:
        """(result, the term that decided it, e.g. "ip4:10.213.0.96/28 in _spf.example.test")."""
        if domain.lower() in self.chain:
            raise SpfError(PERMERROR, f"loop: {' -> '.join([*self.chain, domain.lower()])}")
        self.chain.append(domain.lower())
        try:
            text = self.record(domain)
            if text is None:
                self.trace.append(f"{domain}: no SPF record")
                return NONE, ""
            self.trace.append(f"{domain}: {text}")
            terms = parse(text, domain)
            mechanisms = [t for t in terms if not t.modifier]
            redirect = next((t for t in terms if t.modifier and t.name == "redirect"), None)
            for term in mechanisms:
                matched, inner = self.matches(term, domain)
                if matched:
                    result = QUALIFIERS[term.qualifier]
                    self.trace.append(f"{domain}: {term.text} matches: {result}")
                    return result, inner or f"{term.text} in {domain}"
            # RFC 7208 section 6.1: redirect= is ignored when the record has "all".
            if redirect is not None and not any(t.name == "all" for t in mechanisms):
                self.count(redirect, domain)
                target = self.expand(redirect.argument or "", domain)
                self.trace.append(f"{domain}: nothing matched, redirect={target}")
                result, decided = self.check_host(target)
                if result == NONE:
                    raise SpfError(PERMERROR, f"{domain}: redirect={target} has no SPF record")
                return result, decided
            self.trace.append(f"{domain}: nothing matched: neutral")
            return NEUTRAL, ""
        finally:
            self.chain.pop()

    def matches(self, term: Term, domain: str) -> tuple[bool, str]:
        """Whether the term matches the client address, and for an include that
        does, the term inside it that did."""
        if term.name == "all":
            return True, ""
        if term.name in ("ip4", "ip6"):
            network = _network(term, domain)
            return self.ip.version == network.version and self.ip in network, ""
        self.count(term, domain)
        target = self.expand(term.argument, domain) if term.argument else domain
        if term.name == "include":
            result, decided = self.check_host(target)
            if result == NONE:
                raise SpfError(PERMERROR, f"{domain}: include:{target} has no SPF record")
            return result == PASS_, decided
        if term.name == "a":
            return self._in_any(self.addresses(target), term), ""
        if term.name == "mx":
            exchanges = [str(r.exchange).rstrip(".") for r in self.query(target, "MX")]
            if len(exchanges) > NAME_LIMIT:
                raise SpfError(PERMERROR, f"{domain}: {term.text}: {target} has more than {NAME_LIMIT} MX names")
            # The exchanges' own address lookups are part of this term (RFC 7208 section 4.6.4).
            found = any(self._in_any(self.addresses(name, void_counts=False), term) for name in exchanges if name)
            return found, ""
        if term.name == "exists":
            return bool(self.query(target, "A")), ""
        if term.name == "ptr":
            reverse = self.ip.reverse_pointer
            names = [str(r.target).rstrip(".").lower() for r in self.query(reverse, "PTR")][:NAME_LIMIT]
            for name in names:
                if self.ip in self.addresses(name, void_counts=False) and (
                    name == target.lower() or name.endswith("." + target.lower())
                ):
                    return True, ""
            return False, ""
        return False, ""  # pragma: no cover - parse() admits only the mechanisms above

    def _in_any(self, addresses: list, term: Term) -> bool:
        length = term.cidr4 if self.ip.version == 4 else term.cidr6
        for address in addresses:
            if address.version != self.ip.version:
                continue
            prefix = length if length is not None else address.max_prefixlen
            if self.ip in ipaddress.ip_network(f"{address}/{prefix}", strict=False):
                return True
        return False

    # The whole record -------------------------------------------------------
    def tree(self, domain: str, chain: tuple[str, ...] = ()) -> tuple[int, list[tuple[str, str]]]:
        """DNS-querying terms in the whole record, every include and redirect followed,
        and what is wrong on the way: (lookups, [(level, problem)]). Past the limit
        it stops following: the record fails either way."""
        if domain.lower() in chain:
            return 0, [(FAIL, f"loop: {' -> '.join([*chain, domain.lower()])}")]
        chain = (*chain, domain.lower())
        try:
            text = self.record(domain)
            terms = parse(text, domain) if text else []
        except SpfError as exc:
            return 0, [(WARN if exc.result == TEMPERROR else FAIL, exc.problem)]
        if text is None:
            return 0, [(FAIL, f"{domain} has no SPF record")] if len(chain) > 1 else []
        lookups, problems = 0, []
        has_all = any(t.name == "all" for t in terms if not t.modifier)
        for term in terms:
            followed = term.name == "include" or (term.modifier and term.name == "redirect" and not has_all)
            if term.modifier and not followed:
                continue
            if term.name in DNS_TERMS or followed:
                lookups += 1
                self.tree_lookups += 1
            if followed and self.tree_lookups <= LOOKUP_LIMIT:
                try:
                    target = self.expand(term.argument or "", domain)
                except SpfError as exc:
                    problems.append((FAIL, exc.problem))
                    continue
                more, found = self.tree(target, chain)
                lookups += more
                problems += found
        return lookups, problems


def evaluate(lookup: Lookup, ip: str, domain: str, *, sender: str = "", helo: str = "") -> SpfEvaluation:
    """check_host(ip, domain, sender) as a receiver runs it (RFC 7208 section 4)."""
    run = _Evaluation(lookup, ip, sender or f"postmaster@{domain}", helo or domain)
    try:
        result, matched = run.check_host(domain)
        problem = ""
    except SpfError as exc:
        result, matched, problem = exc.result, "", exc.problem
        run.trace.append(f"{exc.result}: {exc.problem}")
    return SpfEvaluation(result, domain, matched, run.lookups, run.voids, problem, run.trace)


def check(lookup: Lookup, ip: str, domain: str, *, subject: str, helo: str = "", identity: str = "") -> Result:
    """Does `domain`'s SPF authorise `ip`, within the limits every receiver applies?"""
    evaluation = evaluate(lookup, ip, domain, helo=helo)
    counter = _Evaluation(lookup, ip, f"postmaster@{domain}", helo or domain)
    total, problems = counter.tree(domain)
    label = f"SPF of {domain}{f' ({identity})' if identity else ''}"
    details = [*evaluation.trace, f"{total} DNS-querying terms in the whole record (limit {LOOKUP_LIMIT})"]
    details += [problem for _, problem in problems]
    record_fix = f"fix the SPF record of {domain} (TXT)"
    if evaluation.result == TEMPERROR:
        return Result(
            "spf",
            subject,
            WARN,
            f"{label} could not be evaluated: {evaluation.problem}",
            "check that the resolver reaches every name the record uses (mailha_preflight_resolver)",
            details,
        )
    if evaluation.result == PERMERROR:
        return Result("spf", subject, FAIL, f"{label} is broken: {evaluation.problem}", record_fix, details)
    if evaluation.result != PASS_:
        why = "there is no SPF record" if evaluation.result == NONE else f"the result is {evaluation.result}"
        where = f" ({evaluation.matched})" if evaluation.matched else ""
        return Result(
            "spf",
            subject,
            FAIL,
            f"{label} does not authorise {ip}: {why}{where}",
            f"add ip4:{ip} (or a mechanism that covers it) to the SPF record of {domain}"
            if ipaddress.ip_address(ip).version == 4
            else f"add ip6:{ip} to the SPF record of {domain}",
            details,
        )
    if total > LOOKUP_LIMIT:
        return Result(
            "spf",
            subject,
            FAIL,
            f"{label} authorises {ip} ({evaluation.matched}) but needs {total} DNS lookups in all; "
            f"RFC 7208 allows {LOOKUP_LIMIT}, past them receivers answer permerror",
            f"flatten includes in the SPF record of {domain} (ip4:/ip6: need no lookup)",
            details,
        )
    worst_problem = next((p for level, p in problems if level == FAIL), None) or next((p for _, p in problems), None)
    if worst_problem:
        level = FAIL if any(level == FAIL for level, _ in problems) else WARN
        return Result(
            "spf",
            subject,
            level,
            f"{label} authorises {ip} ({evaluation.matched}), but a part it does not reach for this address "
            f"is broken: {worst_problem}",
            record_fix,
            details,
        )
    return Result(
        "spf",
        subject,
        PASS,
        f"{label} authorises {ip} ({evaluation.matched}; {total} of {LOOKUP_LIMIT} lookups)",
        "",
        details,
    )
