"""The control host's scheduled jobs (roles drill_timer and preflight_timer).

Molecule runs the roles in a container; these tests hold, without one, what
would otherwise only fail there: every default declared, every key of the
shared job given by both callers, the preflight's warn code as the unit's
success code, and the wrapper's exit codes and pruning, run with bash.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

from mailha import preflight
from mailha.preflight.result import EXIT_CODES, WARN

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"
WRAPPER = ROLES / "drill_timer" / "templates" / "usr" / "local" / "sbin" / "mailha-job-run.j2"
NO_REPORT = 73


def load(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def job_passed_by(role: str) -> dict:
    """The drill_timer_job a role's tasks/main.yml hands to the shared job."""
    (task,) = load(ROLES / role / "tasks" / "main.yml")
    return task["vars"]["drill_timer_job"]


@pytest.mark.parametrize("role", ["drill_timer", "preflight_timer"])
def test_every_default_is_declared_and_every_option_has_a_default(role):
    defaults = set(load(ROLES / role / "defaults" / "main.yml"))
    options = set(load(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"])
    assert defaults == options, f"undeclared: {sorted(defaults - options)}; no default: {sorted(options - defaults)}"


@pytest.mark.parametrize("role", ["drill_timer", "preflight_timer"])
def test_each_caller_gives_the_job_every_key_it_declares(role):
    spec = load(ROLES / "drill_timer" / "meta" / "argument_specs.yml")["argument_specs"]["job"]
    declared = set(spec["options"]["drill_timer_job"]["options"])
    passed = job_passed_by(role)
    assert set(passed) == declared
    assert passed["variable_prefix"] == role


def test_the_drill_timer_offers_every_scenario_the_cli_has():
    from mailha import faults

    options = load(ROLES / "drill_timer" / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert tuple(options["drill_timer_scenario"]["choices"]) == faults.SCENARIOS


def test_preflight_warnings_are_the_units_only_success_code():
    assert job_passed_by("preflight_timer")["success_exit_status"] == [EXIT_CODES[WARN]]
    assert job_passed_by("drill_timer")["success_exit_status"] == []


def test_the_preflight_timer_offers_the_checks_the_cli_has():
    options = load(ROLES / "preflight_timer" / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert tuple(options["preflight_timer_checks"]["choices"]) == preflight.CHECKS


# --- the wrapper ------------------------------------------------------------

FAKE = """\
import os, sys
mode = open(os.environ["FAKE_MODE"]).read().strip()
if mode == "crash":
    print("Traceback (most recent call last):", file=sys.stderr)
    sys.exit(1)
if mode == "cannot-run":
    print("Error: no name server", file=sys.stderr)
    sys.exit(2)
print('{"verdict": "%s"}' % mode)
sys.exit({"pass": 0, "warn": 1, "fail": 2}[mode])
"""


def render_wrapper(tmp_path: Path, **job) -> Path:
    """The wrapper as Ansible renders it: trim_blocks, shell quoting, a comment."""
    # A shell script, not HTML: no autoescaping, as in Ansible.
    env = jinja2.Environment(  # noqa: S701
        trim_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    env.filters["quote"] = lambda value: shlex.quote(str(value))
    env.filters["comment"] = lambda text: f"#\n# {text}\n#"
    script = tmp_path / "job-run"
    script.write_text(
        env.from_string(WRAPPER.read_text(encoding="utf-8")).render(
            ansible_managed="Ansible managed", drill_timer_job=job
        )
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def preflight_job(tmp_path):
    (tmp_path / "checkout").mkdir()
    (tmp_path / "fake.py").write_text(FAKE)
    job = {
        "unit_name": "mailha-preflight",
        "description": "mailha preflight",
        "workdir": str(tmp_path / "checkout"),
        "report_dir": str(tmp_path / "reports"),
        "report_file": "preflight.json",
        "keep_reports": 2,
        "command": f"{sys.executable} {tmp_path / 'fake.py'}",
        "success_exit_status": [1],
    }
    return render_wrapper(tmp_path, **job), tmp_path / "reports", tmp_path / "mode"


def run(script: Path, mode_file: Path, mode: str) -> subprocess.CompletedProcess:
    mode_file.write_text(mode)
    return subprocess.run(
        [str(script)], capture_output=True, text=True, env={**os.environ, "FAKE_MODE": str(mode_file)}, check=False
    )


def reports(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and len(p.name) == 15 and p.name[8] == "T")


@pytest.mark.parametrize(("mode", "code"), [("pass", 0), ("warn", 1), ("fail", 2)])
def test_the_report_is_the_commands_output_and_the_exit_code_its_own(preflight_job, mode, code):
    script, directory, mode_file = preflight_job
    result = run(script, mode_file, mode)
    assert result.returncode == code, result.stdout + result.stderr
    (report,) = reports(directory)
    assert json.loads((report / "preflight.json").read_text()) == {"verdict": mode}
    assert f"report: {report}" in result.stdout


def test_a_crash_that_exits_with_a_success_code_is_no_warning(preflight_job):
    script, directory, mode_file = preflight_job
    result = run(script, mode_file, "crash")
    assert result.returncode == NO_REPORT
    assert "the command printed no report" in result.stdout
    assert reports(directory) == [], "an empty report directory was left behind"


def test_a_failure_without_output_keeps_its_own_exit_code(preflight_job):
    script, directory, mode_file = preflight_job
    result = run(script, mode_file, "cannot-run")
    assert result.returncode == 2
    assert "Error: no name server" in result.stderr
    assert reports(directory) == []


def test_old_reports_are_pruned_and_other_names_kept(preflight_job):
    script, directory, mode_file = preflight_job
    old = ["20200101T000000", "20200102T000000", "20200103T000000"]
    for name in old:
        (directory / name).mkdir(parents=True)
    (directory / "keep-me").mkdir()
    (directory / "notes.txt").write_text("")
    result = run(script, mode_file, "warn")
    assert result.returncode == 1
    kept = [p.name for p in reports(directory)]
    assert len(kept) == 2 and kept[0] == old[-1] and kept[1] not in old
    assert (directory / "keep-me").is_dir() and (directory / "notes.txt").exists()


def test_without_a_report_file_the_command_writes_its_own_directory(tmp_path):
    """The drill's way: mailha drill --report <report_dir>/<timestamp>."""
    (tmp_path / "checkout").mkdir()
    reports_dir = tmp_path / "reports"
    script = render_wrapper(
        tmp_path,
        unit_name="mailha-drill",
        description="mailha rehearsal drill (mta-crash)",
        workdir=str(tmp_path / "checkout"),
        report_dir=str(reports_dir),
        report_file="",
        keep_reports=12,
        command=f"mkdir {reports_dir}/%Y%m%dT%H%M%S && exit 3",
        success_exit_status=[],
    )
    result = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 3  # a breached target fails the unit
    (report,) = reports(reports_dir)
    assert f"report: {report}" in result.stdout
