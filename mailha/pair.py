"""The pair as the CLI sees it: the generated inventory plus the CLI's settings.

The inventory (`inventories/<env>/hosts.yml`) comes from the Terraform output
contract. The settings the CLI shares with the roles are plain values (no
Jinja), so the CLI reads them without running Ansible: the project's
defaults in `playbooks/group_vars/all/mailha.yml`, then an environment's
`group_vars/all/mailha.yml` beside its inventory, which overrides them (as
ansible.cfg's precedence makes Ansible read them too).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mailha import inventory, names, project
from mailha.audit import make_state_dir, state_dir
from mailha.errors import BadInput, MailhaError
from mailha.node import events as node_events

SETTINGS_FILE = Path("group_vars") / "all" / "mailha.yml"
# In the secrets directory: the key of the relays' greeting tags (names.node_tag).
NODE_TAG_KEY_FILE = "greeting-tag.key"

# Settings the CLI reads, with the defaults used when the file omits them.
DEFAULT_SETTINGS: dict[str, Any] = {
    "mailha_agent_port": 8025,
    "mailha_haproxy_stats_port": 8404,
    "mailha_tsig_key_name": "mailha-ddns",
    "mailha_tsig_algorithm": "hmac-sha256",
    "mailha_active_record": "relay",
    "mailha_failback_hold_down_seconds": 300,
    "mailha_probe_timeout": 2.0,  # mail_health_timeout's default: healthy means one thing
    "mailha_queue_deferred_warning": 100,
    "mailha_test_recipient": "postmaster@inbox.test",
    "mailha_test_sender": "mailha-test@news.mailha.test",
    "mailha_drill_max_outage_seconds": 2.0,
    "mailha_drill_max_lost": 0,
    "mailha_drill_max_duplicated": 0,
    # The campaign sender domain (SPF, DKIM, DMARC); the roles read it too.
    "mailha_sender_domain": "",
    # mailha preflight (README, "Preflight").
    "mailha_preflight_resolver": "",
    "mailha_preflight_dnsbl_zones": [],
    "mailha_preflight_tls_warning_days": 21,
    "mailha_preflight_queue_age_warning_seconds": 3600,
    "mailha_preflight_spool_free_warning_mb": 1024,
    "mailha_preflight_clock_offset_warning_seconds": 1.0,
    # Events to webhooks (README, "Webhooks"): none by default (syslog only).
    "mailha_events_webhook_urls": [],
    "mailha_events_webhook_secret_file": "",
    "mailha_events_timeout": 5.0,
    "mailha_events_max_attempts": 20,
    "mailha_events_max_age_seconds": 86400.0,
    "mailha_events_backoff_max_seconds": 600.0,
    # host-down drills (README, "Drills"): the commands, run on the control
    # host, that pull a relay's plug and power it on again; "{host}" becomes
    # the inventory name. None: host-down is refused outside the lab.
    "mailha_host_power_off": [],
    "mailha_host_power_on": [],
}

# The selector OpenDKIM signs with until `failover --isolate` rotates the key
# and records the new one in the secrets directory (group_vars/all/main.yml
# makes the same choice for the roles).
DKIM_SELECTOR_FILE = "dkim-selector"
DEFAULT_DKIM_SELECTOR = "mailha"

TSIG_ALGORITHMS = ("hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512")
MAIL_ADDRESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}@(.+)")
SECRET_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _between(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if low <= value <= high and math.isfinite(value) else f"must be between {low:g} and {high:g}"

    return check


def _mail_address(value: str) -> str | None:
    match = MAIL_ADDRESS.fullmatch(value)
    if match and names.dns_name_problem(match.group(1)) is None:
        return None
    return "must be a mail address such as postmaster@example.net"


def _webhook_urls(value: list) -> str | None:
    if not all(isinstance(url, str) and "," not in url for url in value):
        return "must be a list of http:// or https:// URLs"
    try:
        node_events.parse_webhook_urls(",".join(value))
    except ValueError as exc:
        return f"must be a list of http:// or https:// URLs ({exc})"
    return None


def _secret_file(value: str) -> str | None:
    """A file in the secrets directory: a name, never a way out of it."""
    if value == "" or (SECRET_FILE_NAME.fullmatch(value) and ".." not in value):
        return None
    return "must be the name of a file in the secrets directory, such as webhook.key"


def _dns_names(value: list) -> str | None:
    for item in value:
        if names.dns_name_problem(item) is not None:
            return f"must be a list of DNS names ({names.DNS_NAME_RULE}); {names.shown(item)} is not one"
    return None


def _command(value: list) -> str | None:
    """An argument vector (no shell): its words are strings, the first a program."""
    if all(isinstance(word, str) and word and "\0" not in word for word in value):
        return None
    return 'must be a command as a list of words, such as ["hcloud", "server", "poweroff", "{host}"]'


# What each setting the CLI reads may hold beyond its type: the names go into
# file paths (the TSIG key file), DNS updates and the test message.
SETTING_RULES: dict[str, Callable[[Any], str | None]] = {
    "mailha_agent_port": _between(1, 65535),
    "mailha_haproxy_stats_port": _between(1, 65535),
    "mailha_tsig_key_name": names.dns_name_problem,
    "mailha_tsig_algorithm": lambda v: None if v in TSIG_ALGORITHMS else f"must be one of {', '.join(TSIG_ALGORITHMS)}",
    "mailha_active_record": names.host_name_problem,
    "mailha_failback_hold_down_seconds": _between(0, 86400),
    "mailha_probe_timeout": _between(0.05, 60),
    "mailha_queue_deferred_warning": _between(0, 10**9),
    "mailha_test_recipient": _mail_address,
    "mailha_test_sender": _mail_address,
    "mailha_drill_max_outage_seconds": _between(0, 3600),
    "mailha_drill_max_lost": _between(0, 10**9),
    "mailha_drill_max_duplicated": _between(0, 10**9),
    "mailha_sender_domain": lambda v: None if v == "" else names.dns_name_problem(v),
    "mailha_preflight_resolver": lambda v: None if v == "" else names.address_problem(v),
    "mailha_preflight_dnsbl_zones": _dns_names,
    "mailha_preflight_tls_warning_days": _between(0, 3650),
    "mailha_preflight_queue_age_warning_seconds": _between(0, 10**9),
    "mailha_preflight_spool_free_warning_mb": _between(0, 10**9),
    "mailha_preflight_clock_offset_warning_seconds": _between(0, 86400),
    "mailha_events_webhook_urls": _webhook_urls,
    "mailha_events_webhook_secret_file": _secret_file,
    "mailha_events_timeout": _between(0.1, 60),
    "mailha_events_max_attempts": _between(1, 10**6),
    "mailha_events_max_age_seconds": _between(1, 30 * 86400),
    "mailha_events_backoff_max_seconds": _between(1, 86400),
    "mailha_host_power_off": _command,
    "mailha_host_power_on": _command,
}


@dataclass
class Node:
    name: str
    address: str
    fqdn: str
    target: str
    designated_state: str  # MASTER or BACKUP as built


@dataclass
class Pair:
    environment: str
    inventory_path: Path
    vars: dict[str, Any]
    nodes: dict[str, Node]
    balancer: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def floating_ip(self) -> str:
        return self.vars["mailha_floating_ip"]

    @property
    def managed_balancer(self) -> bool:
        """The load balancer is a cloud's (kind hcloud), no host: it sends to
        whichever relay answers 200 on /active, its own health check."""
        return self.balancer.get("kind", "haproxy") != "haproxy"

    @property
    def nameserver(self) -> str:
        return self.vars["mailha_nameserver"]

    @property
    def zone(self) -> str:
        return self.vars["mailha_dns_zone"]

    @property
    def sending_host(self) -> str:
        return self.vars["mailha_sending_host"]

    @property
    def secrets_dir(self) -> Path:
        """<two levels above the inventory's directory>/.lab/secrets/<environment>,
        where playbooks/secrets.yml keeps them (mailha_secrets_dir). The
        playbooks themselves are the project's (mailha.project)."""
        return self.inventory_path.resolve().parent.parent.parent / ".lab" / "secrets" / self.environment

    @property
    def state_dir(self) -> Path:
        return state_dir(self.environment)

    def node(self, name: str) -> Node:
        if name not in self.nodes:
            known = ", ".join(sorted(self.nodes))
            raise BadInput(f"unknown node {name!r}; the pair's nodes are {known}")
        return self.nodes[name]

    def peer(self, name: str) -> Node:
        return next(n for n in self.nodes.values() if n.name != name)

    def designated_primary(self) -> str:
        """The node meant to be active: the last switch's target, else the inventory's MASTER."""
        path = self.state_dir / "designation.json"
        try:
            document = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError):
            document = None  # absent or damaged: the inventory decides
        primary = document.get("primary") if isinstance(document, dict) else None
        if isinstance(primary, str) and primary in self.nodes:
            return primary
        return self.inventory_primary()

    def inventory_primary(self) -> str:
        """The mail host the inventory built as VRRP MASTER (load() checked there is exactly one)."""
        return next(n.name for n in self.nodes.values() if n.designated_state == "MASTER")

    def set_designated_primary(self, name: str) -> None:
        make_state_dir(self.state_dir)
        path = self.state_dir / "designation.json"
        try:
            path.write_text(json.dumps({"primary": name}) + "\n")
        except OSError as exc:
            raise MailhaError(f"cannot record {name} as the primary in {path}: {exc.strerror}") from None

    def node_tags(self) -> dict[str, str]:
        """{greeting tag: node} for telling which relay answered (names.node_tag)."""
        path = self.secrets_dir / NODE_TAG_KEY_FILE
        try:
            key = path.read_text()
        except OSError:
            raise BadInput(f"the greeting tag key {path} is missing; run 'make provision' first") from None
        return {names.node_tag(key, name): name for name in self.nodes}

    def dkim_selector(self) -> str:
        """The DKIM selector in use: the one a key rotation recorded, else the default."""
        path = self.secrets_dir / DKIM_SELECTOR_FILE
        try:
            selector = path.read_text().strip()
        except FileNotFoundError:
            return DEFAULT_DKIM_SELECTOR
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"cannot read the DKIM selector {path}: {getattr(exc, 'strerror', None) or exc}") from None
        if names.dns_name_problem(selector) is not None:
            raise BadInput(f"the DKIM selector in {path} is {names.shown(selector)}; it must be {names.DNS_NAME_RULE}")
        return selector

    def tsig_secret(self) -> str:
        path = self.secrets_dir / f"tsig-{self.settings['mailha_tsig_key_name']}.key"
        try:
            secret = path.read_text().strip()
        except OSError:
            raise BadInput(f"TSIG key {path} is missing; run 'make provision' (playbooks/secrets.yml) first") from None
        if not secret:
            raise BadInput(f"TSIG key {path} is empty; remove it and run playbooks/secrets.yml")
        return secret


def load_settings(inventory_path: Path) -> dict[str, Any]:
    """DEFAULT_SETTINGS, then the project's mailha.yml, then the environment's."""
    settings = dict(DEFAULT_SETTINGS)
    try:
        defaults = project.project_dir() / "playbooks" / SETTINGS_FILE
    except BadInput:
        # A MAILHA_PROJECT_DIR that names no checkout is the operator's to
        # fix; without one and without a checkout, DEFAULT_SETTINGS are the
        # project's defaults.
        if os.environ.get(project.ENV_VAR):
            raise
        defaults = None
    for path in (defaults, inventory_path.parent / SETTINGS_FILE):
        if path is not None:
            _read_settings(path, settings)
    return settings


def _read_settings(path: Path, settings: dict[str, Any]) -> None:
    """Overlay the settings in `path` (absent: none) on `settings`, each checked."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path} is not UTF-8 text (byte {exc.start + 1}); fix it and retry") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise BadInput(f"{path} is not valid YAML; fix it and retry") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path} must be a mapping of settings")
    for key, value in data.items():
        if isinstance(value, str) and "{{" in value:
            raise BadInput(f"{path}: {key} must be a plain value, the CLI does not evaluate Jinja")
        if key not in DEFAULT_SETTINGS:
            settings[key] = value
            continue
        expected = type(DEFAULT_SETTINGS[key])
        widened = expected is float and isinstance(value, int)
        if isinstance(value, bool) or (not isinstance(value, expected) and not widened):
            raise BadInput(f"{path}: {key} must be of type {expected.__name__}, not {type(value).__name__}")
        rule = SETTING_RULES[key](value)
        if rule is not None:
            raise BadInput(f"{path}: {key} is {names.shown(value)}; it {rule}")
        settings[key] = value


def _mapping(value: Any, where: str, inventory_path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(
            f"inventory {inventory_path}: {where} must be a mapping, not {type(value).__name__}; "
            "regenerate it with 'mailha inventory'"
        )
    return value


def _checked(value: Any, where: str, problem: Callable[[object], str | None], inventory_path: Path) -> Any:
    rule = problem(value)
    if rule is not None:
        raise BadInput(
            f"inventory {inventory_path}: {where} is {names.shown(value)}; it {rule}; "
            "regenerate it with 'mailha inventory'"
        )
    return value


def load(inventory_path: Path) -> Pair:
    """The pair of a generated inventory; BadInput, naming the value, for anything the CLI cannot use.

    The inventory may be older than the checks of the contract, or edited by
    hand, so what the CLI puts into paths, URLs and command lines is checked
    again here with the same rules (names.py)."""
    data = inventory.load(inventory_path)
    all_vars = _mapping(data["all"].get("vars"), "all.vars", inventory_path)
    children = _mapping(data["all"].get("children"), "all.children", inventory_path)
    required = (
        "mailha_environment",
        "mailha_floating_ip",
        "mailha_nameserver",
        "mailha_dns_zone",
        "mailha_sending_host",
    )
    missing = [key for key in required if key not in all_vars]
    if missing:
        raise BadInput(f"inventory {inventory_path} lacks {', '.join(missing)}; regenerate it with 'mailha inventory'")
    _checked(all_vars["mailha_environment"], "mailha_environment", names.environment_problem, inventory_path)
    for key in ("mailha_floating_ip", "mailha_nameserver"):
        _checked(all_vars[key], key, names.address_problem, inventory_path)
    for key in ("mailha_dns_zone", "mailha_sending_host"):
        _checked(all_vars[key], key, names.dns_name_problem, inventory_path)
    groups = {
        name: _mapping(
            _mapping(group, f"group {names.shown(name)}", inventory_path).get("hosts"),
            f"{names.shown(name)}.hosts",
            inventory_path,
        )
        for name, group in children.items()
    }
    mail_hosts = groups.get("mail", {})
    if len(mail_hosts) != 2:
        raise BadInput(f"inventory {inventory_path} must have two hosts in group mail, found {len(mail_hosts)}")
    nodes = {}
    for name, host in sorted(mail_hosts.items(), key=lambda item: str(item[0])):
        _checked(name, "a host in group mail", names.host_name_problem, inventory_path)
        host = _mapping(host, f"host {name}", inventory_path)
        try:
            nodes[name] = Node(
                name, host["mailha_address"], host["mailha_fqdn"], host["ansible_host"], host["mailha_vrrp_state"]
            )
        except KeyError as exc:
            raise BadInput(f"inventory {inventory_path}: host {name} lacks {exc}; regenerate it") from None
        _checked(host["mailha_address"], f"{name}.mailha_address", names.address_problem, inventory_path)
        _checked(host["mailha_fqdn"], f"{name}.mailha_fqdn", names.dns_name_problem, inventory_path)
        _checked(host["ansible_host"], f"{name}.ansible_host", names.target_problem, inventory_path)
    states = [node.designated_state for node in nodes.values()]
    if sorted(map(str, states)) != ["BACKUP", "MASTER"]:
        raise BadInput(
            f"inventory {inventory_path}: the mail hosts' mailha_vrrp_state are {', '.join(map(names.shown, states))}; "
            "one MASTER and one BACKUP are needed; regenerate it with 'mailha inventory'"
        )
    balancer_name = all_vars.get("mailha_load_balancer_host", "lb")
    _checked(balancer_name, "mailha_load_balancer_host", names.host_name_problem, inventory_path)
    kind = all_vars.get("mailha_load_balancer_kind", "haproxy")
    if kind not in inventory.BALANCER_KINDS:
        raise BadInput(
            f"inventory {inventory_path}: mailha_load_balancer_kind is {names.shown(kind)}; "
            f"it must be one of {', '.join(inventory.BALANCER_KINDS)}; regenerate it with 'mailha inventory'"
        )
    # A managed load balancer is no host of the inventory: only its address.
    host = groups.get("loadbalancer", {}).get(balancer_name) if kind == "haproxy" else None
    balancer = dict(_mapping(host, f"host {balancer_name}", inventory_path))
    balancer.setdefault("mailha_address", all_vars.get("mailha_load_balancer_address"))
    _checked(balancer["mailha_address"], "the load balancer's address", names.address_problem, inventory_path)
    balancer["name"] = balancer_name
    balancer["kind"] = kind
    pair = Pair(
        environment=all_vars["mailha_environment"],
        inventory_path=inventory_path,
        vars=all_vars,
        nodes=nodes,
        balancer=balancer,
        settings=load_settings(inventory_path),
        groups=groups,
    )
    pair.state_dir  # noqa: B018 - refuse an unusable state directory before any command starts
    return pair
