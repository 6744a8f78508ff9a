#!/usr/bin/env bash
# Install what the control host needs to run mailha and its lab, and nothing
# that is already there: Debian packages (podman with runc, debootstrap,
# iptables), a Terraform check, the project's virtual environment with the
# pinned Python packages (requirements.lock), rebuilt when the lock changes,
# and promtool in the environment's bin (for `make rules-test`).
#
# With --controller, only what the control host of servers that exist
# already needs (make provision ENV=existing): make, Terraform, the virtual
# environment; no lab packages and no promtool.
#
# Usage: scripts/bootstrap-host.sh [--controller] [VENV_DIR]
# Exit codes: 0 ready, 1 something could not be installed.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
controller_only=false
if [[ ${1:-} == --controller ]]; then
  controller_only=true
  shift
fi
venv=${1:-$repo_root/.venv}
apt_packages=(podman runc debootstrap iptables make)
$controller_only && apt_packages=(make)

missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "bootstrap: missing Debian packages: ${missing[*]}; install them as root" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}" >&2
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
fi

if ! command -v terraform >/dev/null; then
  echo "bootstrap: terraform is not on PATH; install Terraform >= 1.6 (>= 1.9 for ENV=existing; no provider download is needed)" >&2
  exit 1
fi

# promtool checks and tests the alert rules (monitoring/prometheus). It comes
# from Debian's prometheus package, unpacked rather than installed: installing
# it would enable a Prometheus server on this host. The .deb is kept in a
# cache, so a rebuilt environment gets promtool back without a download.
install_promtool() {
  local cache=${MAILHA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mailha}/apt
  local deb unpacked
  [[ -x $venv/bin/promtool ]] && return 0
  mkdir -p "$cache"
  deb=$(find "$cache" -maxdepth 1 -name 'prometheus_*.deb' -print -quit)
  if [[ -z $deb ]]; then
    echo "bootstrap: downloading Debian's prometheus package for promtool" >&2
    # As root apt downloads as _apt, which may not write the cache: download as root.
    if ! (cd "$cache" && apt-get download -q -o APT::Sandbox::User=root prometheus >&2); then
      if [[ $(id -u) -ne 0 ]]; then
        echo "bootstrap: cannot download the prometheus package (for promtool); run 'apt-get update' as root" >&2
        exit 1
      fi
      apt-get update -q >&2
      (cd "$cache" && apt-get download -q -o APT::Sandbox::User=root prometheus >&2)
    fi
    deb=$(find "$cache" -maxdepth 1 -name 'prometheus_*.deb' -print -quit)
  fi
  unpacked=$(mktemp -d)
  trap 'rm -rf "$unpacked"' RETURN
  dpkg-deb -x "$deb" "$unpacked"
  install -m 0755 "$unpacked/usr/bin/promtool" "$venv/bin/promtool.new"
  mv -f "$venv/bin/promtool.new" "$venv/bin/promtool"
}

stamp=$venv/.mailha-lock.sha256
want=$(cat "$repo_root/requirements.lock" "$repo_root/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [[ ! -x $venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "bootstrap: preparing the virtual environment $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q -r "$repo_root/requirements.lock" >&2
  "$venv/bin/pip" install -q --no-deps -e "$repo_root" >&2
  echo "$want" > "$stamp"
fi
$controller_only || install_promtool
