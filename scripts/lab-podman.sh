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
#   lab-podman.sh host-login NAME ADDRESS USER KNOWN_HOSTS
#       what cloud-init does on a VPS: make USER with sudo and the operator's
#       key (MAILHA_SSH_PUBLIC_KEY), the host keys, start sshd, and record the
#       host key for ADDRESS in KNOWN_HOSTS
#   lab-podman.sh host-kill NAME | host-start NAME
#       pull the plug (no shutdown) and power on again: the lab's hook for
#       host-down drills (mailha_host_power_off, mailha_host_power_on)
#   lab-podman.sh operator-key DIR      make DIR/id_ed25519 (0600) once
# Exit codes: 0 done (or already so), 1 podman failed, 2 usage error.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo_root/lab/containers.conf}
boot_timeout=${MAILHA_BOOT_TIMEOUT:-90}

usage() {
  sed -n '5,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
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

# A rebuilt host has the old one's address and a new MAC. This machine's
# neighbour entry for the address may still hold the old MAC, and here it
# stayed unanswered (FAILED) instead of being learnt again: SSH to the
# rebuilt host timed out. Forget it; the next packet asks anew.
forget_neighbour() {
  ip neigh flush to "$1" >/dev/null 2>&1 || true
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
  forget_neighbour "$address"
  host_wait "$name"
}

host_login() {
  local name=$1 address=$2 user=$3 known_hosts=$4 hostkey
  if [[ ! ${MAILHA_SSH_PUBLIC_KEY:-} =~ ^ssh-[a-z0-9-]+\ [A-Za-z0-9+/=]+ ]]; then
    echo "lab: MAILHA_SSH_PUBLIC_KEY holds no SSH public key; run 'make provision' (it makes the operator key)" >&2
    return 2
  fi
  # The login user gets root through sudo without a password, as a
  # cloud image's default user does; root itself cannot log in (sshd).
  printf '%s\n' "$MAILHA_SSH_PUBLIC_KEY" | podman exec -i "$name" sh -euc '
    user=$1
    id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
    install -d -m 0700 -o "$user" -g "$user" "/home/$user/.ssh"
    install -m 0600 -o "$user" -g "$user" /dev/stdin "/home/$user/.ssh/authorized_keys"
    printf "%s ALL=(ALL) NOPASSWD: ALL\n" "$user" > /etc/sudoers.d/90-operator
    chmod 0440 /etc/sudoers.d/90-operator
    visudo -cq -f /etc/sudoers.d/90-operator
    ssh-keygen -A >/dev/null
    systemctl enable --now ssh.service >/dev/null 2>&1
  ' sh "$user"
  hostkey=$(podman exec "$name" cat /etc/ssh/ssh_host_ed25519_key.pub | awk '{print $1, $2}')
  [[ -n $hostkey ]] || { echo "lab: $name has no ed25519 host key" >&2; return 1; }
  mkdir -p "$(dirname "$known_hosts")"
  # Hosts are made in parallel: one writer at a time. A replaced host has a
  # new key, so the address's old line goes.
  (
    flock 9
    touch "$known_hosts"
    { grep -v "^$address " "$known_hosts" || true; echo "$address $hostkey"; } >"$known_hosts.new"
    chmod 0644 "$known_hosts.new"
    mv "$known_hosts.new" "$known_hosts"
  ) 9>"$known_hosts.lock"
  echo "lab: $name reachable over ssh as $user@$address"
}

host_kill() {
  podman stop -t 0 "$1" >/dev/null
}

host_start() {
  podman start "$1" >/dev/null
  forget_neighbour "$(podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1")"
}

operator_key() {
  local dir=$1
  install -d -m 0700 "$dir"
  if [[ ! -f $dir/id_ed25519 ]]; then
    ssh-keygen -q -t ed25519 -N '' -C "mailha-lab-operator" -f "$dir/id_ed25519"
    echo "lab: operator key $dir/id_ed25519 made" >&2
  fi
  chmod 0600 "$dir/id_ed25519"
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
  host-login) [[ $# -eq 4 ]] || usage; host_login "$@" ;;
  host-kill) [[ $# -eq 1 ]] || usage; host_kill "$@" ;;
  host-start) [[ $# -eq 1 ]] || usage; host_start "$@" ;;
  operator-key) [[ $# -eq 1 ]] || usage; operator_key "$@" ;;
  *) usage ;;
esac
