#!/usr/bin/env bash
# molecule-roles.sh JOBS ROLE...: `molecule test` of each role's default
# scenario, JOBS at a time (make molecule; MOLECULE_JOBS). Scenarios do not
# share containers, addresses or ephemeral directories (each has its own
# platform names and addresses on mailha-molecule; molecule keys its
# directory by the role's name), so they can run side by side; the longest
# go first so the lanes end together. Each role's output goes to
# build/molecule/ROLE.log and is printed whole once the role is done, so the
# lanes never interleave. Exit 1 when any role failed (all run regardless),
# 2 on bad usage.
set -uo pipefail

if [[ $# -lt 2 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 JOBS ROLE..." >&2
  exit 2
fi
jobs=$1
shift
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
logs=$repo/build/molecule
mkdir -p "$logs"

# Measured on the lab machine, minutes; unlisted roles count as short.
weight() {
  case $1 in
    postfix) echo 7 ;; firewall) echo 5 ;; haproxy | sink) echo 4 ;; bind) echo 3 ;;
    keepalived | preflight_timer | mail_health) echo 2 ;; *) echo 1 ;;
  esac
}

run_one() {
  local role=$1 log=$logs/$1.log began rc
  began=$(date +%s)
  (cd "$repo/roles/$role" && molecule test) >"$log" 2>&1
  rc=$?
  echo "== molecule: $role: $([[ $rc -eq 0 ]] && echo passed || echo "FAILED (exit $rc)") in $(($(date +%s) - began)) s" >>"$log"
  # Printed under a lock, so the lanes' reports do not interleave.
  flock "$logs/.print.lock" sh -c 'echo "== molecule: $1"; cat "$2"' _ "$role" "$log"
  return "$rc"
}
export -f run_one
export logs repo

for role in "$@"; do
  if [[ ! -f $repo/roles/$role/molecule/default/molecule.yml ]]; then
    echo "molecule-roles: roles/$role has no molecule/default scenario; every role needs one" >&2
    exit 2
  fi
done
for role in "$@"; do
  echo "$(weight "$role") $role"
done | sort -k1,1nr -k2 | awk '{print $2}' |
  xargs -P "$jobs" -I{} bash -c 'run_one "$1"' _ {}
status=$?
if [[ $status -ne 0 ]]; then
  echo "molecule-roles: at least one scenario failed (its log is above, and in build/molecule/)" >&2
  exit 1
fi
