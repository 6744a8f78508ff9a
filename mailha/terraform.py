"""A thin wrapper over the terraform binary (`terraform -chdir=DIR ... -json`)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

from mailha.errors import BadInput, MailhaError


def _terraform() -> str:
    binary = shutil.which("terraform")
    if binary is None:
        raise MailhaError("terraform is not on PATH; install Terraform >= 1.6 and retry")
    return binary


def output(directory: Path, name: str) -> object:
    """Return one output of the environment in `directory`, decoded from JSON."""
    if not (directory / ".terraform").is_dir() and not (directory / "terraform.tfstate").is_file():
        raise BadInput(f"{directory} has no Terraform state; run 'make provision' (or terraform apply there) first")
    env = dict(os.environ, TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
    try:
        result = subprocess.run(
            [_terraform(), f"-chdir={directory}", "output", "-json", name],
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            check=False,
        )
    except OSError as exc:
        raise MailhaError(f"cannot run terraform: {exc.strerror}") from None
    if result.returncode != 0:
        detail = " ".join(result.stderr.split())[:300]
        raise BadInput(f"terraform output {name} failed in {directory}: {detail}")
    try:
        return json.loads(result.stdout)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MailhaError(f"terraform output {name} in {directory} is not JSON: {exc}") from None
