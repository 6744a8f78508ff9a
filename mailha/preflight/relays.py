"""Judging the relays' facts (facts.py): parity between the two, each one's
capacity, their clocks, and the key each signs with against the one in DNS.

Pure functions of RelayFacts, so realistic inputs test them without a relay.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mailha.preflight.dns_checks import DkimKey, public_key_der
from mailha.preflight.facts import RelayFacts
from mailha.preflight.result import FAIL, PASS, WARN, Result

# The greeting carries each relay's own tag (names.node_tag): the one
# postconf -n value that differs by design.
PER_NODE_POSTCONF = ("smtpd_banner",)
# keepalived.conf lines that differ by design: the priority, the initial
# state (and the start-up delay of the intended BACKUP, which follows from
# it), the node's own address and its peers.
PER_NODE_KEEPALIVED = re.compile(r"^(priority|state|vrrp_startup_delay|unicast_src_ip) ")
PACKAGES = ("postfix", "opendkim", "keepalived")
# Postfix's own defaults, for a relay whose postconf does not say.
DEFAULT_MESSAGE_SIZE_LIMIT = 10240000
REFUSE_BELOW_FACTOR = 1.5  # smtpd answers 452 with less free space than 1.5 x message_size_limit
CONVERGE = "converge both relays with site.yml"


def _unreadable(facts: Mapping[str, RelayFacts], check: str, subject: str) -> Result | None:
    broken = [f for f in facts.values() if f.error]
    if not broken:
        return None
    return Result(
        check,
        subject,
        FAIL,
        "; ".join(f"{f.node}: {f.error}" for f in broken),
        "check that the relays answer Ansible (ansible -m ping mail)",
    )


# Parity ---------------------------------------------------------------------


def _keepalived_shared(lines: list[str]) -> list[str]:
    """keepalived.conf without what differs by design (the unicast_peer block too)."""
    kept, in_peers = [], False
    for line in lines:
        if line.startswith("unicast_peer {"):
            in_peers = True
            continue
        if in_peers:
            in_peers = line != "}"
            continue
        if not PER_NODE_KEEPALIVED.match(line):
            kept.append(line)
    return kept


def _mapping_differences(values: Mapping[str, Mapping[str, str]], what: str) -> list[str]:
    nodes = sorted(values)
    keys = sorted(set().union(*(values[n] for n in nodes)))
    differences = []
    for key in keys:
        seen = {n: values[n].get(key) for n in nodes}
        if len(set(seen.values())) > 1:
            shown = ", ".join(f"{n}: {'(not set)' if v is None else v}" for n, v in seen.items())
            differences.append(f"{what} {key}: {shown}")
    return differences


def _line_differences(lines: Mapping[str, list[str]], what: str) -> list[str]:
    nodes = sorted(lines)
    differences = []
    for node in nodes:
        others = set().union(*(set(lines[n]) for n in nodes if n != node))
        differences += [f"{what}: only on {node}: {line}" for line in lines[node] if line not in others]
    return differences


def parity(facts: Mapping[str, RelayFacts]) -> list[Result]:
    """The settings that must match do, on both relays: one Result per kind, each difference listed."""
    subject = "relays"
    broken = _unreadable(facts, "parity", subject)
    if broken:
        return [broken]
    shared_postconf = {n: {k: v for k, v in f.postconf.items() if k not in PER_NODE_POSTCONF} for n, f in facts.items()}
    areas = [
        ("Postfix settings (postconf -n)", "postconf", _mapping_differences(shared_postconf, "postconf")),
        (
            "OpenDKIM settings",
            "opendkim",
            _line_differences({n: f.opendkim for n, f in facts.items()}, "opendkim.conf"),
        ),
        (
            "keepalived settings (priority and peers aside)",
            "keepalived",
            _line_differences({n: _keepalived_shared(f.keepalived) for n, f in facts.items()}, "keepalived.conf"),
        ),
    ]
    results = []
    for title, section, differences in areas:
        unread = [f"{n}: {f.problems[section]}" for n, f in sorted(facts.items()) if section in f.problems]
        if unread:
            results.append(Result("parity", subject, FAIL, f"{title} unknown: {'; '.join(unread)}", CONVERGE))
        elif differences:
            count = len(differences)
            results.append(
                Result(
                    "parity",
                    subject,
                    FAIL,
                    f"{title} differ in {count} place{'s' if count > 1 else ''}: a failover would change how mail "
                    "is sent",
                    CONVERGE,
                    differences,
                )
            )
        else:
            results.append(Result("parity", subject, PASS, f"{title} are the same on both relays"))
    results.append(_packages(facts))
    return results


def _packages(facts: Mapping[str, RelayFacts]) -> Result:
    subject = "relays"
    missing = [
        f"{package} is not installed on {node}"
        for node, f in sorted(facts.items())
        for package in PACKAGES
        if not f.packages.get(package)
    ]
    if missing:
        return Result("parity", subject, FAIL, "; ".join(missing), CONVERGE)
    differences = _mapping_differences({n: {p: f.packages[p] for p in PACKAGES} for n, f in facts.items()}, "package")
    if differences:
        return Result(
            "parity",
            subject,
            WARN,
            f"package versions differ ({len(differences)}): fine during a rolling upgrade, not for long",
            "upgrade the older relay (apt-get install --only-upgrade), then converge",
            differences,
        )
    versions = ", ".join(f"{p} {next(iter(facts.values())).packages[p]}" for p in PACKAGES)
    return Result("parity", subject, PASS, f"the same package versions on both relays: {versions}")


# Capacity -------------------------------------------------------------------


def _mb(count: int) -> str:
    return f"{count / 1024 / 1024:.0f} MB"


def capacity(
    f: RelayFacts, *, deferred_warning: int, age_warning_seconds: float, spool_warning_mb: float
) -> list[Result]:
    """Queue and spool of one relay."""
    results = []
    if f.queue is None:
        results.append(
            Result(
                "capacity",
                f.node,
                WARN,
                f"queue unknown: {f.agent_problem or 'no answer'}",
                "check the relay's health agent (systemctl status mailha-health-agent)",
            )
        )
    else:
        counts = "/".join(str(f.queue.get(q, 0)) for q in ("active", "deferred", "hold"))
        age = f.queue_oldest_age_seconds
        shown = f"queue {counts} (active/deferred/hold), oldest {'-' if age is None else f'{age:.0f} s'}"
        deferred = f.queue.get("deferred", 0)
        if deferred > deferred_warning:
            results.append(
                Result(
                    "capacity",
                    f.node,
                    WARN,
                    f"{deferred} deferred messages (warning above {deferred_warning}); {shown}",
                    f"read why with 'mailha queue inspect --node {f.node}' and the relay's mail log",
                )
            )
        elif age is not None and age > age_warning_seconds:
            results.append(
                Result(
                    "capacity",
                    f.node,
                    WARN,
                    f"the oldest queued message is {age / 3600:.1f} h old (warning above "
                    f"{age_warning_seconds / 3600:.1f} h); {shown}",
                    f"read why with 'mailha queue inspect --node {f.node}' and the relay's mail log",
                )
            )
        else:
            results.append(Result("capacity", f.node, PASS, shown))
    results.append(_spool(f, spool_warning_mb))
    return results


def _spool(f: RelayFacts, warning_mb: float) -> Result:
    if f.error or f.spool_free_bytes is None:
        why = f.error or f.problems.get("spool", "unknown")
        return Result("capacity", f.node, WARN, f"spool free space unknown: {why}", "")
    try:
        size_limit = int(f.limits.get("message_size_limit", DEFAULT_MESSAGE_SIZE_LIMIT))
        minfree = int(f.limits.get("queue_minfree", 0))
    except ValueError:
        size_limit, minfree = DEFAULT_MESSAGE_SIZE_LIMIT, 0
    floor = max(minfree, int(REFUSE_BELOW_FACTOR * size_limit))
    free = f.spool_free_bytes
    fix = "free space on /var/spool/postfix (or grow the file system) before the campaign"
    if free < floor:
        return Result(
            "capacity",
            f.node,
            FAIL,
            f"{_mb(free)} free on the spool: below {_mb(floor)} Postfix refuses mail (452 insufficient system storage)",
            fix,
        )
    if free < warning_mb * 1024 * 1024:
        return Result(
            "capacity", f.node, WARN, f"{_mb(free)} free on the spool (warning below {warning_mb:.0f} MB)", fix
        )
    return Result("capacity", f.node, PASS, f"{_mb(free)} free on the spool")


def clock_offset(facts: Mapping[str, RelayFacts], warning_seconds: float) -> Result:
    """The relays' clocks agree within `warning_seconds`, beyond what the reading can tell apart.

    Each relay's clock is read during a task whose start and end the
    controller timed, so each offset is known to lie in an interval; a
    warning needs the whole interval of the difference beyond the limit."""
    subject = "relays"
    clocks = {n: f.clock for n, f in sorted(facts.items())}
    unknown = [n for n, c in clocks.items() if c is None]
    if unknown:
        return Result("capacity", subject, WARN, f"clock offset unknown: no reading from {', '.join(unknown)}", "")
    (first, a), (second, b) = list(clocks.items())[:2]
    low_a, high_a = a.offset_bounds()
    low_b, high_b = b.offset_bounds()
    low, high = low_a - high_b, high_a - low_b
    estimate, margin = (low + high) / 2, (high - low) / 2
    shown = f"{first}'s clock minus {second}'s: {estimate:+.2f} s (+/- {margin:.2f} s)"
    if low > warning_seconds or high < -warning_seconds:
        return Result(
            "capacity",
            subject,
            WARN,
            f"the relays' clocks differ: {shown}, over {warning_seconds:g} s",
            "synchronise both relays with NTP (chrony or systemd-timesyncd)",
        )
    return Result("capacity", subject, PASS, f"the relays' clocks agree: {shown}")


# DKIM keys ------------------------------------------------------------------


def dkim_keys(
    facts: Mapping[str, RelayFacts], published: DkimKey | None, *, selector: str, domain: str
) -> list[Result]:
    """Each relay signs for `domain` with `selector` and with the key published in DNS.

    `facts` supplies each relay's OpenDKIM Domain, Selector and the public
    half of its KeyFile (facts.py derives it on the relay)."""
    record = f"{selector}._domainkey.{domain}"
    results = []
    for node, f in sorted(facts.items()):
        if f.error:
            results.append(Result("dkim-keys", node, FAIL, f"signing key unknown: {f.error}", ""))
            continue
        signs_domain, signs_selector = f.setting(f.opendkim, "Domain"), f.setting(f.opendkim, "Selector")
        if (signs_domain, signs_selector) != (domain, selector):
            results.append(
                Result(
                    "dkim-keys",
                    node,
                    FAIL,
                    f"OpenDKIM signs for {signs_domain} with selector {signs_selector}, not {domain} with {selector}",
                    "converge the relay with site.yml (opendkim role)",
                )
            )
            continue
        if not f.dkim_public_key:
            results.append(
                Result(
                    "dkim-keys",
                    node,
                    FAIL,
                    f"the signing key cannot be read: {f.problems.get('dkim', 'no key')}",
                    "converge the relay with site.yml (opendkim role)",
                )
            )
            continue
        if published is None:
            results.append(
                Result("dkim-keys", node, WARN, f"no usable key at {record} to compare with (see the dkim check)", "")
            )
            continue
        try:
            relay_key = public_key_der(f.dkim_public_key)
        except ValueError:
            results.append(Result("dkim-keys", node, FAIL, "the signing key's public half does not parse", ""))
            continue
        if relay_key != published.der:
            results.append(
                Result(
                    "dkim-keys",
                    node,
                    FAIL,
                    f"the key {node} signs with is not the one published at {record}: receivers reject its signatures",
                    "converge with site.yml (the opendkim role installs the key, the bind role publishes it)",
                )
            )
            continue
        results.append(Result("dkim-keys", node, PASS, f"signs with the key published at {record}"))
    return results
