"""What `make provision` and `make destroy` do per ENV, read with `make -n`
(nothing runs) in a copy of the Makefile beside stand-in environments."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB_ONLY = ("build-image.sh", "lab-drift.sh", "-var image=", "lab-summary.sh")


@pytest.fixture
def checkout(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not on PATH")
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    for env in ("lab", "existing", "hcloud"):
        directory = tmp_path / "terraform" / "environments" / env
        directory.mkdir(parents=True)
        (directory / "main.tf").write_text("")
    return tmp_path


def make(checkout: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", *args], cwd=checkout, capture_output=True, text=True, check=False)


def test_existing_without_tfvars_says_what_to_do_in_one_line(checkout):
    for args in (("provision", "ENV=existing"), ("-n", "provision", "ENV=existing")):
        result = make(checkout, *args)
        assert result.returncode == 2
        errors = result.stderr.strip().splitlines()
        assert len(errors) == 1, result.stderr
        assert "terraform/environments/existing/terraform.tfvars is missing" in errors[0]
        assert "copy terraform.tfvars.example to terraform.tfvars and fill it in" in errors[0]
        assert result.stdout.strip() == ""  # nothing ran, not even the bootstrap


def test_an_unknown_environment_is_refused(checkout):
    result = make(checkout, "-n", "provision", "ENV=cloud")
    assert result.returncode == 2
    assert "ENV=cloud: terraform/environments/cloud is no Terraform environment" in result.stderr
    assert "the environments are existing hcloud lab" in result.stderr


def test_existing_provision_runs_terraform_inventory_and_site_only(checkout):
    (checkout / "terraform/environments/existing/terraform.tfvars").write_text("")
    result = make(checkout, "-n", "provision", "ENV=existing")
    assert result.returncode == 0, result.stderr
    steps = result.stdout.splitlines()
    assert steps[0].startswith("scripts/bootstrap-host.sh --controller ")
    assert steps[1:] == [
        "terraform -chdir=terraform/environments/existing init -input=false >/dev/null",
        "terraform -chdir=terraform/environments/existing apply -input=false -auto-approve"
        f" -var-file={checkout}/terraform/environments/existing/terraform.tfvars",
        "mailha inventory --terraform-dir terraform/environments/existing --inventory inventories/existing/hosts.yml",
        "ansible-playbook -i inventories/existing/hosts.yml playbooks/site.yml",
    ]
    assert not any(lab in result.stdout for lab in LAB_ONLY)


def test_settings_and_inventory_can_live_elsewhere(checkout):
    """make lab-as-existing provisions the lab's servers as ENV=existing from a
    tfvars file of its own into an inventory of its own."""
    (checkout / "elsewhere.tfvars.json").write_text("{}")
    result = make(
        checkout, "-n", "provision", "ENV=existing", f"TFVARS={checkout}/elsewhere.tfvars.json", "INVENTORY=inv/x.yml"
    )
    assert result.returncode == 0, result.stderr
    assert f"-var-file={checkout}/elsewhere.tfvars.json" in result.stdout
    assert "--inventory inv/x.yml" in result.stdout and "ansible-playbook -i inv/x.yml" in result.stdout
    missing = make(checkout, "-n", "provision", "ENV=existing", "TFVARS=/nonexistent.tfvars")
    assert missing.returncode == 2 and "/nonexistent.tfvars is missing" in missing.stderr


def test_lab_provision_keeps_its_lab_steps(checkout):
    result = make(checkout, "-n", "provision")
    assert result.returncode == 0, result.stderr
    for lab in LAB_ONLY:
        assert lab in result.stdout
    assert "ansible-playbook -i inventories/lab/hosts.yml playbooks/site.yml" in result.stdout


def test_existing_destroy_forgets_state_and_inventory_only(checkout):
    env = checkout / "terraform/environments/existing"
    for name in ("terraform.tfstate", "terraform.tfstate.backup", "terraform.tfvars"):
        (env / name).write_text("{}")
    inventory = checkout / "inventories/existing/hosts.yml"
    inventory.parent.mkdir(parents=True)
    inventory.write_text("all: {}\n")
    result = make(checkout, "destroy", "ENV=existing")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "destroy ENV=existing: removed the Terraform state and inventories/existing/hosts.yml; "
        "no server was touched (mailha never deletes servers it did not create)"
    ]
    assert not (env / "terraform.tfstate").exists() and not (env / "terraform.tfstate.backup").exists()
    assert not inventory.exists()
    assert (env / "terraform.tfvars").exists()  # the operator's settings stay


def test_help_names_what_each_environment_reads(checkout):
    result = make(checkout, "help")
    assert result.returncode == 0
    assert "ENV=lab" in result.stdout
    assert "ENV=existing" in result.stdout and "terraform/environments/existing/terraform.tfvars" in result.stdout
    assert "ENV=hcloud" in result.stdout
    assert "terraform/environments/hcloud/terraform.tfvars and HCLOUD_TOKEN" in result.stdout


def test_the_lab_as_existing_reads_the_labs_settings():
    """`make lab-as-existing` describes the lab's own servers: its inventory
    must see the lab's group_vars (test domains, sink, power hook), through a
    link, not a copy that drifts. A link stored as a plain file leaves
    site.yml refusing for want of mailha_sender_domain."""
    group_vars = REPO / "inventories" / "lab-existing" / "group_vars"
    assert group_vars.is_symlink()
    assert group_vars.resolve() == (REPO / "inventories" / "lab" / "group_vars").resolve()
    assert (group_vars / "all" / "mailha.yml").is_file()


FAKE_TOKEN = "not-a-token"  # noqa: S105 - no secret: make only checks that one is set


def hcloud_make(checkout: Path, *args: str, with_token: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HCLOUD_TOKEN"}
    if with_token:
        env["HCLOUD_TOKEN"] = FAKE_TOKEN
    return subprocess.run(["make", *args], cwd=checkout, capture_output=True, text=True, check=False, env=env)


def test_hcloud_without_a_token_says_so_in_one_line_before_anything_runs(checkout):
    (checkout / "terraform/environments/hcloud/terraform.tfvars").write_text("")
    result = hcloud_make(checkout, "-n", "provision", "ENV=hcloud", with_token=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "ENV=hcloud: HCLOUD_TOKEN is not set" in result.stderr
    assert result.stdout.strip() == ""


def test_hcloud_provision_makes_host_keys_then_goes_the_way_of_existing(checkout):
    (checkout / "terraform/environments/hcloud/terraform.tfvars").write_text("")
    result = hcloud_make(checkout, "-n", "provision", "ENV=hcloud")
    assert result.returncode == 0, result.stderr
    steps = result.stdout.splitlines()
    secrets = f"{checkout}/.lab/secrets/hcloud"
    variables = (
        f"-var-file={checkout}/terraform/environments/hcloud/terraform.tfvars"
        f" -var-file={secrets}/host-keys.tfvars.json -var ssh_known_hosts_file={secrets}/known_hosts"
    )
    assert steps[0].startswith("scripts/bootstrap-host.sh --controller ")
    assert steps[1:] == [
        f"scripts/hcloud-host-keys.sh {secrets} mx1 mx2",
        "terraform -chdir=terraform/environments/hcloud init -input=false >/dev/null",
        f"terraform -chdir=terraform/environments/hcloud apply -input=false -auto-approve {variables}",
        f"terraform -chdir=terraform/environments/hcloud output -raw known_hosts > {secrets}/known_hosts",
        "mailha inventory --terraform-dir terraform/environments/hcloud --inventory inventories/hcloud/hosts.yml",
        "ansible all -i inventories/hcloud/hosts.yml -m ansible.builtin.wait_for_connection -a timeout=600 >/dev/null",
        "ansible-playbook -i inventories/hcloud/hosts.yml playbooks/site.yml",
    ]
    assert not any(lab in result.stdout for lab in LAB_ONLY)
    assert FAKE_TOKEN not in result.stdout


def test_hcloud_destroy_asks_terraform_and_keeps_the_settings(checkout):
    (checkout / "terraform/environments/hcloud/terraform.tfvars").write_text("")
    result = hcloud_make(checkout, "-n", "destroy", "ENV=hcloud")
    assert result.returncode == 0, result.stderr
    destroy = [line for line in result.stdout.splitlines() if " destroy " in line]
    assert len(destroy) == 1 and "-auto-approve" not in destroy[0] and "-input=true" in destroy[0]
    assert "rm -f inventories/hcloud/hosts.yml" in result.stdout
    assert not any(line.startswith("rm ") and "terraform.tf" in line for line in result.stdout.splitlines())
