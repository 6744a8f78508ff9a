"""The existing-servers environment end to end, offline: terraform apply of
terraform.tfvars.example (the built-in provider only, no server touched),
then `mailha inventory` on its state, as `make provision ENV=existing` runs them."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mailha.cli import main

REPO = Path(__file__).resolve().parents[2]
ENVIRONMENT = REPO / "terraform" / "environments" / "existing"
CONTRACT_MODULE = REPO / "terraform" / "modules" / "mailha_contract"


def terraform(directory: Path, *args: str) -> None:
    """Run terraform offline in `directory`; fail the test with its own message."""
    env = dict(
        os.environ,
        TF_CLI_CONFIG_FILE=str(REPO / "terraform" / "cli.tfrc"),
        TF_IN_AUTOMATION="1",
        CHECKPOINT_DISABLE="1",
    )
    result = subprocess.run(
        ["terraform", f"-chdir={directory}", *args, "-input=false", "-no-color"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, f"terraform {args[0]} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture
def applied(tmp_path):
    """A copy of the environment (and the module it calls, at the same relative
    path) applied with the example settings; its state lives in tmp_path only."""
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not on PATH; install Terraform >= 1.9 to run this test")
    copy = tmp_path / "terraform" / "environments" / "existing"
    copy.mkdir(parents=True)
    for source in [*ENVIRONMENT.glob("*.tf"), ENVIRONMENT / "terraform.tfvars.example"]:
        shutil.copy(source, copy)
    # The operator's step: the example, copied to the name Terraform reads.
    shutil.copy(ENVIRONMENT / "terraform.tfvars.example", copy / "terraform.tfvars")
    shutil.copytree(CONTRACT_MODULE, tmp_path / "terraform" / "modules" / "mailha_contract")
    terraform(copy, "init")
    terraform(copy, "apply", "-auto-approve")
    assert (copy / "terraform.tfstate").is_file()
    return copy


def test_example_settings_become_an_ssh_inventory(applied, tmp_path):
    output = tmp_path / "hosts.yml"
    result = CliRunner().invoke(main, ["inventory", "--terraform-dir", str(applied), "--inventory", str(output)])
    assert result.exit_code == 0, result.output
    assert "written" in result.output

    inventory = yaml.safe_load(output.read_text())["all"]
    assert inventory["vars"]["mailha_environment"] == "existing"
    assert inventory["vars"]["ansible_connection"] == "ansible.builtin.ssh"
    assert inventory["vars"]["mailha_floating_ip"] == "192.0.2.100"
    assert inventory["vars"]["mailha_controller_address"] == "198.51.100.5"
    assert inventory["vars"]["mailha_sending_host"] == "mta.example.com"

    groups = inventory["children"]
    assert set(groups["mail"]["hosts"]) == {"mx1", "mx2"}
    assert set(groups["loadbalancer"]["hosts"]) == {"lb"}
    assert set(groups["dns"]["hosts"]) == {"ns"}
    assert set(groups["recipient"]["hosts"]) == {"sink"}

    mx1 = groups["mail"]["hosts"]["mx1"]
    assert mx1["ansible_host"] == "192.0.2.11"
    assert mx1["ansible_user"] == "root" and mx1["ansible_port"] == 22
    assert "ansible_become" not in mx1  # root needs no sudo
    assert mx1["mailha_vrrp_state"] == "MASTER"
    assert groups["mail"]["hosts"]["mx2"]["mailha_vrrp_state"] == "BACKUP"
    lb = groups["loadbalancer"]["hosts"]["lb"]
    assert lb["ansible_host"] == "192.0.2.20" and lb["ansible_user"] == "root" and lb["ansible_port"] == 22
