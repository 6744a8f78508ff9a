"""Network probes the CLI uses to see the pair: SMTP, HTTP (health agent,
HAProxy stats) and DNS. Only protocols, no remote shell, so `mailha status`
is fast and works the same on the lab and in a cloud.
Every probe is bounded by a timeout and returns a result instead of raising.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import dns.exception
import dns.resolver

from mailha.node import smtp as node_smtp


@dataclass
class SmtpProbe:
    ok: bool
    seconds: float
    detail: str


def poll(predicate, timeout: float, interval: float):
    """Call `predicate` until it returns a truthy value, which is returned; None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def smtp_greeting(host: str, port: int = 25, timeout: float = 1.0) -> SmtpProbe:
    """Read the greeting: healthy means a whole 220 reply within `timeout` seconds.

    The relays' own health check judges the greeting with the same code
    (mailha.node.smtp), so `mailha status` and the node agree on what a
    greeting is."""
    began = time.monotonic()
    try:
        seconds, line = node_smtp.greet(host, port, timeout)
    except node_smtp.SmtpFailure as exc:
        return SmtpProbe(False, time.monotonic() - began, str(exc))
    return SmtpProbe(True, seconds, line)


# Far more than a health agent's /status or HAProxy's CSV: a bigger answer is refused unread.
MAX_BODY = 1024 * 1024


@dataclass
class HttpJson:
    """What an HTTP GET for a JSON document got."""

    status: int | None  # None: no HTTP answer at all
    document: object = None
    error: str = ""  # why there is no document: no answer, or an answer that is not JSON

    @property
    def reachable(self) -> bool:
        return self.status is not None


def read_body(response, timeout: float, limit: int = MAX_BODY) -> bytes:
    """The response body, at most `limit` bytes, all within `timeout` seconds (a trickling server is cut off)."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the body took longer than {timeout:g}s")
        chunk = response.read1(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ValueError(f"the body is larger than {limit // 1024} KiB")
        chunks.append(chunk)


def _decode_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def get_json(url: str, timeout: float = 1.0) -> HttpJson:
    """GET a JSON document; never raises."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - http URLs we build
    except urllib.error.HTTPError as exc:
        response = exc  # an answer all the same, whose body may say more
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return HttpJson(None, error=f"{type(exc).__name__}: {exc}")
    with response:
        status = response.status
        try:
            body = read_body(response, timeout)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            return HttpJson(status, error=f"{type(exc).__name__}: {exc}")
    try:
        return HttpJson(status, _decode_json(body))
    except ValueError as exc:  # also a body that is not UTF-8
        return HttpJson(status, error=f"not JSON ({type(exc).__name__}: {exc})")


def http_json(url: str, timeout: float = 1.0) -> tuple[int | None, object]:
    """GET a JSON document; return (status, decoded body) or (None, error text)."""
    answer = get_json(url, timeout)
    if answer.error:
        return None, answer.error
    return answer.status, answer.document


def haproxy_servers(stats_url: str, timeout: float = 1.0) -> dict[str, str] | str:
    """Status of each backend server from HAProxy's CSV stats ('UP', 'DOWN', 'DRAIN', ...),
    keyed by server name; an error text when the stats cannot be read."""
    try:
        with urllib.request.urlopen(stats_url, timeout=timeout) as response:  # noqa: S310
            text = read_body(response, timeout).decode("utf-8", "replace")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    servers: dict[str, str] = {}
    try:
        for row in csv.DictReader(io.StringIO(text.lstrip("# "))):
            name, status = row.get("svname"), row.get("status")
            if not isinstance(name, str) or name in ("FRONTEND", "BACKEND", ""):
                continue
            status = status if isinstance(status, str) and status else "UNKNOWN"
            servers.setdefault(name, status)
            if status.startswith("DOWN"):
                servers[name] = status
    except csv.Error as exc:
        return f"statistics are not HAProxy CSV: {exc}"
    return servers


def resolver(nameserver: str, timeout: float = 1.0, port: int = 53) -> dns.resolver.Resolver:
    """A resolver that asks `nameserver` only (not the host's resolv.conf), each lookup bounded by `timeout`."""
    answering = dns.resolver.Resolver(configure=False)
    answering.port = port  # before the name servers, which take the port when they are set
    answering.nameservers = [nameserver]
    answering.lifetime = timeout
    return answering


@dataclass
class DnsAnswer:
    """One lookup's outcome: records, or why there are none.

    A name that does not exist (nxdomain) and a name without records of that
    type (nodata) are answers; a timeout, SERVFAIL or REFUSED is an error,
    which says nothing about the records."""

    status: str  # ok, nxdomain, nodata or error
    records: list = field(default_factory=list)
    error: str = ""

    @property
    def void(self) -> bool:
        return self.status in ("nxdomain", "nodata")


def dns_lookup(answering: dns.resolver.Resolver, name: str, rdtype: str) -> DnsAnswer:
    """Look `name` up; never raises."""
    try:
        answer = answering.resolve(name, rdtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return DnsAnswer("nxdomain")
    except dns.resolver.LifetimeTimeout:
        return DnsAnswer("error", error=f"no answer within {answering.lifetime:g}s")
    except dns.resolver.NoNameservers as exc:
        # SERVFAIL, REFUSED and the like: dnspython names each server's answer.
        errors = exc.kwargs.get("errors") or []
        answers = sorted({str(e[3]) for e in errors if len(e) > 3 and e[3] is not None}) or [str(exc)]
        return DnsAnswer("error", error="; ".join(answers)[:200])
    except (dns.exception.DNSException, ValueError) as exc:
        return DnsAnswer("error", error=f"{type(exc).__name__}: {exc}"[:200])
    if answer.rrset is None:
        return DnsAnswer("nodata")
    return DnsAnswer("ok", list(answer.rrset))


def dns_a(name: str, nameserver: str, timeout: float = 1.0) -> list[str] | str:
    """A records of `name` at the authoritative server, or an error text."""
    answering = resolver(nameserver, timeout)
    try:
        return sorted(r.address for r in answering.resolve(name, "A"))
    except (dns.exception.DNSException, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
