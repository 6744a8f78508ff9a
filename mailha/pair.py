"""The pair as the CLI sees it: the generated inventory plus the CLI's settings.

The inventory (`inventories/<env>/hosts.yml`) comes from the Terraform output
contract. The settings the CLI shares with the roles live in
`inventories/<env>/group_vars/all/mailha.yml` as plain values (no Jinja), so
the CLI reads them without running Ansible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mailha import inventory
from mailha.audit import state_dir
from mailha.errors import BadInput

SETTINGS_FILE = Path("group_vars") / "all" / "mailha.yml"

# Settings the CLI reads, with the defaults used when the file omits them.
DEFAULT_SETTINGS: dict[str, Any] = {
    "mailha_agent_port": 8025,
    "mailha_haproxy_stats_port": 8404,
    "mailha_tsig_key_name": "mailha-ddns",
    "mailha_tsig_algorithm": "hmac-sha256",
    "mailha_active_record": "relay",
    "mailha_failback_hold_down_seconds": 300,
    "mailha_probe_timeout": 1.0,
    "mailha_queue_deferred_warning": 100,
    "mailha_test_recipient": "postmaster@inbox.test",
    "mailha_test_sender": "mailha-test@news.mailha.test",
    "mailha_drill_max_outage_seconds": 2.0,
    "mailha_drill_max_lost": 0,
    "mailha_drill_max_duplicated": 0,
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
    def nameserver(self) -> str:
        return self.vars["mailha_nameserver"]

    @property
    def zone(self) -> str:
        return self.vars["mailha_dns_zone"]

    @property
    def sending_host(self) -> str:
        return self.vars["mailha_sending_host"]

    @property
    def repo_root(self) -> Path:
        return self.inventory_path.resolve().parent.parent.parent

    @property
    def secrets_dir(self) -> Path:
        return self.repo_root / ".lab" / "secrets" / self.environment

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
        if path.exists():
            try:
                primary = json.loads(path.read_text()).get("primary")
            except (OSError, ValueError):
                primary = None
            if primary in self.nodes:
                return primary
        return next(n.name for n in self.nodes.values() if n.designated_state == "MASTER")

    def set_designated_primary(self, name: str) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        (self.state_dir / "designation.json").write_text(json.dumps({"primary": name}) + "\n")

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
    settings = dict(DEFAULT_SETTINGS)
    path = inventory_path.parent / SETTINGS_FILE
    if not path.exists():
        return settings
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise BadInput(f"{path} is not valid YAML; fix it and retry") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path} must be a mapping of settings")
    for key, value in data.items():
        if isinstance(value, str) and "{{" in value:
            raise BadInput(f"{path}: {key} must be a plain value, the CLI does not evaluate Jinja")
        expected = type(DEFAULT_SETTINGS.get(key, value))
        widened = expected is float and isinstance(value, int)
        if not isinstance(value, expected) and not widened:
            raise BadInput(f"{path}: {key} must be of type {expected.__name__}, not {type(value).__name__}")
        settings[key] = value
    return settings


def load(inventory_path: Path) -> Pair:
    data = inventory.load(inventory_path)
    all_vars = data["all"].get("vars") or {}
    children = data["all"].get("children") or {}
    required = ("mailha_environment", "mailha_floating_ip", "mailha_nameserver", "mailha_dns_zone")
    missing = [key for key in required if key not in all_vars]
    if missing:
        raise BadInput(f"inventory {inventory_path} lacks {', '.join(missing)}; regenerate it with 'mailha inventory'")
    mail_hosts = (children.get("mail") or {}).get("hosts") or {}
    if len(mail_hosts) != 2:
        raise BadInput(f"inventory {inventory_path} must have two hosts in group mail, found {len(mail_hosts)}")
    nodes = {}
    for name, host in sorted(mail_hosts.items()):
        try:
            nodes[name] = Node(
                name, host["mailha_address"], host["mailha_fqdn"], host["ansible_host"], host["mailha_vrrp_state"]
            )
        except (KeyError, TypeError) as exc:
            raise BadInput(f"inventory {inventory_path}: host {name} lacks {exc}; regenerate it") from None
    balancer_name = all_vars.get("mailha_load_balancer_host", "lb")
    balancer_hosts = (children.get("loadbalancer") or {}).get("hosts") or {}
    balancer = dict(balancer_hosts.get(balancer_name) or {})
    balancer.setdefault("mailha_address", all_vars.get("mailha_load_balancer_address"))
    balancer["name"] = balancer_name
    return Pair(
        environment=all_vars["mailha_environment"],
        inventory_path=inventory_path,
        vars=all_vars,
        nodes=nodes,
        balancer=balancer,
        settings=load_settings(inventory_path),
        groups={name: dict((group or {}).get("hosts") or {}) for name, group in children.items()},
    )
