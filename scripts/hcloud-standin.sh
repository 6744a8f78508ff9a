#!/usr/bin/env bash
# Usage: scripts/hcloud-standin.sh PYTHON DIR
#
# Writes DIR/cli.tfrc, a Terraform CLI configuration whose dev_overrides
# serve hetznercloud/hcloud from the schema-only stand-in
# (terraform/providers/hcloud), and DIR/terraform-provider-hcloud, which runs
# the stand-in with PYTHON (it needs the `tf` package). For offline
# validate and test only (make tf-test): `terraform init` would still ask
# the registry, so `terraform get` installs the modules instead. Paths are
# absolute, as dev_overrides requires. Exit status: 0 written, 2 usage.
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 PYTHON DIR" >&2; exit 2; }
# Not realpath: a virtual environment's python is a symlink that must stay one.
python=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
dir=$2
repo_root=$(cd "$(dirname "$0")/.." && pwd)
standin=$repo_root/terraform/providers/hcloud/terraform-provider-hcloud

[[ -x $python ]] || { echo "hcloud-standin: $python is no Python interpreter" >&2; exit 2; }
mkdir -p "$dir"
dir=$(realpath "$dir")

printf '#!/bin/sh\nexec %q %q "$@"\n' "$python" "$standin" >"$dir/terraform-provider-hcloud.new"
chmod 0755 "$dir/terraform-provider-hcloud.new"
mv -f "$dir/terraform-provider-hcloud.new" "$dir/terraform-provider-hcloud"

cat >"$dir/cli.tfrc.new" <<CONFIG
# Written by scripts/hcloud-standin.sh: hetznercloud/hcloud is the
# schema-only stand-in, for offline validate and test. Never apply with it.
disable_checkpoint = true

provider_installation {
  dev_overrides {
    "hetznercloud/hcloud" = "$dir"
  }
  direct {}
}
CONFIG
mv -f "$dir/cli.tfrc.new" "$dir/cli.tfrc"
