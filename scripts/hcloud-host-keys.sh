#!/usr/bin/env bash
# Usage: scripts/hcloud-host-keys.sh DIR RELAY...
#
# Makes an ed25519 SSH host key for each relay in DIR/host-keys/ (once: a
# key that exists is kept, so known_hosts stays true for servers already
# made) and writes DIR/host-keys.tfvars.json (host_public_keys,
# host_private_keys) for terraform/environments/hcloud, which hands each
# relay its key through cloud-init. The controller so knows the relays' host
# keys before their first boot and checks them strictly on the first
# connection: nothing is learnt from whoever answers. DIR is 0700, every
# private file 0600. Exit status: 0 written, 1 ssh-keygen failed, 2 usage.
set -euo pipefail

[[ $# -ge 2 ]] || { echo "usage: $0 DIR RELAY..." >&2; exit 2; }
dir=$1
shift
for relay in "$@"; do
  [[ $relay =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] || { echo "hcloud-host-keys: $relay is no relay name (a DNS label)" >&2; exit 2; }
done

umask 077
install -d -m 0700 "$dir" "$dir/host-keys"
for relay in "$@"; do
  key=$dir/host-keys/ssh_host_ed25519_key.$relay
  if [[ ! -s $key ]]; then
    ssh-keygen -q -t ed25519 -N '' -C "$relay" -f "$key.new" || exit 1
    mv -f "$key.new.pub" "$key.pub"
    mv -f "$key.new" "$key"
  fi
done

python3 - "$dir" "$@" <<'PY'
import json, os, sys
directory, relays = sys.argv[1], sys.argv[2:]
keys = os.path.join(directory, "host-keys", "ssh_host_ed25519_key.")
public = {r: open(keys + r + ".pub").read().strip() for r in relays}
private = {r: open(keys + r).read() for r in relays}
target = os.path.join(directory, "host-keys.tfvars.json")
with open(target + ".new", "w", opener=lambda p, f: os.open(p, f, 0o600)) as out:
    json.dump({"host_public_keys": public, "host_private_keys": private}, out, indent=2)
os.replace(target + ".new", target)
PY
