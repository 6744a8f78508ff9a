"""Textfile-collector metrics of the control host: the exposition text, the
carry-over between drill runs, and `--metrics-file` on drill and preflight."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailha import control_metrics, inventory, textfile
from mailha import drill as drill_mod
from mailha import preflight as preflight_mod
from mailha.cli import main
from mailha.errors import MailhaError
from mailha.preflight.report import Report
from mailha.preflight.result import FAIL, PASS, WARN, Result
from tests.unit.test_drill_report import crash_drill, report_for, sent, steady
from tests.unit.test_inventory import CONTRACT

NOW = 1_764_100_000.25
EARLIER = 1_763_500_000.0


def series(samples, name):
    """{labels: value} of one metric."""
    return {s.labels: s.value for s in samples if s.name == name}


def drill_file(path: Path) -> dict[str, dict]:
    """{metric: {scenario: value}} of a drill metrics file."""
    samples = textfile.read(path)
    names = control_metrics.NAMES
    return {name: {s.label("scenario"): s.value for s in samples if s.name == name} for name in names}


def passed_report():
    return report_for(crash_drill())


def breached_report():
    """Two acknowledged messages never arrived: max_lost 0 is breached."""
    attempts = crash_drill()
    delivered = {a.message_id: 1 for a in attempts if a.accepted}
    for lost in [a.message_id for a in attempts if a.accepted][:2]:
        del delivered[lost]
    return report_for(attempts, delivered=delivered)


# --- the exposition text ----------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["plain", 'a "quoted" word', "back\\slash", "two\nlines", "ends with \\", "braces {} and, commas", "é ☃", ""],
)
def test_label_values_are_escaped_and_read_back_unchanged(value):
    family = textfile.Family("mailha_test_value", "A test.")
    family.add(1, subject=value, check="spf")
    text = textfile.render([family])
    assert text.count("\n") == 3, "a label value broke the line"
    assert textfile.parse(text) == [textfile.sample("mailha_test_value", 1, subject=value, check="spf")]


def test_render_groups_each_family_under_one_help_and_type():
    runs = textfile.Family("mailha_b", "Runs.\nSecond line \\ of help.")
    runs.add(2, scenario="z")
    runs.add(1.5, scenario="a")
    unused = textfile.Family("mailha_c", "Never set.")
    single = textfile.Family("mailha_a", "One.")
    single.add(1_764_000_000)
    assert textfile.render([runs, unused, single]) == (
        "# HELP mailha_a One.\n"
        "# TYPE mailha_a gauge\n"
        "mailha_a 1764000000\n"
        "# HELP mailha_b Runs.\\nSecond line \\\\ of help.\n"
        "# TYPE mailha_b gauge\n"
        'mailha_b{scenario="a"} 1.5\n'
        'mailha_b{scenario="z"} 2\n'
    )


@pytest.mark.parametrize(
    ("value", "text"), [(0, "0"), (3, "3"), (0.25, "0.25"), (float("nan"), "NaN"), (float("-inf"), "-Inf")]
)
def test_values(value, text):
    assert textfile.format_value(float(value)) == text


def test_invalid_names_are_a_programming_error():
    with pytest.raises(ValueError, match="metric name"):
        textfile.Family("mailha-drill", "x")
    with pytest.raises(ValueError, match="label name"):
        textfile.sample("mailha_x", 1, **{"__name__": "y"})


def test_parse_skips_comments_and_damaged_lines_only():
    text = (
        "# HELP mailha_x x\n"
        'mailha_x{scenario="host-down"} 3 1764000000000\n'
        'mailha_x{scenario="cut\n'
        "mailha_x{scenario=unquoted} 1\n"
        "mailha_y not-a-number\n"
        "\n"
        'mailha_y{a="1",b="2",} 7\n'
        "mailha_z\n"
    )
    assert textfile.parse(text) == [
        textfile.sample("mailha_x", 3, scenario="host-down"),
        textfile.sample("mailha_y", 7, a="1", b="2"),
    ]


def test_write_replaces_the_file_by_rename_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "mailha-drill.prom"
    path.write_text("old\n")
    inode = path.stat().st_ino
    family = textfile.Family("mailha_x", "x")
    family.add(1)
    textfile.write(path, [family])
    assert path.read_text() == "# HELP mailha_x x\n# TYPE mailha_x gauge\nmailha_x 1\n"
    assert path.stat().st_ino != inode, "written in place: node_exporter could read half a file"
    assert path.stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["mailha-drill.prom"]


def test_write_into_a_missing_directory_is_one_error_and_creates_nothing(tmp_path):
    with pytest.raises(MailhaError, match=r"directory .*/gone does not exist"):
        textfile.write(tmp_path / "gone" / "mailha-drill.prom", [])
    assert not (tmp_path / "gone").exists()


def test_write_refuses_a_name_node_exporter_would_skip(tmp_path):
    with pytest.raises(MailhaError, match=r"reads only files named \*\.prom"):
        textfile.write(tmp_path / "mailha-preflight.txt", [])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: d / "missing" / "x.prom", "does not exist"),
        (lambda d: (d / "x.prom").mkdir() or d / "x.prom", "is a directory"),
        (lambda d: (d / "file").write_text("") or d / "file" / "x.prom", "does not exist"),
        (lambda d: d / "mailha-drill.txt", r"reads only files named \*\.prom"),
    ],
)
def test_check_target_refuses_paths_node_exporter_would_never_read(tmp_path, make, words):
    with pytest.raises(MailhaError, match=words) as raised:
        textfile.check_target(make(tmp_path), "--metrics-file")
    assert raised.value.exit_code == 2 and "\n" not in raised.value.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory")
def test_check_target_refuses_a_directory_it_cannot_write(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(MailhaError, match="not writable"):
        textfile.check_target(locked / "x.prom", "--metrics-file")


# --- drill and preflight families -------------------------------------------


def test_a_passed_drill_sets_its_scenario_and_keeps_the_others():
    before = textfile.parse(
        'mailha_drill_last_run_timestamp_seconds{scenario="host-down"} 1763000000\n'
        'mailha_drill_last_success{scenario="host-down"} 0\n'
        'mailha_drill_lost_messages{scenario="host-down"} 4\n'
        'mailha_drill_last_success{scenario="mta-crash"} 0\n'
        'mailha_drill_lost_messages{scenario="mta-crash"} 9\n'
        "mailha_renamed_long_ago 1\n"
    )
    samples = [
        s for f in control_metrics.drill_families("mta-crash", passed_report(), before, now=NOW) for s in f.samples
    ]
    assert series(samples, "mailha_drill_last_success") == {
        (("scenario", "host-down"),): 0,
        (("scenario", "mta-crash"),): 1,
    }
    assert series(samples, "mailha_drill_lost_messages") == {
        (("scenario", "host-down"),): 4,
        (("scenario", "mta-crash"),): 0,
    }
    assert series(samples, "mailha_drill_last_success_timestamp_seconds") == {(("scenario", "mta-crash"),): NOW}
    assert series(samples, "mailha_drill_last_outage_seconds") == {(("scenario", "mta-crash"),): 0.5}
    assert series(samples, "mailha_drill_last_run_timestamp_seconds")[(("scenario", "host-down"),)] == 1763000000
    assert not series(samples, "mailha_renamed_long_ago")


def test_a_breached_drill_carries_the_last_success_over(tmp_path):
    path = tmp_path / "mailha-drill.prom"
    textfile.write(path, control_metrics.drill_families("mta-crash", passed_report(), [], now=EARLIER))
    textfile.write(path, control_metrics.drill_families("mta-crash", breached_report(), textfile.read(path), now=NOW))
    written = drill_file(path)
    assert written["mailha_drill_last_success"] == {"mta-crash": 0}
    assert written["mailha_drill_last_success_timestamp_seconds"] == {"mta-crash": EARLIER}
    assert written["mailha_drill_last_run_timestamp_seconds"] == {"mta-crash": NOW}
    assert written["mailha_drill_lost_messages"] == {"mta-crash": 2}


def test_a_drill_that_stopped_counts_as_failed_and_drops_its_old_figures():
    before = control_metrics.drill_families("host-down", breached_report(), [], now=EARLIER)
    samples = [s for f in before for s in f.samples]
    after = [s for f in control_metrics.drill_families("host-down", None, samples, now=NOW) for s in f.samples]
    assert series(after, "mailha_drill_last_success") == {(("scenario", "host-down"),): 0}
    assert series(after, "mailha_drill_last_run_timestamp_seconds") == {(("scenario", "host-down"),): NOW}
    for figure in (
        "mailha_drill_last_outage_seconds",
        "mailha_drill_lost_messages",
        "mailha_drill_duplicated_messages",
    ):
        assert not series(after, figure), f"{figure} of an earlier run kept"
    assert not series(after, "mailha_drill_last_success_timestamp_seconds"), "no drill has ever passed"


def test_an_outage_that_never_ended_is_exported_as_its_lower_bound():
    attempts = steady(10, start=-1.0) + [sent(10 + i, i * 0.5, code=None, node=None) for i in range(6)]
    report = report_for(attempts)
    families = control_metrics.drill_families("mta-crash", report, [], now=NOW)
    outage = series([s for f in families for s in f.samples], "mailha_drill_last_outage_seconds")
    assert report["verdict"]["passed"] is False
    assert (
        outage == {(("scenario", "mta-crash"),): report["figures"]["outage_seconds"]}
        and outage[(("scenario", "mta-crash"),)] > 2
    )


def test_preflight_exports_the_worst_level_of_each_check_and_subject():
    results = [
        Result("spf", "floating IP", PASS, "MAIL FROM passes"),
        Result("spf", "floating IP", WARN, "HELO softfails"),
        Result("blocklist", "bl.mailha.test", FAIL, "listed"),
        Result("blocklist", "bl.mailha.test", PASS, "not listed"),
        Result("parity", "relays", PASS, "same"),
    ]
    samples = [s for f in control_metrics.preflight_families(results, 2, now=NOW) for s in f.samples]
    assert series(samples, "mailha_preflight_check_status") == {
        (("check", "spf"), ("subject", "floating IP")): 1,
        (("check", "blocklist"), ("subject", "bl.mailha.test")): 2,
        (("check", "parity"), ("subject", "relays")): 0,
    }
    assert series(samples, "mailha_preflight_exit_code") == {(): 2}
    assert series(samples, "mailha_preflight_last_run_timestamp_seconds") == {(): NOW}


def _promtool() -> str | None:
    beside = Path(sys.executable).parent / "promtool"
    return str(beside) if beside.is_file() else shutil.which("promtool")


@pytest.mark.skipif(_promtool() is None, reason="promtool is not installed (make deps puts it in the venv)")
@pytest.mark.parametrize(
    "families",
    [
        lambda: control_metrics.drill_families(
            "mta-crash",
            breached_report(),
            textfile.parse(
                'mailha_drill_last_success_timestamp_seconds{scenario="mta-crash"} 1763500000\n'
                'mailha_drill_last_success{scenario="host-down"} 1\n'
            ),
        ),
        lambda: control_metrics.preflight_families(
            [Result("tls", 'mx1 "port 25"\n\\', FAIL, "expired"), Result("dkim", "news.mailha.test", WARN, "t=y")], 2
        ),
    ],
    ids=["drill", "preflight"],
)
def test_promtool_accepts_the_exposition_text(families):
    text = textfile.render(families())
    checked = subprocess.run([_promtool(), "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr + text


# --- the command line -------------------------------------------------------


@pytest.fixture
def inventory_path(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILHA_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "repo" / "inventories" / "lab" / "hosts.yml"
    inventory.write(inventory.build(CONTRACT), path)
    return path


@pytest.fixture
def drill_returns(monkeypatch):
    """run_drill stands in for a drill on the lab; `result` is what it returns or raises."""
    calls = []

    class Outcome:
        result: object = (None, 0)

    def run_drill(pair, settings, echo):
        calls.append(settings.scenario)
        if isinstance(Outcome.result, BaseException):
            raise Outcome.result
        if callable(Outcome.result):
            return Outcome.result()
        return Outcome.result

    monkeypatch.setattr(drill_mod, "run_drill", run_drill)
    Outcome.calls = calls
    return Outcome


def drill(inventory, *extra):
    return CliRunner().invoke(main, ["drill", "-i", str(inventory), "--scenario", "mta-crash", "--yes", *extra])


def test_drill_writes_its_metrics_file(tmp_path, inventory_path, drill_returns):
    path = tmp_path / "textfile" / "mailha-drill.prom"
    path.parent.mkdir()
    path.write_text('mailha_drill_last_success{scenario="host-down"} 1\n')
    drill_returns.result = (passed_report(), 0)
    result = drill(inventory_path, "--metrics-file", str(path))
    assert result.exit_code == 0, result.output
    assert "verdict: PASSED" in result.output
    written = drill_file(path)
    assert written["mailha_drill_last_success"] == {"mta-crash": 1, "host-down": 1}
    drill_returns.result = (breached_report(), 3)
    result = drill(inventory_path, "--metrics-file", str(path))
    assert result.exit_code == 3, result.output
    assert drill_file(path)["mailha_drill_last_success"] == {"mta-crash": 0, "host-down": 1}


def test_a_drill_that_stops_is_exported_as_failed(tmp_path, inventory_path, drill_returns):
    path = tmp_path / "mailha-drill.prom"
    drill_returns.result = MailhaError("steady state before the drill is not met: mx2 is down")
    result = drill(inventory_path, "--metrics-file", str(path))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: steady state before the drill is not met: mx2 is down"]
    assert drill_file(path)["mailha_drill_last_success"] == {"mta-crash": 0}


def test_drill_refuses_a_metrics_file_it_could_not_write_before_the_fault(tmp_path, inventory_path, drill_returns):
    result = drill(inventory_path, "--metrics-file", str(tmp_path / "no-such-dir" / "mailha-drill.prom"))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no-such-dir does not exist" in lines[0] and "--metrics-file" in lines[0], lines
    assert drill_returns.calls == [], "the drill ran although its metrics could not be written"


def test_drill_whose_metrics_directory_vanished_still_prints_its_result(tmp_path, inventory_path, drill_returns):
    directory = tmp_path / "textfile"
    directory.mkdir()

    def drill_then_directory_gone():
        directory.rmdir()
        return passed_report(), 0

    drill_returns.result = drill_then_directory_gone
    result = drill(inventory_path, "--metrics-file", str(directory / "mailha-drill.prom"))
    assert result.exit_code == 1
    assert "verdict: PASSED" in result.stdout
    assert result.stderr.strip().splitlines() == [
        f"Error: cannot write the metrics file {directory}/mailha-drill.prom: the directory {directory} does not exist"
    ]


@pytest.fixture
def preflight_returns(monkeypatch):
    class Outcome:
        result: object = None

    def run(pair, checks):
        if isinstance(Outcome.result, BaseException):
            raise Outcome.result
        return Outcome.result

    monkeypatch.setattr(preflight_mod, "run", run)
    return Outcome


def a_preflight(*results):
    return Report("lab", "10.213.0.100", "mta.mailha.test", "news.mailha.test", ["spf", "tls"], list(results))


def test_preflight_writes_its_metrics_file(tmp_path, inventory_path, preflight_returns):
    path = tmp_path / "mailha-preflight.prom"
    preflight_returns.result = a_preflight(Result("spf", "floating IP", PASS, "ok"), Result("tls", "mx2", WARN, "soon"))
    result = CliRunner().invoke(main, ["preflight", "-i", str(inventory_path), "--metrics-file", str(path)])
    assert result.exit_code == 1, result.output
    samples = textfile.read(path)
    assert series(samples, "mailha_preflight_check_status") == {
        (("check", "spf"), ("subject", "floating IP")): 0,
        (("check", "tls"), ("subject", "mx2")): 1,
    }
    assert series(samples, "mailha_preflight_exit_code") == {(): 1}


def test_a_preflight_that_cannot_run_exports_its_exit_code(tmp_path, inventory_path, preflight_returns):
    path = tmp_path / "mailha-preflight.prom"
    path.write_text('mailha_preflight_check_status{check="spf",subject="floating IP"} 0\n')
    preflight_returns.result = MailhaError("the name server 10.213.0.53 does not answer", exit_code=2)
    result = CliRunner().invoke(main, ["preflight", "-i", str(inventory_path), "--metrics-file", str(path)])
    assert result.exit_code == 2
    samples = textfile.read(path)
    assert series(samples, "mailha_preflight_exit_code") == {(): 2}
    assert not series(samples, "mailha_preflight_check_status"), "an earlier run's checks would read as current"


def test_preflight_with_a_bad_metrics_path_prints_its_results_and_one_error(
    tmp_path, inventory_path, preflight_returns
):
    preflight_returns.result = a_preflight(Result("spf", "floating IP", PASS, "ok"))
    path = tmp_path / "missing" / "mailha-preflight.prom"
    result = CliRunner().invoke(
        main, ["preflight", "-i", str(inventory_path), "-o", "json", "--metrics-file", str(path)]
    )
    assert result.exit_code == 2
    assert '"verdict": "pass"' in result.stdout
    assert result.stderr.strip().splitlines() == [
        f"Error: cannot write the metrics file {path}: the directory {path.parent} does not exist"
    ]
