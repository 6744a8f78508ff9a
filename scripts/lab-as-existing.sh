#!/usr/bin/env bash
# Describe the provisioned lab's servers to the `existing` environment, as an
# operator who rents them would in terraform.tfvars: their addresses, the SSH
# login (the lab's sudo user, key and known_hosts), the floating IP, the DNS
# zone and its RFC 2136 server. `make test` then provisions ENV=existing from
# this file and runs the integration suite on the inventory it writes, which
# proves the existing environment end to end on real servers reached over SSH.
#
# Usage: scripts/lab-as-existing.sh LAB_INVENTORY TFVARS_OUT
# Exit codes: 0 written, 1 the lab inventory cannot be read, 2 usage error.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$repo_root/.venv/bin/python}

if [[ $# -ne 2 ]]; then
  sed -n '9p' "${BASH_SOURCE[0]}" | sed 's/^# //' >&2
  exit 2
fi

"$python" - "$1" "$2" <<'PY'
import json
import sys
from pathlib import Path

import yaml

source, target = Path(sys.argv[1]), Path(sys.argv[2])
try:
    data = yaml.safe_load(source.read_text())
    v, children = data["all"]["vars"], data["all"]["children"]
except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
    sys.exit(f"lab-as-existing: cannot read the lab inventory {source}: {exc}; run 'make provision' first")


def only(group):
    (name, host), = children[group]["hosts"].items()
    return name, host


def server(group):
    name, host = only(group)
    return {"name": name, "address": host["mailha_address"]}


mail = children["mail"]["hosts"]
relays = {name: {"address": host["mailha_address"]} for name, host in sorted(mail.items())}
primary = next(name for name, host in mail.items() if host["mailha_vrrp_state"] == "MASTER")
login = next(iter(mail.values()))
if not str(login.get("ansible_ssh_common_args", "")).startswith("-o UserKnownHostsFile="):
    sys.exit(f"lab-as-existing: {source} names no known_hosts file; the lab must be reached over ssh")
known_hosts = login["ansible_ssh_common_args"].split()[1].split("=", 1)[1]
zone = v["mailha_dns_zone"]
settings = {
    "relays": relays,
    "primary": primary,
    "load_balancer": server("loadbalancer"),
    "dns_host": server("dns"),
    "sink": server("recipient"),
    "network_cidr": v["mailha_network_cidr"],
    "floating_ip": v["mailha_floating_ip"],
    "controller_address": v["mailha_controller_address"],
    "ssh_user": login["ansible_user"],
    "ssh_port": login["ansible_port"],
    "ssh_private_key_file": login["ansible_ssh_private_key_file"],
    "ssh_known_hosts_file": known_hosts,
    "dns_zone": zone,
    "dns_server": v["mailha_nameserver"],
    "sending_name": v["mailha_sending_host"].removesuffix("." + zone),
    "submission_name": v["mailha_submission_host"].removesuffix("." + zone),
}
target.parent.mkdir(parents=True, exist_ok=True)
# JSON is valid tfvars syntax when the file is named *.tfvars.json.
target.write_text(json.dumps(settings, indent=2) + "\n")
print(f"lab-as-existing: {target} describes the lab's {len(relays)} relays, load balancer, DNS server and sink")
PY
