"""The status verdict from crafted topologies, and the CLI's bad-input paths."""

import http.server
import json
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from mailha import status
from mailha.cli import main
from mailha.status import CRITICAL, DEGRADED, HEALTHY, NodeView, Topology


def node(name, *, holds=False, state="BACKUP", smtp=True, agent=True, queue=None, lb="DOWN", role=None, **extra):
    return NodeView(
        name=name,
        address=f"10.0.0.{1 if name == 'mx1' else 2}",
        role=role or ("primary" if name == "mx1" else "standby"),
        vrrp_state=state,
        holds_floating_ip=holds if agent else None,
        smtp_ok=smtp,
        smtp_ms=2.0,
        smtp_detail="220 mta" if smtp else "ConnectionRefusedError",
        agent_ok=agent,
        healthy=smtp if agent else None,
        drained=False if agent else None,
        queue=(queue or {"active": 0, "deferred": 0, "hold": 0, "incoming": 0}) if agent else None,
        queue_oldest_age_seconds=None,
        balancer_state=lb,
        **extra,
    )


def topology(mx1, mx2, dns=("10.0.0.100",), lb_error=None):
    t = Topology(
        environment="lab",
        floating_ip="10.0.0.100",
        sending_host="mta.mailha.test",
        nodes=[mx1, mx2],
        holders=[n.name for n in (mx1, mx2) if n.holds_floating_ip],
        balancer={
            "address": "10.0.0.20",
            "servers": {mx1.name: mx1.balancer_state, mx2.name: mx2.balancer_state},
            "error": lb_error,
        },
        dns={"name": "mta.mailha.test", "answer": list(dns), "error": None},
    )
    t.problems = status.assess(t, deferred_warning=100)
    return t


HEALTHY_PAIR = dict(mx1=node("mx1", holds=True, state="MASTER", lb="UP"), mx2=node("mx2"))


def test_healthy_pair():
    t = topology(**HEALTHY_PAIR)
    assert t.problems == []
    assert (t.verdict, t.exit_code) == (HEALTHY, 0)
    assert "verdict: healthy" in status.render_table(t)


@pytest.mark.parametrize(
    ("mx1", "mx2", "verdict", "text"),
    [
        (
            node("mx1", holds=True, state="MASTER", lb="UP"),
            node("mx2", holds=True, state="MASTER"),
            CRITICAL,
            "split brain",
        ),
        (node("mx1"), node("mx2"), CRITICAL, "no node holds the floating IP"),
        (
            node("mx1", holds=True, state="MASTER", lb="UP"),
            node("mx2", state="FAULT", smtp=False),
            CRITICAL,
            "mx2 is in FAULT",
        ),
        (
            node("mx1", holds=True, state="MASTER", smtp=False, lb="UP"),
            node("mx2"),
            CRITICAL,
            "holds the floating IP but its MTA does not greet",
        ),
        (node("mx1", agent=False), node("mx2", agent=False), CRITICAL, "health agent unreachable"),
        (
            node("mx1", state="FAULT", smtp=False),
            node("mx2", holds=True, state="MASTER", lb="UP"),
            CRITICAL,
            "mx1 is in FAULT",
        ),
        (
            node("mx1", state="BACKUP"),
            node("mx2", holds=True, state="MASTER", lb="UP"),
            DEGRADED,
            "mx2 is active but mx1 is the primary",
        ),
        (
            node("mx1", holds=True, state="MASTER", lb="DOWN"),
            node("mx2"),
            DEGRADED,
            "does not send to the active node mx1",
        ),
        (node("mx1", holds=True, state="MASTER", lb="UP"), node("mx2", lb="UP"), DEGRADED, "also sends to mx2"),
        (
            node("mx1", holds=True, state="MASTER", lb="UP"),
            node("mx2", queue={"active": 0, "deferred": 3, "hold": 0}),
            DEGRADED,
            "mx2 does not hold the floating IP but has 3 queued messages",
        ),
        (
            node("mx1", holds=True, state="MASTER", lb="UP", queue={"active": 0, "deferred": 500, "hold": 0}),
            node("mx2"),
            DEGRADED,
            "mx1 has 500 deferred messages",
        ),
    ],
)
def test_problems_and_verdicts(mx1, mx2, verdict, text):
    t = topology(mx1, mx2)
    assert t.verdict == verdict
    assert any(text in p["problem"] for p in t.problems), t.problems
    assert status.EXIT_CODES[verdict] == t.exit_code


def test_dns_not_pointing_at_the_floating_ip_is_degraded():
    t = topology(**HEALTHY_PAIR, dns=("10.0.0.11",))
    assert t.verdict == DEGRADED
    assert "not the floating IP 10.0.0.100" in t.problems[0]["problem"]


def test_json_carries_the_verdict():
    import json

    data = json.loads(status.render_json(topology(**HEALTHY_PAIR)))
    assert data["verdict"] == "healthy" and data["holders"] == ["mx1"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist; run 'make provision'"),
        ("all: [", "is not valid YAML"),
        ("all:\n  vars: {}\n", "lacks mailha_environment"),
    ],
)
def test_status_bad_inventory_is_one_line(tmp_path: Path, content, message):
    path = tmp_path / "inventories" / "lab" / "hosts.yml"
    if content is not None:
        path.parent.mkdir(parents=True)
        path.write_text(content)
    result = CliRunner().invoke(main, ["status", "--inventory", str(path)])
    # 3, unknown: not 2, which is a critical pair for status.
    assert result.exit_code == 3
    assert message in result.output
    assert "Traceback" not in result.output


def test_queues_empty_needs_every_agent_to_answer_with_no_queued_message():
    with socket.socket() as probe:
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    answers = {}
    paths = []

    class Agent(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # the name http.server calls
            paths.append(self.path)
            body = json.dumps(answers[self.server.server_address[0]]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    servers = [http.server.ThreadingHTTPServer((a, port), Agent) for a in ("127.0.0.2", "127.0.0.3")]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    document = {"vrrp_state": "MASTER", "holds_floating_ip": True, "healthy": True, "drained": False}
    the_pair = SimpleNamespace(
        settings={"mailha_agent_port": port},
        nodes={"mx1": SimpleNamespace(address="127.0.0.2"), "mx2": SimpleNamespace(address="127.0.0.3")},
    )
    try:
        empty = {"active": 0, "deferred": 0, "hold": 0, "incoming": 0}
        answers.update({"127.0.0.2": {**document, "queue": empty}, "127.0.0.3": {**document, "queue": empty}})
        assert status.queues_empty(the_pair)
        assert paths == ["/status?fresh=1"] * 2, "a reading taken now, not the agents' shared one"
        answers["127.0.0.3"] = {**document, "queue": {**empty, "deferred": 1}}
        assert not status.queues_empty(the_pair)
        answers["127.0.0.3"] = {**document, "queue": "none"}  # unreadable counts as not empty
        assert not status.queues_empty(the_pair)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert not status.queues_empty(the_pair)  # nobody answers


def test_an_interrupted_switch_is_shown_with_what_finishes_it():
    t = topology(
        node("mx1", holds=True, state="MASTER", lb="DRAIN", route="hold"),
        node("mx2", lb="no check", route="hold"),
    )
    problems = [p["problem"] for p in t.problems]
    assert "mx1 holds its mail (nothing it queues is sent): a switch did not finish" in problems[0]
    assert any(p.startswith("the load balancer is pinned to mx2, its health check off") for p in problems)
    assert any(p.startswith("mx1 is drained at the load balancer") for p in problems)
    assert all("'mailha failover' completes it, 'mailha failback' undoes it" in p for p in problems[:2])
    assert t.verdict == CRITICAL
    assert "ROUTE" in status.render_table(t) and " hold " in status.render_table(t)


def test_a_relay_that_stood_down_after_a_split_brain_is_degraded_not_a_broken_standby():
    reason = "split brain, peer 10.0.0.1 holds the floating IP with a better claim"
    t = topology(
        node("mx1", holds=True, state="MASTER", lb="UP", route="direct"),
        node("mx2", state="FAULT", route="hand-over", demoted_reason=reason),
    )
    assert [p["problem"] for p in t.problems] == [f"mx2 stands down ({reason}): VRRP between the relays is cut"]
    assert t.verdict == DEGRADED


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [("route", "sideways", "route is not one of direct, hand-over, hold"), ("demoted_reason", 3, "null or a text")],
)
def test_agent_answers_with_bad_new_fields_are_unreadable(field, value, why):
    document = {
        "vrrp_state": "MASTER",
        "holds_floating_ip": True,
        "healthy": True,
        "drained": False,
        "queue": {"active": 0},
        field: value,
    }
    answer = SimpleNamespace(reachable=True, error=None, status=200, document=document)
    assert status.agent_status(answer) == (None, f"answer unreadable: {field} is not {why.split(' is not ')[-1]}")


def test_the_relays_backup_servers_at_the_load_balancer_do_not_count_as_sending():
    t = topology(**HEALTHY_PAIR)
    t.balancer["servers"].update({"mx1-standby": "UP", "mx2-standby": "UP"})
    assert status.assess(t, deferred_warning=100) == []
    # An isolated relay's backup must be disabled too.
    fenced = node("mx2", lb="MAINT", isolated={"since": "now", "reason": "test"})
    t = topology(HEALTHY_PAIR["mx1"], fenced)
    t.balancer["servers"].update({"mx1-standby": "UP", "mx2-standby": "UP"})
    problems = [p["problem"] for p in status.assess(t, deferred_warning=100)]
    assert "the load balancer has not disabled the isolated mx2-standby (UP)" in problems


def test_a_degraded_relay_is_a_degraded_finding_with_its_reasons():
    slow = "greeting median 1.002 s over the last 20 checks (degraded_latency_seconds 0.5)"
    t = topology(
        node("mx1", holds=True, state="MASTER", lb="UP", health_level="degraded", degraded_reasons=(slow,)),
        node("mx2", health_level="ok"),
    )
    assert (t.verdict, t.exit_code) == (DEGRADED, 1)
    assert t.problems == [{"severity": DEGRADED, "problem": f"mx1 is degraded: {slow}"}]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (["slow", "queue"], ("slow", "queue")),
        (["a\nb  c", 7, "x" * 300], ("a b c", "x" * 200)),
        ("not a list", ()),
        (None, ()),
    ],
)
def test_degraded_reasons_from_the_agent_are_one_line_and_bounded(value, shown):
    assert status.DISPLAY_FIELDS["degraded_reasons"](value) == shown
