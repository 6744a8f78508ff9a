"""drill_timer: the timer is scheduled, and one run of the service leaves a
timestamped report, prunes old ones and alerts when the drill fails."""

import datetime
import json
import re

import pytest

# One podman exec per command: faster than through Ansible.
testinfra_hosts = ["podman://molecule-drill-timer"]

UNIT = "mailha-drill"
REPORTS = "/var/lib/mailha/drills"
METRICS = "/var/lib/prometheus/node-exporter/mailha-drill.prom"
KEEP = 3
STAMP = re.compile(r"^\d{8}T\d{6}$")
OLD = [f"2020010{day}T000000" for day in range(1, 6)]


def stamped_dirs(host):
    names = host.check_output(f"ls -1 {REPORTS}").split()
    return sorted(name for name in names if STAMP.match(name))


def run_service(host):
    """Start the oneshot service and wait for it; a new second for a new stamp."""
    host.run("sleep 1.1")
    return host.run(f"systemctl start {UNIT}.service")


@pytest.fixture(scope="module")
def old_reports(host):
    for name in OLD:
        host.run_expect([0], f"mkdir -p {REPORTS}/{name} && echo old > {REPORTS}/{name}/report.json")
    # Not timestamps: pruning must leave them alone.
    host.run_expect([0], f"mkdir -p {REPORTS}/keep-me && touch {REPORTS}/notes.txt")
    return OLD


def test_units_and_wrapper_are_installed(host):
    wrapper = host.file(f"/usr/local/sbin/{UNIT}-run")
    assert wrapper.mode == 0o755 and wrapper.user == "root"
    assert "Ansible managed" in wrapper.content_string
    for suffix in ("service", "timer"):
        unit = host.file(f"/etc/systemd/system/{UNIT}.{suffix}")
        assert unit.mode == 0o644 and "Ansible managed" in unit.content_string
    assert host.file(REPORTS).is_directory and host.file(REPORTS).mode == 0o750
    # node_exporter's textfile directory, which the image does not have.
    metrics_dir = host.file(METRICS.rsplit("/", 1)[0])
    assert metrics_dir.is_directory and metrics_dir.mode == 0o755


def test_systemd_analyze_verify_passes(host):
    result = host.run(f"systemd-analyze verify /etc/systemd/system/{UNIT}.service /etc/systemd/system/{UNIT}.timer")
    assert result.rc == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_timer_is_enabled_and_active(host):
    timer = host.service(f"{UNIT}.timer")
    assert timer.is_enabled and timer.is_running


def test_list_timers_shows_the_drill(host):
    listing = host.check_output("systemctl list-timers --all --no-pager")
    line = next(line for line in listing.splitlines() if f"{UNIT}.timer" in line)
    assert f"{UNIT}.service" in line


def test_timer_settings(host):
    timer = dict(
        line.split("=", 1)
        for line in host.check_output(
            f"systemctl show {UNIT}.timer -p TimersCalendar -p Persistent -p RandomizedDelayUSec"
        ).splitlines()
    )
    assert "OnCalendar=Mon *-*-* 00:00:00 ;" in timer["TimersCalendar"]  # "weekly", normalised
    assert timer["Persistent"] == "yes"
    assert timer["RandomizedDelayUSec"] == "30min"
    service = host.check_output(f"systemctl show {UNIT}.service -p OnFailure -p WorkingDirectory -p Type")
    assert f"OnFailure=drill-alert@{UNIT}.service.service" in service
    assert "WorkingDirectory=/opt/mailha" in service and "Type=oneshot" in service


def test_one_run_writes_a_timestamped_report_and_prunes(host, old_reports):
    before = datetime.datetime.now(datetime.UTC)
    result = run_service(host)
    assert result.rc == 0, host.run(f"journalctl -u {UNIT} --no-pager | tail -n 20").stdout
    kept = stamped_dirs(host)
    assert len(kept) == KEEP, kept
    newest = kept[-1]
    assert newest not in old_reports
    stamp = datetime.datetime.strptime(newest, "%Y%m%dT%H%M%S").replace(tzinfo=datetime.UTC)
    assert abs((stamp - before).total_seconds()) < 120, "the timestamp is not the run's UTC time"
    assert kept[:-1] == old_reports[-(KEEP - 1) :]
    report = json.loads(host.file(f"{REPORTS}/{newest}/report.json").content_string)
    assert report["scenario"] == "host-down" and report["verdict"]["passed"] is True
    assert report["cwd"] == "/opt/mailha"
    assert report["inventory"] == "/opt/mailha/inventories/lab/hosts.yml"
    assert report["note"] == "100% stand-in"
    assert host.file(f"{REPORTS}/keep-me").is_directory and host.file(f"{REPORTS}/notes.txt").exists
    journal = host.run(f"journalctl -u {UNIT} --no-pager").stdout
    assert f"report: {REPORTS}/{newest}" in journal
    assert host.file(METRICS).content_string == 'mailha_drill_last_success{scenario="host-down"} 1\n'


def test_failed_drill_alerts_and_still_prunes(host, old_reports):
    host.run_expect([0], "touch /run/fake-drill-fail")
    try:
        result = run_service(host)
        assert result.rc != 0
        assert host.run(f"systemctl is-failed {UNIT}.service").stdout.strip() == "failed"
        waited = host.run("for i in $(seq 50); do [ -s /run/drill-alert.log ] && break; sleep 0.1; done")
        assert waited.rc == 0
        assert f"{UNIT}.service failed" in host.file("/run/drill-alert.log").content_string
    finally:
        host.run(f"rm -f /run/fake-drill-fail; systemctl reset-failed {UNIT}.service")
    kept = stamped_dirs(host)
    assert len(kept) == KEEP
    report = json.loads(host.file(f"{REPORTS}/{kept[-1]}/report.json").content_string)
    assert report["verdict"]["passed"] is False
    assert host.file(METRICS).content_string == 'mailha_drill_last_success{scenario="host-down"} 0\n'


def test_a_process_the_drill_leaves_in_its_own_session_outlives_the_run(host):
    """The drill's webhook deliverer is such a process: it must deliver the
    drill's event after the oneshot unit has ended (KillMode=process)."""
    host.run("rm -f /run/fake-drill-child.pid /run/fake-drill-fail")
    assert run_service(host).rc == 0
    pid = host.check_output("cat /run/fake-drill-child.pid").strip()
    assert host.run(f"kill -0 {pid}").rc == 0, "the run's detached child was killed with the unit"
    host.run(f"kill {pid}")
