"""The alert rules and the Grafana dashboard read only metrics mailha exports.

The source of truth is the metrics table in monitoring/README.md; the tests
hold it to the code both ways: the control host's names are
mailha.control_metrics.NAMES, the relays' are what mailha/node/agent.py
writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mailha import control_metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "prometheus" / "mailha-rules.yml"
RULE_TESTS = sorted((MONITORING / "prometheus" / "tests").glob("*.yml"))
DASHBOARD = MONITORING / "grafana" / "mailha-pair.json"
AGENT = ROOT / "mailha" / "node" / "agent.py"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC = re.compile(r"\bmailha_[a-z0-9_]+\b")
TABLE_ROW = re.compile(r"^\| `(mailha_[a-z0-9_]+)` \| (gauge|counter|histogram) \| (relay agent|control host) \|")


def documented() -> dict[str, tuple[str, str]]:
    """name -> (type, source) from the metrics table of monitoring/README.md."""
    rows = {}
    for line in (MONITORING / "README.md").read_text(encoding="utf-8").splitlines():
        if match := TABLE_ROW.match(line):
            name, kind, source = match.groups()
            assert name not in rows, f"{name} is in the metrics table twice"
            rows[name] = (kind, source)
    assert len(rows) > 10, "the metrics table of monitoring/README.md was not found"
    return rows


def family(name: str, table: dict[str, tuple[str, str]]) -> str:
    """A histogram's series (_bucket, _sum, _count) as the histogram's name."""
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and table.get(base, ("",))[0] == "histogram":
            return base
    return name


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def walk_panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_expressions() -> list[str]:
    board = dashboard()
    expressions = [t["expr"] for p in walk_panels(board["panels"]) for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        expressions.append(query.get("query", "") if isinstance(query, dict) else str(query or ""))
    return expressions


def agent_metrics() -> set[str]:
    """Every mailha_* name in agent.py (`# TYPE` lines would miss names built
    in code), a histogram's series as the histogram."""
    table = documented()
    return {family(name, table) for name in METRIC.findall(AGENT.read_text(encoding="utf-8"))}


# --- the dashboard -----------------------------------------------------------


def test_the_dashboard_is_json_with_unique_panel_ids():
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["uid"] == "mailha-pair"
    ids = [panel["id"] for panel in walk_panels(board["panels"])]
    assert len(ids) > 5
    assert len(ids) == len(set(ids)), f"panel ids used twice: {sorted(i for i in ids if ids.count(i) > 1)}"
    titles = [p["title"] for p in walk_panels(board["panels"]) if p["type"] != "row"]
    assert len(titles) == len(set(titles)), "two panels share a title"


def test_every_query_goes_to_the_chosen_data_source():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in walk_panels(board["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_panels_do_not_overlap():
    cells = {}
    for panel in walk_panels(dashboard()["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_dashboard_shows_what_an_operator_asks_first():
    table = documented()
    used = {family(name, table) for expr in dashboard_expressions() for name in METRIC.findall(expr)}
    wanted = {
        "mailha_floating_ip_held",
        "mailha_vrrp_state",
        "mailha_health_level",
        "mailha_smtp_greeting_seconds",
        "mailha_queue_messages",
        "mailha_queue_oldest_message_age_seconds",
        "mailha_split_brain",
        "mailha_drill_last_success",
        "mailha_drill_last_outage_seconds",
        "mailha_preflight_check_status",
    }
    assert wanted <= used, f"no panel shows {sorted(wanted - used)}"
    greeting = [e for e in dashboard_expressions() if "mailha_smtp_greeting_seconds" in e]
    assert any("histogram_quantile(0.5," in e for e in greeting) and any(
        "histogram_quantile(0.95," in e for e in greeting
    )
    assert all("_bucket" in e and "le)" in e for e in greeting), "a quantile needs the buckets, summed by le"


# --- metric names ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["rules", "dashboard"])
def test_rules_and_dashboard_use_only_documented_metrics(where):
    table = documented()
    expressions = [rule["expr"] for rule in rules()] if where == "rules" else dashboard_expressions()
    used = {family(name, table) for expr in expressions for name in METRIC.findall(expr)}
    assert len(used) > 5
    unknown = used - set(table)
    assert not unknown, f"{where} use metrics nobody exports (or monitoring/README.md lacks them): {sorted(unknown)}"
    for name in {n for expr in expressions for n in METRIC.findall(expr)}:
        if table.get(name, ("",))[0] == "histogram":
            pytest.fail(f"{where} read the histogram {name} itself; use {name}_bucket, _sum or _count")


def test_documented_control_metrics_are_what_the_control_host_writes():
    control = {name for name, (_, source) in documented().items() if source == "control host"}
    written = set(control_metrics.NAMES)
    assert not written - control, f"document in monitoring/README.md: {sorted(written - control)}"
    assert not control - written, f"documented, but mailha.control_metrics writes no {sorted(control - written)}"


def test_documented_relay_metrics_are_what_the_agent_writes():
    relay = {name for name, (_, source) in documented().items() if source == "relay agent"}
    exported = agent_metrics()
    undocumented = exported - relay
    assert not undocumented, f"agent.py writes {sorted(undocumented)}: document them in monitoring/README.md"
    missing = relay - exported
    assert not missing, f"documented, but mailha/node/agent.py does not write {sorted(missing)}"


# --- the rules ----------------------------------------------------------------


def test_every_alert_has_a_severity_and_the_annotations_an_operator_needs():
    names = [alert["alert"] for alert in alerts()]
    assert len(names) == len(set(names)), "two rules raise the same alert"
    for alert in alerts():
        name = alert["alert"]
        assert re.fullmatch(r"Mailha[A-Z][A-Za-z]+", name)
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        annotations = alert["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert annotations["runbook_url"] == f"README.md#alert-{name.lower()}", name


def test_every_alert_is_tested_firing_and_not_firing():
    firing, silent = set(), set()
    for path in RULE_TESTS:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert document["rule_files"] == ["../mailha-rules.yml"], path.name
        for case in document["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {alert["alert"] for alert in alerts()}
    assert names <= firing, f"no test sees these fire: {sorted(names - firing)}"
    assert names <= silent, f"no test sees these stay quiet: {sorted(names - silent)}"
    assert firing | silent <= names, f"tests of alerts that do not exist: {sorted((firing | silent) - names)}"
