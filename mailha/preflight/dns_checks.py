"""What a receiver looks up about the sending identity, besides SPF:
reverse DNS (FCrDNS), the DKIM key, the DMARC policy, DNS blocklists.

Each check takes `lookup(name, rdtype) -> DnsAnswer` (probes.dns_lookup
with a resolver bound) and returns Results. A lookup that errs (timeout,
SERVFAIL, REFUSED) says nothing about the records: it warns, naming the
resolver setting, and never passes or fails a record it could not see.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.reversename
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailha.preflight.result import FAIL, PASS, WARN, Result
from mailha.probes import DnsAnswer

Lookup = Callable[[str, str], DnsAnswer]
RESOLVER_FIX = "check the name server answers for this name (mailha_preflight_resolver sets another resolver)"
DKIM_MIN_BITS = 2048
DMARC_POLICIES = ("none", "quarantine", "reject")


def _txt(answer: DnsAnswer) -> list[str]:
    """Each TXT record's strings joined, as SPF, DKIM and DMARC read them."""
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer.records]


def _address_type(address: str) -> str:
    return "A" if ipaddress.ip_address(address).version == 4 else "AAAA"


# Reverse DNS ---------------------------------------------------------------


def reverse_dns(lookup: Lookup, address: str, helo_name: str, *, subject: str, who: str) -> Result:
    """The PTR of `address` is `helo_name`, which resolves back to `address` (FCrDNS).

    `who` says whose HELO name it is, for the reason ("the relays, sending
    from the floating IP")."""
    check = "reverse-dns"
    reverse = ipaddress.ip_address(address).reverse_pointer
    ptr = lookup(reverse, "PTR")
    if ptr.status == "error":
        return Result(check, subject, WARN, f"the PTR of {address} could not be looked up: {ptr.error}", RESOLVER_FIX)
    publish_ptr = f"publish {reverse}. PTR {helo_name}. (where the reverse zone is hosted)"
    if ptr.void:
        return Result(check, subject, FAIL, f"{address} has no PTR record", publish_ptr)
    names = sorted({str(r.target).rstrip(".").lower() for r in ptr.records})
    if helo_name.lower() not in names:
        return Result(
            check,
            subject,
            FAIL,
            f"the PTR of {address} is {', '.join(names)}, but {who} introduce themselves as {helo_name}",
            f"make the PTR {helo_name}, or the HELO name the PTR's",
        )
    forward = lookup(helo_name, _address_type(address))
    if forward.status == "error":
        why = f"{helo_name} could not be looked up to confirm its PTR: {forward.error}"
        return Result(check, subject, WARN, why, RESOLVER_FIX)
    addresses = sorted(r.address for r in forward.records)
    if address not in addresses:
        found = ", ".join(addresses) if addresses else "nothing"
        return Result(
            check,
            subject,
            FAIL,
            f"the PTR of {address} is {helo_name}, but {helo_name} resolves to {found}, not back to {address} "
            "(no forward-confirmed reverse DNS)",
            f"publish {helo_name}. {_address_type(address)} {address}",
        )
    if len(names) > 1:
        return Result(
            check,
            subject,
            WARN,
            f"{address} has {len(names)} PTR records ({', '.join(names)}); receivers take any one of them",
            f"keep only the PTR {helo_name}",
        )
    return Result(check, subject, PASS, f"the PTR of {address} is {helo_name}, which resolves back to it (FCrDNS)")


# Tag lists (DKIM, DMARC) ------------------------------------------------------


def tag_list(text: str) -> dict[str, str]:
    """`k=v; k=v` (RFC 6376 section 3.2); ValueError for a tag without '=' or given twice."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, equals, value = part.partition("=")
        name = name.strip()
        if not equals or not name:
            raise ValueError(f"{part.strip()!r} is not a tag=value pair")
        if name in tags:
            raise ValueError(f"the tag {name} appears twice")
        tags[name] = value.strip()
    return tags


# DKIM ---------------------------------------------------------------------


@dataclass
class DkimKey:
    """The public key a DKIM record publishes, parsed."""

    key_type: str  # rsa or ed25519
    bits: int  # RSA modulus size; 256 for ed25519
    der: bytes  # SubjectPublicKeyInfo (RSA), raw key (ed25519)
    testing: bool = False  # t=y: receivers treat failures as unsigned
    notes: list[str] = field(default_factory=list)


def parse_dkim_record(text: str) -> DkimKey:
    """A DKIM key record (RFC 6376 section 3.6.1); ValueError saying what is wrong."""
    tags = tag_list(text)
    if "v" in tags and (tags["v"] != "DKIM1" or next(iter(tags)) != "v"):
        raise ValueError("v= must be DKIM1 and come first")
    key_type = tags.get("k", "rsa").lower()
    if "p" not in tags:
        raise ValueError("it has no p= (public key) tag")
    data = "".join(tags["p"].split())
    if not data:
        raise ValueError("p= is empty: the key is revoked")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("p= is not base64") from None
    hashes = {h.strip().lower() for h in tags.get("h", "sha256").split(":")}
    if "sha256" not in hashes:
        raise ValueError(f"h={tags['h']} allows no sha256 (RFC 8301 forbids sha1)")
    services = {s.strip() for s in tags.get("s", "*").split(":")}
    if not services & {"*", "email"}:
        raise ValueError(f"s={tags['s']} does not cover email")
    testing = "y" in {f.strip() for f in tags.get("t", "").split(":")}
    if key_type == "ed25519":
        if len(raw) != 32:
            raise ValueError(f"an ed25519 key is 32 bytes, this one {len(raw)}")
        ed25519.Ed25519PublicKey.from_public_bytes(raw)
        return DkimKey("ed25519", 256, raw, testing)
    if key_type != "rsa":
        raise ValueError(f"k={key_type} is not a key type receivers know (rsa, ed25519)")
    try:
        key = serialization.load_der_public_key(raw)
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("p= is not an RSA public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"p= holds a {type(key).__name__}, not an RSA key")
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return DkimKey("rsa", key.key_size, spki, testing)


def public_key_der(pem: str) -> bytes:
    """A PEM public key (as `openssl pkey -pubout` prints it) as SubjectPublicKeyInfo DER, to compare keys."""
    key = serialization.load_pem_public_key(pem.encode())
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def dkim_record(lookup: Lookup, selector: str, domain: str) -> tuple[Result, DkimKey | None]:
    """The DKIM key in DNS parses and is RSA of at least 2048 bits; the key, for comparing with the relays'."""
    name = f"{selector}._domainkey.{domain}"
    subject = name
    answer = lookup(name, "TXT")
    if answer.status == "error":
        return Result("dkim", subject, WARN, f"{name} could not be looked up: {answer.error}", RESOLVER_FIX), None
    publish = f"publish the selector's key: re-run site.yml (bind role), or add TXT {name}"
    records = [t for t in _txt(answer) if t.strip()]
    if not records:
        return Result("dkim", subject, FAIL, f"no DKIM key at {name}: receivers find no key to verify", publish), None
    if len(records) > 1:
        return (
            Result("dkim", subject, FAIL, f"{name} has {len(records)} TXT records; a selector holds one key", publish),
            None,
        )
    try:
        key = parse_dkim_record(records[0])
    except ValueError as exc:
        return Result("dkim", subject, FAIL, f"the DKIM record at {name} is unusable: {exc}", publish), None
    if key.key_type == "rsa" and key.bits < DKIM_MIN_BITS:
        return (
            Result(
                "dkim",
                subject,
                FAIL,
                f"the DKIM key at {name} is RSA of {key.bits} bits; at least {DKIM_MIN_BITS} are needed",
                "rotate to an RSA key of 2048 bits or more (a new selector, published before OpenDKIM signs with it)",
            ),
            key,
        )
    if key.key_type == "ed25519":
        return (
            Result(
                "dkim",
                subject,
                WARN,
                f"the DKIM key at {name} is ed25519, which many receivers do not verify yet",
                "sign with an RSA key (2048 bits) too",
            ),
            key,
        )
    if key.testing:
        return (
            Result(
                "dkim",
                subject,
                WARN,
                f"the DKIM key at {name} is in testing mode (t=y): receivers treat failing signatures as absent",
                "drop t=y from the record",
            ),
            key,
        )
    return Result("dkim", subject, PASS, f"the DKIM key at {name} parses: RSA, {key.bits} bits"), key


# DMARC --------------------------------------------------------------------


def parse_dmarc_record(text: str) -> dict[str, str]:
    """A DMARC record's tags (RFC 7489 section 6.3); ValueError saying what is wrong."""
    tags = tag_list(text)
    if next(iter(tags), None) != "v" or tags["v"] != "DMARC1":
        raise ValueError("it must start with v=DMARC1")
    if "p" not in tags:
        raise ValueError("it has no p= (policy) tag")
    for tag in ("p", "sp"):
        if tag in tags and tags[tag].lower() not in DMARC_POLICIES:
            raise ValueError(f"{tag}={tags[tag]} is not one of {', '.join(DMARC_POLICIES)}")
    for tag in ("adkim", "aspf"):
        if tag in tags and tags[tag].lower() not in ("r", "s"):
            raise ValueError(f"{tag}={tags[tag]} is not r or s")
    if "pct" in tags and not (tags["pct"].isdigit() and 0 <= int(tags["pct"]) <= 100):
        raise ValueError(f"pct={tags['pct']} is not a percentage")
    for tag in ("rua", "ruf"):
        for uri in filter(None, (u.strip() for u in tags.get(tag, "").split(","))):
            if not uri.lower().startswith(("mailto:", "https:")):
                raise ValueError(f"{tag} holds {uri!r}, not a mailto: address")
    return tags


def dmarc(lookup: Lookup, domain: str) -> Result:
    """The DMARC policy that covers `domain` is present and parses.

    Looked for at _dmarc.<domain>, then at each parent (the tree walk of
    DMARCbis, which finds the organizational domain's record too)."""
    labels = domain.rstrip(".").split(".")
    for start in range(len(labels) - 1):
        owner = ".".join(labels[start:])
        name = f"_dmarc.{owner}"
        answer = lookup(name, "TXT")
        if answer.status == "error":
            return Result("dmarc", domain, WARN, f"{name} could not be looked up: {answer.error}", RESOLVER_FIX)
        records = [t for t in _txt(answer) if t.strip().startswith("v=DMARC1")]
        if not records:
            continue
        fix = f"fix the TXT record {name}, e.g. v=DMARC1; p=reject; adkim=s; aspf=r"
        if len(records) > 1:
            return Result("dmarc", domain, FAIL, f"{name} has {len(records)} DMARC records; receivers ignore all", fix)
        try:
            tags = parse_dmarc_record(records[0])
        except ValueError as exc:
            return Result("dmarc", domain, FAIL, f"the DMARC record at {name} does not parse: {exc}", fix)
        inherited = owner != domain.rstrip(".")
        policy = tags.get("sp", tags["p"]) if inherited else tags["p"]
        where = f" (inherited from {owner})" if inherited else ""
        notes = []
        if int(tags.get("pct", "100")) < 100:
            notes.append(f"applied to {tags['pct']}% of failing mail")
        if "rua" not in tags:
            notes.append("no aggregate reports (rua=)")
        note = f"; {', '.join(notes)}" if notes else ""
        return Result("dmarc", domain, PASS, f"DMARC policy {policy.lower()} at {name}{where}{note}")
    return Result(
        "dmarc",
        domain,
        FAIL,
        f"no DMARC record for {domain} (looked at _dmarc.{domain} and its parents); "
        "bulk senders need one at big mailbox providers",
        f"publish TXT _dmarc.{domain} v=DMARC1; p=none (then quarantine or reject once reports are clean)",
    )


# DNS blocklists -------------------------------------------------------------

# RFC 5782 section 5: every IPv4 blocklist lists 127.0.0.2 and never 127.0.0.1.
TEST_LISTED, TEST_NOT_LISTED = "127.0.0.2", "127.0.0.1"
# Answers some blocklists give instead of a listing, e.g. Spamhaus's
# 127.255.255.254 to queries through public resolvers.
REFUSAL_NETWORK = ipaddress.ip_network("127.255.255.0/24")
LISTING_NETWORK = ipaddress.ip_network("127.0.0.0/8")


@dataclass
class Listing:
    status: str  # listed, clear, refused, unexpected or error
    codes: list[str] = field(default_factory=list)
    reason: str = ""  # the TXT record of a listing, or the error


def blocklist_name(address: str, zone: str) -> str:
    """The name to ask: the address reversed, octet by octet (nibble by nibble for IPv6), under the zone."""
    reverse = dns.reversename.from_address(address).to_text().rstrip(".")
    for suffix in (".in-addr.arpa", ".ip6.arpa"):
        if reverse.endswith(suffix):
            reverse = reverse[: -len(suffix)]
    return f"{reverse}.{zone.rstrip('.')}"


def listing(lookup: Lookup, address: str, zone: str) -> Listing:
    """What one blocklist answers for one address."""
    name = blocklist_name(address, zone)
    answer = lookup(name, "A")
    if answer.status == "error":
        return Listing("error", reason=answer.error)
    if answer.void:
        return Listing("clear")
    codes = sorted({r.address for r in answer.records}, key=ipaddress.ip_address)
    addresses = [ipaddress.ip_address(c) for c in codes]
    if all(a in REFUSAL_NETWORK for a in addresses):
        return Listing("refused", codes)
    if not all(a in LISTING_NETWORK for a in addresses):
        return Listing("unexpected", codes)
    reasons = lookup(name, "TXT")
    return Listing("listed", codes, "; ".join(_txt(reasons))[:300] if reasons.status == "ok" else "")


def blocklist(lookup: Lookup, address: str, zone: str, *, subject: str) -> Result:
    """`address` is not listed on `zone`."""
    found = listing(lookup, address, zone)
    if found.status == "clear":
        return Result("blocklist", subject, PASS, f"{address} is not listed on {zone}")
    if found.status == "listed":
        why = f": {found.reason}" if found.reason else ""
        return Result(
            "blocklist",
            subject,
            FAIL,
            f"{address} is listed on {zone} ({', '.join(found.codes)}){why}",
            f"find out why at the blocklist's site and ask for delisting; do not send from {address} until then",
        )
    if found.status == "refused":
        return Result(
            "blocklist",
            subject,
            WARN,
            f"{zone} refused to answer for {address} ({', '.join(found.codes)}): it does not serve this resolver",
            "query it through a resolver it serves (mailha_preflight_resolver), or register for its data feed",
        )
    if found.status == "unexpected":
        return Result(
            "blocklist",
            subject,
            WARN,
            f"{zone} answered {', '.join(found.codes)} for {address}: not a blocklist answer (127.0.0.0/8); "
            "the resolver may rewrite answers",
            "use a resolver that does not rewrite answers (mailha_preflight_resolver)",
        )
    why = f"{zone} could not be asked about {address}: {found.reason}"
    return Result("blocklist", subject, WARN, why, RESOLVER_FIX)


def blocklist_answers(lookup: Lookup, zone: str) -> Result:
    """The blocklist answers here at all: it lists its test entry 127.0.0.2 and not 127.0.0.1 (RFC 5782).

    Without this a blocklist that never answers (a wrong zone name, a
    resolver it refuses) would show every address as not listed."""
    test = listing(lookup, TEST_LISTED, zone)
    control = listing(lookup, TEST_NOT_LISTED, zone)
    details = [
        f"{TEST_LISTED}: {test.status}"
        + (f" ({', '.join(test.codes)})" if test.codes else "")
        + (f": {test.reason}" if test.reason else ""),
        f"{TEST_NOT_LISTED}: {control.status}" + (f" ({', '.join(control.codes)})" if control.codes else ""),
    ]
    if test.status != "listed":
        return Result(
            "blocklist",
            zone,
            WARN,
            f"{zone} does not list its test entry {TEST_LISTED} ({test.status}): it does not answer through this "
            "resolver, so a listing would go unseen",
            "check the zone name, and that the blocklist serves this resolver (mailha_preflight_resolver)",
            details,
        )
    if control.status == "listed":
        return Result(
            "blocklist",
            zone,
            WARN,
            f"{zone} lists {TEST_NOT_LISTED}, which no blocklist may: its answers cannot be trusted (a closed list?)",
            "remove it from mailha_preflight_dnsbl_zones",
            details,
        )
    return Result("blocklist", zone, PASS, f"{zone} answers: it lists its test entry {TEST_LISTED}", "", details)
