"""Network probes the CLI uses to see the pair: SMTP, HTTP (health agent,
HAProxy stats) and DNS. Only protocols, no remote shell, so `mailha status`
is fast and works the same on the lab and in a cloud.
Every probe is bounded by a timeout and returns a result instead of raising.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import dns.exception
import dns.resolver


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
    """Read the greeting: healthy means a 220 line within `timeout` seconds."""
    began = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(max(0.05, timeout - (time.monotonic() - began)))
            line = sock.makefile("rb").readline(512).decode(errors="replace").strip()
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
    except OSError as exc:
        return SmtpProbe(False, time.monotonic() - began, f"{type(exc).__name__}: {exc}")
    elapsed = time.monotonic() - began
    if line.startswith("220"):
        return SmtpProbe(True, elapsed, line)
    return SmtpProbe(False, elapsed, line or "connection closed without a greeting")


def http_json(url: str, timeout: float = 1.0) -> tuple[int | None, object]:
    """GET a JSON document; return (status, decoded body) or (None, error text)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http URLs we build
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, exc.reason
    except (OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def haproxy_servers(stats_url: str, timeout: float = 1.0) -> dict[str, str] | str:
    """Status of each backend server from HAProxy's CSV stats ('UP', 'DOWN', 'DRAIN', ...),
    keyed by server name; an error text when the stats cannot be read."""
    try:
        with urllib.request.urlopen(stats_url, timeout=timeout) as response:  # noqa: S310
            text = response.read().decode()
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    servers = {}
    for row in rows:
        name = row.get("svname", "")
        if name in ("FRONTEND", "BACKEND") or not name:
            continue
        servers.setdefault(name, row.get("status", "UNKNOWN"))
        if row.get("status", "").startswith("DOWN"):
            servers[name] = row["status"]
    return servers


def dns_a(name: str, nameserver: str, timeout: float = 1.0) -> list[str] | str:
    """A records of `name` at the authoritative server, or an error text."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [nameserver]
    resolver.lifetime = timeout
    try:
        return sorted(r.address for r in resolver.resolve(name, "A"))
    except dns.exception.DNSException as exc:
        return f"{type(exc).__name__}: {exc}"
