#!/usr/bin/env bash
# Print where the lab's floating IP is and how to send a test message.
# Usage: scripts/lab-summary.sh [INVENTORY]
# Exit codes: 0 exactly one relay holds the floating IP, 1 otherwise.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
inventory=${1:-$repo_root/inventories/lab/hosts.yml}
python=${PYTHON:-$repo_root/.venv/bin/python}

read -r floating_ip balancer sending_host < <("$python" - "$inventory" <<'PY'
import sys, yaml
v = yaml.safe_load(open(sys.argv[1]))["all"]["vars"]
print(v["mailha_floating_ip"], v["mailha_load_balancer_address"], v["mailha_sending_host"])
PY
)
# Where the floating IP is, as the pair's own agents say (over the network,
# as an operator would see it; no podman).
holders=()
mapfile -t holders < <("$repo_root/.venv/bin/mailha" status --inventory "$inventory" --output json 2>/dev/null \
  | "$python" -c 'import json, sys; sys.stdout.write("".join(h + "\n" for h in json.load(sys.stdin)["holders"]))' 2>/dev/null || true)

echo
echo "mailha lab is up."
echo "  floating IP $floating_ip ($sending_host) is on: ${holders[*]:-no relay}"
echo "  load balancer: $balancer ports 25 and 587"
echo "  send a test message through the load balancer:"
echo "    python3 -c \"import smtplib; smtplib.SMTP('$balancer', 25).sendmail('campaign@news.mailha.test', ['someone@inbox.test'], 'Subject: hello\\n\\nhello')\""
echo "  read what arrived: ssh -F none -i .lab/secrets/lab/id_ed25519 -o UserKnownHostsFile=.lab/secrets/lab/known_hosts mailha@10.213.0.30 mailha-sink-index"
[[ ${#holders[@]} -eq 1 ]]
