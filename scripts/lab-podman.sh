#!/usr/bin/env bash
# Podman operations behind the lab's Terraform modules (local-exec), kept in
# one script so that Terraform, the Makefile and the tests share them.
#
# Usage:
#   lab-podman.sh network-create NAME SUBNET GATEWAY
#   lab-podman.sh network-remove NAME
#   lab-podman.sh host-create NAME IMAGE NETWORK ADDRESS HOSTNAME DNS CAPS SYSCTLS
#       CAPS and SYSCTLS are comma-separated lists, "-" for none.
#   lab-podman.sh host-remove NAME
#   lab-podman.sh host-wait NAME        wait until systemd has booted
# Exit codes: 0 done (or already so), 1 podman failed, 2 usage error.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo_root/lab/containers.conf}
boot_timeout=${MAILHA_BOOT_TIMEOUT:-90}

usage() {
  sed -n '5,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

network_create() {
  local name=$1 subnet=$2 gateway=$3
  if podman network exists "$name"; then
    return 0
  fi
  # --internal: no NAT and no route out; the host still reaches the bridge.
  podman network create --internal --subnet "$subnet" --gateway "$gateway" "$name" >/dev/null
  echo "lab: network $name ($subnet) created"
}

network_remove() {
  local name=$1
  if podman network exists "$name"; then
    podman network rm -f "$name" >/dev/null
    echo "lab: network $name removed"
  fi
}

host_wait() {
  local name=$1 state deadline=$((SECONDS + boot_timeout))
  while ((SECONDS < deadline)); do
    state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
    case $state in
      running | degraded) return 0 ;;
    esac
    sleep 0.5
  done
  echo "lab: $name did not finish booting within ${boot_timeout}s (state: ${state:-unknown})" >&2
  return 1
}

host_create() {
  local name=$1 image=$2 network=$3 address=$4 hostname=$5 dns=$6 caps=$7 sysctls=$8
  # The journal on a volume of the container's own: in systemd mode podman
  # mounts a tmpfs on /var/log/journal, and a host-down drill (stop, start)
  # would wipe the logs that explain what the relay did before it stopped.
  local args=(--detach --name "$name" --hostname "$hostname" --network "$network"
    --ip "$address" --systemd=always --label mailha.lab=1 --volume /var/log/journal)
  [[ $dns != - ]] && args+=(--dns "$dns")
  [[ $caps != - ]] && args+=(--cap-add "$caps")
  if [[ $sysctls != - ]]; then
    local sysctl
    IFS=, read -ra sysctl_list <<<"$sysctls"
    for sysctl in "${sysctl_list[@]}"; do args+=(--sysctl "$sysctl"); done
  fi
  if podman container exists "$name"; then
    podman start "$name" >/dev/null
  else
    podman run "${args[@]}" "$image" /sbin/init >/dev/null
    echo "lab: host $name ($address) started"
  fi
  host_wait "$name"
}

host_remove() {
  local name=$1
  if podman container exists "$name"; then
    # Stop first (systemd shuts down on the image's stop signal), then
    # remove. `podman rm -f` alone can meet a container that stops by
    # itself just as podman falls back to SIGKILL, and fails with
    # "container state improper: stopped"; the removal is tried again then.
    podman stop -t 10 "$name" >/dev/null 2>&1 || true
    podman rm -f -v "$name" >/dev/null 2>&1 || podman rm -f -v "$name" >/dev/null
    echo "lab: host $name removed"
  fi
}

[[ $# -ge 1 ]] || usage
command=$1
shift
case $command in
  network-create) [[ $# -eq 3 ]] || usage; network_create "$@" ;;
  network-remove) [[ $# -eq 1 ]] || usage; network_remove "$@" ;;
  host-create) [[ $# -eq 8 ]] || usage; host_create "$@" ;;
  host-remove) [[ $# -eq 1 ]] || usage; host_remove "$@" ;;
  host-wait) [[ $# -eq 1 ]] || usage; host_wait "$@" ;;
  *) usage ;;
esac
