#!/usr/bin/env bash
# Build the mailha lab base image without a container registry:
# debootstrap a Debian root file system and import it into podman.
#
# The image is tagged with a hash of its package list and of this script, so
# it is rebuilt only when either changes. Prints the image reference.
#
# Usage: scripts/build-image.sh [--print-ref]
# Environment:
#   MAILHA_IMAGE_NAME   image name (default localhost/mailha-lab)
#   MAILHA_APT_MIRROR   Debian mirror; default: read from the host's apt sources
#   CONTAINERS_CONF     podman configuration (default lab/containers.conf)
# Exit codes: 0 image present or built, 1 build failed, 2 usage error.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo_root/lab/containers.conf}
image_name=${MAILHA_IMAGE_NAME:-localhost/mailha-lab}
suite=bookworm

# Everything any lab host runs. Services are disabled in the image; each
# role enables the ones its host needs.
packages=(
  systemd systemd-sysv dbus python3 python3-apt
  iproute2 iputils-ping procps ca-certificates openssl nftables
  postfix opendkim opendkim-tools
  keepalived haproxy socat
  bind9 bind9-dnsutils
  openssh-server sudo
  python3-hcloud
)
# ssh too: the lab's host-create step (scripts/lab-podman.sh), the lab's
# cloud-init, generates the host keys and starts sshd on a lab host; a
# Molecule container of the same image runs no sshd.
# python3-hcloud: the Hetzner floating IP mover's SDK (roles/hcloud_mover);
# lab and Molecule hosts reach no package mirror, so it is baked in here.
services_to_disable=(postfix opendkim keepalived haproxy named ssh)

tag=$( { printf '%s\n' "$suite" "${packages[@]}"; cat "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-12)
image_ref="$image_name:$tag"

if [[ ${1:-} == --print-ref ]]; then
  echo "$image_ref"
  exit 0
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--print-ref]" >&2
  exit 2
fi

if podman image exists "$image_ref"; then
  echo "$image_ref"
  exit 0
fi

mirror_from_apt_sources() {
  # First Debian (not security) URI in the host's apt configuration.
  local uri
  uri=$(grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  if [[ -z $uri && -f /etc/apt/sources.list ]]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  echo "$uri"
}

mirror=${MAILHA_APT_MIRROR:-$(mirror_from_apt_sources)}
if [[ -z $mirror ]]; then
  echo "build-image: no Debian mirror found in /etc/apt; set MAILHA_APT_MIRROR" >&2
  exit 1
fi

rootfs=$(mktemp -d /var/tmp/mailha-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "build-image: debootstrap $suite from the host's mirror into $rootfs" >&2
DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase \
  --include="$(IFS=,; echo "${packages[*]}")" "$suite" "$rootfs" "$mirror" >&2

for service in "${services_to_disable[@]}"; do
  systemctl --root="$rootfs" disable "$service.service" >/dev/null 2>&1 || true
done
# Units that cannot work in a container and only slow the boot.
systemctl --root="$rootfs" mask systemd-udevd.service systemd-udevd-control.socket \
  systemd-udevd-kernel.socket getty.target console-getty.service \
  systemd-networkd-wait-online.service >/dev/null 2>&1 || true
# A persistent journal: a drill that stops a host (host-down) must not wipe
# the logs that explain what its relay did before it stopped. Bounded, as a
# lab runs for days.
mkdir -p "$rootfs/var/log/journal" "$rootfs/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=persistent\nSystemMaxUse=64M\n' \
  > "$rootfs/etc/systemd/journald.conf.d/mailha-lab.conf"
# sshd as on a hardened VPS: keys only, no root login. The host keys are not
# part of the image: every host makes its own on its first boot.
rm -f "$rootfs"/etc/ssh/ssh_host_*
printf '%s\n' 'PasswordAuthentication no' 'KbdInteractiveAuthentication no' 'PermitRootLogin no' \
  > "$rootfs/etc/ssh/sshd_config.d/mailha-lab.conf"
# The image carries the host's mirror for apt, as the host itself does.
echo "deb $mirror $suite main" > "$rootfs/etc/apt/sources.list"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages
: > "$rootfs/etc/machine-id"

echo "build-image: importing $image_ref" >&2
tar -C "$rootfs" -c . | podman import \
  --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$image_ref" >&2
podman tag "$image_ref" "$image_name:latest" >&2
echo "$image_ref"
