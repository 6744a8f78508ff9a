#!/usr/bin/env bash
# Print where the lab's floating IP is and how to send a test message.
# Usage: scripts/lab-summary.sh [INVENTORY]
# Exit codes: 0 exactly one relay holds the floating IP, 1 otherwise.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
inventory=${1:-$repo_root/inventories/lab/hosts.yml}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo_root/lab/containers.conf}
python=${PYTHON:-$repo_root/.venv/bin/python}

read -r floating_ip balancer sending_host < <("$python" - "$inventory" <<'PY'
import sys, yaml
v = yaml.safe_load(open(sys.argv[1]))["all"]["vars"]
print(v["mailha_floating_ip"], v["mailha_load_balancer_address"], v["mailha_sending_host"])
PY
)
mapfile -t relays < <("$python" - "$inventory" <<'PY'
import sys, yaml
hosts = yaml.safe_load(open(sys.argv[1]))["all"]["children"]["mail"]["hosts"]
for name, h in sorted(hosts.items()):
    print(name, h["ansible_host"])
PY
)

holders=()
for relay in "${relays[@]}"; do
  read -r name target <<<"$relay"
  if podman exec "$target" ip -o -4 addr show 2>/dev/null | grep -q " $floating_ip/"; then
    holders+=("$name")
  fi
done

echo
echo "mailha lab is up."
echo "  floating IP $floating_ip ($sending_host) is on: ${holders[*]:-no relay}"
echo "  load balancer: $balancer ports 25 and 587"
echo "  send a test message through the load balancer:"
echo "    python3 -c \"import smtplib; smtplib.SMTP('$balancer', 25).sendmail('campaign@news.mailha.test', ['someone@inbox.test'], 'Subject: hello\\n\\nhello')\""
echo "  read what arrived: podman exec mailha-sink mailha-sink-index"
[[ ${#holders[@]} -eq 1 ]]
