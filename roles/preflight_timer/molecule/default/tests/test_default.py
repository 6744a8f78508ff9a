"""preflight_timer: the timer is scheduled daily, and one run of the service
leaves a timestamped JSON report and the metrics file; warnings leave the
unit successful, a failure (or a run that printed no report) fails it and
starts the OnFailure unit."""

import datetime
import json
import re
import time

import pytest

# One podman exec per command: faster than through Ansible.
testinfra_hosts = ["podman://molecule-preflight-timer"]

UNIT = "mailha-preflight"
REPORTS = "/var/lib/mailha/preflight"
METRICS = "/var/lib/prometheus/node-exporter/mailha-preflight.prom"
MODE = "/run/fake-preflight-mode"
ALERTS = "/run/preflight-alert.log"
KEEP = 3
STAMP = re.compile(r"^\d{8}T\d{6}$")
OLD = [f"2020010{day}T000000" for day in range(1, 6)]


def stamped_dirs(host):
    names = host.check_output(f"ls -1 {REPORTS}").split()
    return sorted(name for name in names if STAMP.match(name))


def alerts(host):
    return host.run(f"cat {ALERTS} 2>/dev/null").stdout.splitlines()


def run_service(host, mode):
    """Start the oneshot service with the stand-in in `mode` and wait for it;
    a new second for a new stamp."""
    host.run_expect([0], f"echo {mode} > {MODE}")
    host.run("sleep 1.1")
    return host.run(f"systemctl start {UNIT}.service")


def service_result(host):
    shown = host.check_output(f"systemctl show {UNIT}.service -p Result -p ExecMainStatus")
    return dict(line.split("=", 1) for line in shown.splitlines())


def metrics(host):
    """The metrics file as {series: value}."""
    lines = host.file(METRICS).content_string.splitlines()
    return dict(line.rsplit(" ", 1) for line in lines if line and not line.startswith("#"))


def wait_for_alerts(host, count):
    """Up to 5 s for the OnFailure= unit to have logged `count` lines; the caller asserts them."""
    host.run(f"for i in $(seq 50); do [ $(cat {ALERTS} 2>/dev/null | wc -l) -ge {count} ] && break; sleep 0.1; done")


def journal(host):
    return host.run(f"journalctl -u {UNIT} --no-pager").stdout


@pytest.fixture(scope="module")
def old_reports(host):
    for name in OLD:
        host.run_expect([0], f"mkdir -p {REPORTS}/{name} && echo old > {REPORTS}/{name}/preflight.json")
    # Not timestamps: pruning must leave them alone.
    host.run_expect([0], f"mkdir -p {REPORTS}/keep-me && touch {REPORTS}/notes.txt")
    return OLD


@pytest.fixture
def reset(host):
    yield
    host.run(f"rm -f {MODE}; systemctl reset-failed {UNIT}.service")


def test_units_and_wrapper_are_installed(host):
    wrapper = host.file(f"/usr/local/sbin/{UNIT}-run")
    assert wrapper.mode == 0o755 and wrapper.user == "root"
    assert "Ansible managed" in wrapper.content_string
    for suffix in ("service", "timer"):
        unit = host.file(f"/etc/systemd/system/{UNIT}.{suffix}")
        assert unit.mode == 0o644 and "Ansible managed" in unit.content_string
    assert host.file(REPORTS).is_directory and host.file(REPORTS).mode == 0o750
    metrics_dir = host.file(METRICS.rsplit("/", 1)[0])
    assert metrics_dir.is_directory and metrics_dir.mode == 0o755


def test_systemd_analyze_verify_passes(host):
    result = host.run(f"systemd-analyze verify /etc/systemd/system/{UNIT}.service /etc/systemd/system/{UNIT}.timer")
    assert result.rc == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_timer_is_enabled_active_and_daily(host):
    timer = host.service(f"{UNIT}.timer")
    assert timer.is_enabled and timer.is_running
    listing = host.check_output("systemctl list-timers --all --no-pager")
    line = next(line for line in listing.splitlines() if f"{UNIT}.timer" in line)
    assert f"{UNIT}.service" in line
    settings = dict(
        line.split("=", 1)
        for line in host.check_output(
            f"systemctl show {UNIT}.timer -p TimersCalendar -p Persistent -p RandomizedDelayUSec"
        ).splitlines()
    )
    assert "OnCalendar=*-*-* 00:00:00 ;" in settings["TimersCalendar"]  # "daily", normalised
    assert settings["Persistent"] == "yes"
    assert settings["RandomizedDelayUSec"] == "1h"


def test_service_settings(host):
    service = host.check_output(f"systemctl show {UNIT}.service -p OnFailure -p WorkingDirectory -p Type")
    assert f"OnFailure=preflight-alert@{UNIT}.service.service" in service
    assert "WorkingDirectory=/opt/mailha" in service and "Type=oneshot" in service
    assert "\nSuccessExitStatus=1\n" in host.file(f"/etc/systemd/system/{UNIT}.service").content_string


def test_the_drill_timer_next_to_it_keeps_its_own_units(host):
    """Two jobs of the shared machinery in one play: neither overwrote the other."""
    assert host.service("mailha-drill.timer").is_enabled
    drill = host.file("/usr/local/sbin/mailha-drill-run").content_string
    assert "readonly COMMAND=/bin/true" in drill
    assert "SuccessExitStatus" not in host.file("/etc/systemd/system/mailha-drill.service").content_string
    assert "mailha preflight --output json" in host.file(f"/usr/local/sbin/{UNIT}-run").content_string


def test_a_passing_run_writes_the_json_report_and_the_metrics_and_prunes(host, old_reports, reset):
    before = datetime.datetime.now(datetime.UTC)
    result = run_service(host, "pass")
    assert result.rc == 0, host.run(f"journalctl -u {UNIT} --no-pager | tail -n 20").stdout
    kept = stamped_dirs(host)
    assert len(kept) == KEEP, kept
    newest = kept[-1]
    assert newest not in old_reports
    stamp = datetime.datetime.strptime(newest, "%Y%m%dT%H%M%S").replace(tzinfo=datetime.UTC)
    assert abs((stamp - before).total_seconds()) < 120, "the timestamp is not the run's UTC time"
    assert kept[:-1] == old_reports[-(KEEP - 1) :]
    report = json.loads(host.file(f"{REPORTS}/{newest}/preflight.json").content_string)
    assert report["verdict"] == "pass" and report["exit_code"] == 0
    assert report["checks"] == ["spf", "tls"]  # preflight_timer_checks, as --check
    assert report["cwd"] == "/opt/mailha"
    assert report["inventory"] == "/opt/mailha/inventories/lab/hosts.yml"
    assert report["note"] == "100% stand-in"
    assert host.file(f"{REPORTS}/keep-me").is_directory and host.file(f"{REPORTS}/notes.txt").exists
    assert f"report: {REPORTS}/{newest}" in journal(host)
    exported = metrics(host)
    assert exported["mailha_preflight_exit_code"] == "0"
    assert exported['mailha_preflight_check_status{check="tls",subject="mx2"}'] == "0"
    assert abs(float(exported["mailha_preflight_last_run_timestamp_seconds"]) - time.time()) < 120


def test_warnings_leave_the_unit_successful(host, old_reports, reset):
    alerted = len(alerts(host))
    result = run_service(host, "warn")
    assert result.rc == 0, "exit 1 (warnings) failed the unit: SuccessExitStatus=1 is missing"
    assert service_result(host) == {"Result": "success", "ExecMainStatus": "1"}
    assert host.run(f"systemctl is-failed {UNIT}.service").stdout.strip() != "failed"
    report = json.loads(host.file(f"{REPORTS}/{stamped_dirs(host)[-1]}/preflight.json").content_string)
    assert report["verdict"] == "warn"
    exported = metrics(host)
    assert exported["mailha_preflight_exit_code"] == "1"
    assert exported['mailha_preflight_check_status{check="tls",subject="mx2"}'] == "1"
    host.run("sleep 1")  # time for an OnFailure= unit that must not start
    assert len(alerts(host)) == alerted


def test_a_failed_check_fails_the_unit_and_alerts(host, old_reports, reset):
    alerted = len(alerts(host))
    result = run_service(host, "fail")
    assert result.rc != 0
    assert service_result(host) == {"Result": "exit-code", "ExecMainStatus": "2"}
    assert host.run(f"systemctl is-failed {UNIT}.service").stdout.strip() == "failed"
    wait_for_alerts(host, alerted + 1)
    assert alerts(host)[alerted:] == [f"{UNIT}.service failed"]
    kept = stamped_dirs(host)
    assert len(kept) == KEEP
    report = json.loads(host.file(f"{REPORTS}/{kept[-1]}/preflight.json").content_string)
    assert report["verdict"] == "fail"
    assert metrics(host)["mailha_preflight_exit_code"] == "2"


@pytest.mark.parametrize(
    ("mode", "status", "exit_code_exported"),
    [
        # The name server did not answer: exit 2, exported, nothing printed.
        ("cannot-run", "2", "2"),
        # A traceback exits 1, which SuccessExitStatus=1 alone would let
        # pass: the wrapper turns "no report" into 73.
        ("crash", "73", None),
    ],
)
def test_a_run_without_a_report_fails_the_unit_and_alerts(host, old_reports, reset, mode, status, exit_code_exported):
    before = stamped_dirs(host)
    previous = metrics(host)
    alerted = len(alerts(host))
    no_report = journal(host).count("the command printed no report")
    result = run_service(host, mode)
    assert result.rc != 0
    assert service_result(host) == {"Result": "exit-code", "ExecMainStatus": status}
    wait_for_alerts(host, alerted + 1)
    assert alerts(host)[alerted:] == [f"{UNIT}.service failed"]
    assert stamped_dirs(host) == before, "an empty report directory was left behind"
    assert journal(host).count("the command printed no report") == no_report + 1
    exported = metrics(host)
    if exit_code_exported is None:
        assert exported == previous, "the crash should not have touched the metrics file"
    else:
        assert exported["mailha_preflight_exit_code"] == exit_code_exported
        assert not any(name.startswith("mailha_preflight_check_status") for name in exported)
