"""The CLI finds the project's playbooks wherever it runs and wherever the inventory is."""

import os
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
    # The package under test, not whichever checkout the environment was installed from.
    env = dict(os.environ, PYTHONPATH=str(CHECKOUT))
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == CHECKOUT / "playbooks" / "failover.yml"


def test_settings_are_the_projects_defaults_then_the_environments(monkeypatch, tmp_path):
    from mailha import pair

    project_dir = tmp_path / "project"
    (project_dir / "playbooks" / "group_vars" / "all").mkdir(parents=True)
    (project_dir / "playbooks" / "site.yml").write_text("---\n")
    (project_dir / "playbooks" / "group_vars" / "all" / "mailha.yml").write_text(
        "mailha_agent_port: 9000\nmailha_failback_hold_down_seconds: 120\n"
    )
    environment = tmp_path / "ops" / "group_vars" / "all"
    environment.mkdir(parents=True)
    (environment / "mailha.yml").write_text("mailha_failback_hold_down_seconds: 30\n")
    monkeypatch.setenv(project.ENV_VAR, str(project_dir))
    settings = pair.load_settings(tmp_path / "ops" / "hosts.yml")
    assert settings["mailha_agent_port"] == 9000, "the project's default"
    assert settings["mailha_failback_hold_down_seconds"] == 30, "the environment's override"
    assert settings["mailha_probe_timeout"] == pair.DEFAULT_SETTINGS["mailha_probe_timeout"]

    (project_dir / "playbooks" / "group_vars" / "all" / "mailha.yml").write_text("mailha_agent_port: ninety\n")
    with pytest.raises(BadInput, match=r"playbooks/group_vars/all/mailha.yml: mailha_agent_port must be of type int"):
        pair.load_settings(tmp_path / "ops" / "hosts.yml")


def test_the_projects_defaults_carry_nothing_of_the_lab(monkeypatch):
    """An environment that sets nothing gets safe defaults, never the lab's
    domains, receiver or short timers (those live beside the lab's inventory)."""
    import yaml

    monkeypatch.delenv(project.ENV_VAR, raising=False)
    group_vars = CHECKOUT / "playbooks" / "group_vars"
    text = "\n".join(path.read_text() for path in sorted(group_vars.rglob("*.yml")))
    for lab_value in ("mailha.test", "inbox.test", "10.213.", "lab:"):
        assert lab_value not in text, lab_value
    defaults = yaml.safe_load((group_vars / "all" / "mailha.yml").read_text())
    assert defaults["mailha_failback_hold_down_seconds"] == 300
    assert defaults["mailha_events_webhook_urls"] == []
    assert "mailha_sender_domain" not in defaults
    main = yaml.safe_load((group_vars / "all" / "main.yml").read_text())
    assert main["mailha_submission_networks"] == [], "nobody relays until an environment says who"


def test_settings_refuse_a_mailha_project_dir_without_playbooks(monkeypatch, tmp_path):
    """A misconfigured MAILHA_PROJECT_DIR is one line, not a silent fall back to built-in defaults."""
    from mailha import pair

    monkeypatch.setenv(project.ENV_VAR, str(tmp_path))
    with pytest.raises(BadInput, match=r"has no playbooks/site.yml"):
        pair.load_settings(tmp_path / "ops" / "hosts.yml")
