"""The CLI finds the project's playbooks wherever it runs and wherever the inventory is."""

import subprocess
import sys
from pathlib import Path

import pytest

from mailha import project
from mailha.errors import BadInput

# The checkout the imported package lives in (a worktree's tests may import
# the package of the checkout the virtual environment was installed from).
CHECKOUT = Path(project.__file__).resolve().parents[1]


def test_the_playbooks_come_from_the_checkout_the_package_is_in(monkeypatch):
    monkeypatch.delenv(project.ENV_VAR, raising=False)
    assert project.project_dir() == CHECKOUT
    assert project.playbook("failover.yml") == CHECKOUT / "playbooks" / "failover.yml"
    assert project.playbook("failover.yml").is_file()


def test_mailha_project_dir_names_another_copy(monkeypatch, tmp_path):
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "site.yml").write_text("---\n")
    monkeypatch.setenv(project.ENV_VAR, str(tmp_path))
    assert project.project_dir() == tmp_path.resolve()


def test_a_mailha_project_dir_without_playbooks_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv(project.ENV_VAR, str(tmp_path))
    with pytest.raises(BadInput, match=r"has no playbooks/site.yml; point it at a mailha checkout or unset it"):
        project.project_dir()


def test_the_switch_finds_its_playbook_from_any_directory_with_an_inventory_anywhere(tmp_path):
    """An inventory kept outside the checkout, the CLI run from elsewhere:
    the dry run's plan comes from the project's playbooks, not from a
    directory three levels above the inventory."""
    from mailha import inventory
    from tests.unit.test_inventory import CONTRACT

    path = tmp_path / "ops" / "hosts.yml"
    inventory.write(inventory.build(CONTRACT), path)
    code = (
        "import sys, pathlib; from mailha import pair, project; p = pair.load(pathlib.Path(sys.argv[1])); "
        "print(project.playbook('failover.yml'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == CHECKOUT / "playbooks" / "failover.yml"
