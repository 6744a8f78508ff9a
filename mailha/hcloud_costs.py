"""What the hcloud environment costs a month, read from Hetzner's pricing API.

Prices change (and did in 2026), so the README names none: `mailha
hcloud-costs` asks `GET /pricing` with the project's token for the location,
server type and load balancer type of terraform/environments/hcloud and
prices what that environment makes. Free resources (the network, the
firewall, the placement group, PTRs, DNS zones) are listed at zero, so the
table names everything Terraform creates.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from mailha.errors import BadInput, MailhaError

API_ENDPOINT = "https://api.hetzner.cloud/v1"
TIMEOUT_SECONDS = 15.0
# The settings of terraform/environments/hcloud that decide the price, with
# that environment's defaults (variables.tf).
DEFAULTS = {"location": "fsn1", "server_type": "cx23", "load_balancer_type": "lb11"}
RELAYS = 2
# A top-level `name = "value"` line of a tfvars file: the only shape these
# three settings take (strings); anything else in the file is not read.
TFVARS_STRING = re.compile(r'^\s*([a-z_]+)\s*=\s*"([^"\\]*)"\s*(?:#.*)?$')
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass
class Item:
    what: str
    count: int
    monthly_net: Decimal
    monthly_gross: Decimal

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["monthly_net"] = str(self.monthly_net)
        data["monthly_gross"] = str(self.monthly_gross)
        return data


@dataclass
class Costs:
    currency: str
    location: str
    items: list[Item]

    @property
    def total_net(self) -> Decimal:
        return sum((i.monthly_net * i.count for i in self.items), Decimal(0))

    @property
    def total_gross(self) -> Decimal:
        return sum((i.monthly_gross * i.count for i in self.items), Decimal(0))


def settings_from_tfvars(path: Path | None) -> dict[str, str]:
    """location, server_type and load_balancer_type: the file's where it sets them, else the defaults."""
    settings = dict(DEFAULTS)
    if path is None:
        return settings
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}; give the hcloud environment's terraform.tfvars") from exc
    for line in text.splitlines():
        match = TFVARS_STRING.match(line)
        if match and match.group(1) in settings:
            settings[match.group(1)] = match.group(2)
    return checked(settings)


def checked(settings: dict[str, str]) -> dict[str, str]:
    for key, value in settings.items():
        if not NAME.fullmatch(value):
            raise BadInput(f"{key} {value!r} is no Hetzner name (lower-case letters, digits, '-')")
    return settings


def fetch_pricing(token: str, endpoint: str = API_ENDPOINT, timeout: float = TIMEOUT_SECONDS) -> dict[str, Any]:
    """The `pricing` document of GET /pricing; one-line errors for every failure."""
    if not token:
        raise BadInput("HCLOUD_TOKEN is not set; export a token of the Hetzner project (read-only is enough)")
    url = endpoint.rstrip("/") + "/pricing"
    if not (url.startswith("https://") or re.match(r"http://(127\.0\.0\.1|localhost|\[::1\])[:/]", url)):
        raise BadInput(f"--api-endpoint {endpoint}: must be https (or http to loopback, for a local fake)")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310 - scheme checked above
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - scheme checked above
            document = json.load(answer)
    except urllib.error.HTTPError as exc:
        raise MailhaError(f"the Hetzner API refused GET /pricing: {_api_error(exc)}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MailhaError(f"the Hetzner API at {endpoint} did not answer: {reason}") from exc
    except ValueError as exc:
        raise MailhaError(f"the Hetzner API at {endpoint} answered no JSON document") from exc
    if not isinstance(document, dict) or not isinstance(document.get("pricing"), dict):
        raise MailhaError(f"the Hetzner API at {endpoint} answered no pricing document")
    return document["pricing"]


def _api_error(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.load(exc)["error"]
        return f"{error['code']} ({exc.code}): {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code}"


def _price(prices: Any, location: str, what: str) -> tuple[Decimal, Decimal]:
    for price in prices or ():
        if isinstance(price, dict) and price.get("location") == location:
            monthly = price.get("price_monthly") or {}
            try:
                return Decimal(str(monthly["net"])), Decimal(str(monthly["gross"]))
            except (KeyError, ArithmeticError) as exc:
                raise MailhaError(f"the pricing document has no monthly price of {what} in {location}") from exc
    raise BadInput(f"{what} is not sold in {location}; pick another location or type in terraform.tfvars")


def _named(entries: Any, key: str, name: str, what: str) -> Any:
    for entry in entries or ():
        if isinstance(entry, dict) and entry.get(key) == name:
            return entry
    raise BadInput(f"{what} {name!r} is not in Hetzner's price list; check terraform.tfvars")


def costs(pricing: dict[str, Any], settings: dict[str, str]) -> Costs:
    """Price what terraform/environments/hcloud makes, per month."""
    location = settings["location"]
    server = _named(pricing.get("server_types"), "name", settings["server_type"], "server type")
    balancer = _named(pricing.get("load_balancer_types"), "name", settings["load_balancer_type"], "load balancer type")
    floating = _named(pricing.get("floating_ips"), "type", "ipv4", "floating IP type")
    primary = _named(pricing.get("primary_ips"), "type", "ipv4", "primary IP type")
    zero = Decimal(0)
    items = [
        Item(
            f"server {settings['server_type']} (relay)", RELAYS, *_price(server["prices"], location, "the server type")
        ),
        Item("primary IPv4 of a relay", RELAYS, *_price(primary["prices"], location, "a primary IPv4")),
        Item("floating IPv4 (the sending identity)", 1, *_price(floating["prices"], location, "a floating IPv4")),
        Item(
            f"load balancer {settings['load_balancer_type']}",
            1,
            *_price(balancer["prices"], location, "the load balancer type"),
        ),
        Item("network, firewall, placement group, PTR, DNS zone", 1, zero, zero),
    ]
    return Costs(str(pricing.get("currency", "?")), location, items)


def render_table(result: Costs) -> str:
    rows = [("WHAT", "COUNT", f"MONTHLY NET {result.currency}", f"MONTHLY GROSS {result.currency}")]
    for item in result.items:
        rows.append(
            (
                item.what,
                str(item.count),
                f"{item.monthly_net * item.count:.2f}",
                f"{item.monthly_gross * item.count:.2f}",
            )
        )
    rows.append(("total", "", f"{result.total_net:.2f}", f"{result.total_gross:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"hcloud environment in {result.location}, prices read from the Hetzner API now (excluding traffic)"]
    lines += [
        f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}".rstrip() for r in rows
    ]
    return "\n".join(lines)


def render_json(result: Costs) -> str:
    return json.dumps(
        {
            "currency": result.currency,
            "location": result.location,
            "items": [i.as_dict() for i in result.items],
            "total_monthly_net": f"{result.total_net:.2f}",
            "total_monthly_gross": f"{result.total_gross:.2f}",
        },
        indent=2,
    )
