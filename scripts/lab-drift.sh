#!/usr/bin/env bash
# Terraform's built-in provider cannot see a container or network removed
# behind its back. Compare the lab's state with podman and print the
# -replace= arguments that make `terraform apply` recreate what is missing;
# start containers that exist but are stopped. A container podman still calls
# running but that cannot run a command (its processes died with the host's
# sandbox, for example) is removed and recreated.
#
# Usage: scripts/lab-drift.sh TF_DIR      (prints nothing when in step)
# Exit codes: 0 always when the state could be read; 1 otherwise.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo_root/lab/containers.conf}
tf_dir=$1
python=${PYTHON:-$repo_root/.venv/bin/python}

# No state yet: nothing can have drifted.
terraform -chdir="$tf_dir" state list >/dev/null 2>&1 || exit 0
containers=$(terraform -chdir="$tf_dir" output -json containers 2>/dev/null) || exit 0

network_missing=0
podman network exists "$(terraform -chdir="$tf_dir" output -raw network_name 2>/dev/null || echo mailha-lab)" \
  || network_missing=1

MAILHA_CONTAINERS=$containers "$python" - "$network_missing" <<'PY'
import json, os, subprocess, sys
containers = json.loads(os.environ["MAILHA_CONTAINERS"])
network_missing = sys.argv[1] == "1"
if network_missing:
    print('-replace=module.network.terraform_data.network')
for key, name in sorted(containers.items()):
    state = subprocess.run(["podman", "inspect", "-f", "{{.State.Status}}", name],
                           capture_output=True, text=True).stdout.strip()
    if state in ("running", "stopping"):
        alive = subprocess.run(["podman", "exec", name, "true"], capture_output=True).returncode == 0
        if not alive:
            subprocess.run(["podman", "rm", "-f", "-v", name], capture_output=True)
            print(f"lab: removed dead host {name} (podman said {state})", file=sys.stderr)
            state = ""
    if network_missing or not state:
        print(f'-replace=module.host["{key}"].terraform_data.host')
    elif state != "running":
        subprocess.run(["podman", "start", name], check=True, capture_output=True)
        print(f"lab: started stopped host {name}", file=sys.stderr)
PY
