"""Each relay's facts for the parity, capacity and DKIM key checks.

Two sources, each the one the CLI already reads them from: the relays'
health agents (queue counts and the oldest message's age, as `status`
shows them) and a read-only playbook (playbooks/relay-facts.yml: settings,
package versions, spool space, the signing key's public half, the clock),
run like `queue inspect` through ansible-runner. Parsing is a pure
function over the playbook's text, tested without a relay.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from mailha import probes, project
from mailha import status as status_mod
from mailha.errors import MailhaError
from mailha.pair import Pair
from mailha.runner import HostReport, PlaybookResult, run_playbook

PLAYBOOK = "relay-facts.yml"
CLOCK_TASK = "Report: relay clock"
FACTS_TASK = "Report: relay facts"
SECTION = re.compile(r"^### ([a-z_]+)$")
FAILED_PREFIX = "!!! "


@dataclass
class Clock:
    """The relay's clock, read while the controller's clock went from `started` to `ended`."""

    relay: Decimal  # seconds since the epoch, as the relay's `date +%s.%N` printed them
    started: datetime
    ended: datetime

    def offset_bounds(self) -> tuple[float, float]:
        """The relay's clock minus the controller's: between these two values."""
        return (
            float(self.relay - Decimal(str(self.ended.timestamp()))),
            float(self.relay - Decimal(str(self.started.timestamp()))),
        )


@dataclass
class RelayFacts:
    node: str
    error: str = ""  # why there are no facts at all (unreachable, the playbook failed)
    postconf: dict[str, str] = field(default_factory=dict)  # postconf -n
    limits: dict[str, str] = field(default_factory=dict)  # smtp_helo_name, message_size_limit, queue_minfree
    opendkim: list[str] = field(default_factory=list)  # opendkim.conf, without comments and blank lines
    keepalived: list[str] = field(default_factory=list)  # keepalived.conf, likewise
    packages: dict[str, str] = field(default_factory=dict)  # package -> version; "" when not installed
    spool_free_bytes: int | None = None
    dkim_public_key: str = ""  # PEM, the public half of OpenDKIM's KeyFile
    clock: Clock | None = None
    queue: dict[str, int] | None = None  # from the health agent
    queue_oldest_age_seconds: float | None = None
    agent_problem: str = ""  # why queue is None
    problems: dict[str, str] = field(default_factory=dict)  # section -> what failed in it

    def setting(self, config: list[str], key: str) -> str | None:
        """The value of `Key value` in a configuration (OpenDKIM's)."""
        for line in config:
            name, _, value = line.partition(" ")
            if name == key:
                return value.strip()
        return None


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        header = SECTION.match(line)
        if header:
            current = sections.setdefault(header.group(1), [])
        elif current is not None:
            current.append(line)
    return sections


def _config_lines(lines: list[str], comment: str = "#") -> list[str]:
    """Settings only: comments, blank lines and runs of blanks do not make two files differ."""
    kept = []
    for line in lines:
        text = line.split(comment, 1)[0] if comment else line
        text = " ".join(text.split())
        if text:
            kept.append(text)
    return kept


def _assignments(lines: list[str]) -> dict[str, str]:
    values = {}
    for line in lines:
        name, equals, value = line.partition(" = ")
        if equals:
            values[name.strip()] = value.strip()
    return values


def parse_facts(node: str, text: str) -> RelayFacts:
    """RelayFacts from the "Report: relay facts" output of playbooks/relay-facts.yml."""
    facts = RelayFacts(node)
    sections = _sections(text)
    for name, lines in sections.items():
        failures = [line[len(FAILED_PREFIX) :] for line in lines if line.startswith(FAILED_PREFIX)]
        if failures:
            facts.problems[name] = "; ".join(failures)
    missing = {"postconf", "limits", "opendkim", "keepalived", "packages", "spool", "dkim"} - set(sections)
    for name in sorted(missing):
        facts.problems[name] = "not in the output"
    body = {name: [line for line in lines if not line.startswith(FAILED_PREFIX)] for name, lines in sections.items()}
    facts.postconf = _assignments(body.get("postconf", []))
    facts.limits = _assignments(body.get("limits", []))
    facts.opendkim = _config_lines(body.get("opendkim", []))
    # keepalived.conf comments start with # or !
    facts.keepalived = _config_lines([line.split("!", 1)[0] for line in body.get("keepalived", [])])
    for line in body.get("packages", []):
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("dpkg-query:"):
            facts.packages[fields[0]] = fields[1] if fields[2] == "installed" else ""
        elif line.startswith("dpkg-query: no packages found matching "):
            facts.packages[line.rsplit(" ", 1)[1]] = ""
    spool = body.get("spool", [])
    if len(spool) >= 2:
        fields = spool[-1].split()
        if len(fields) >= 4 and fields[3].isdigit():
            facts.spool_free_bytes = int(fields[3]) * 1024
    if facts.spool_free_bytes is None and "spool" not in facts.problems:
        facts.problems["spool"] = "df printed no free space"
    key = "\n".join(body.get("dkim", [])).strip()
    if key.startswith("-----BEGIN PUBLIC KEY-----"):
        facts.dkim_public_key = key + "\n"
    elif "dkim" not in facts.problems:
        facts.problems["dkim"] = "no public key printed"
    return facts


def parse_clock(report: HostReport | None) -> Clock | None:
    if report is None or report.started is None or report.ended is None:
        return None
    try:
        return Clock(Decimal(report.stdout.strip()), report.started, report.ended)
    except InvalidOperation:
        return None


def _agent_queues(pair: Pair, timeout: float, relays: list[str]) -> dict[str, tuple[dict | None, str]]:
    port = pair.settings["mailha_agent_port"]
    with ThreadPoolExecutor(max_workers=len(relays)) as pool:
        answers = {
            name: pool.submit(probes.get_json, f"http://{pair.nodes[name].address}:{port}/status", timeout)
            for name in relays
        }
    return {name: status_mod.agent_status(answer.result()) for name, answer in answers.items()}


def collect(pair: Pair, timeout: float, relays: Iterable[str] | None = None) -> dict[str, RelayFacts]:
    """The facts of `relays` (default every relay); a relay that cannot be read gets
    RelayFacts with `error` set. The others are not asked at all: a switch's
    preflight reads its target only, and must not wait for a source that is down."""
    names = list(pair.nodes) if relays is None else [name for name in pair.nodes if name in set(relays)]
    try:
        result = run_playbook(project.playbook(PLAYBOOK), pair.inventory_path, limit=",".join(names))
    except MailhaError as exc:  # ansible-playbook could not start: every relay unread, the DNS checks still count
        result = PlaybookResult(status="error", rc=-1, failure=exc.message)
    facts_reports = result.host_reports.get(FACTS_TASK, {})
    clock_reports = result.host_reports.get(CLOCK_TASK, {})
    agents = _agent_queues(pair, timeout, names)
    collected = {}
    for name in names:
        if name in facts_reports:
            facts = parse_facts(name, facts_reports[name].stdout)
            facts.clock = parse_clock(clock_reports.get(name))
        elif name in result.unreachable:
            facts = RelayFacts(name, error="unreachable (ansible)")
        else:
            facts = RelayFacts(name, error=f"its facts could not be read: {result.failure or 'no output'}")
        document, problem = agents[name]
        if document is None:
            facts.agent_problem = f"health agent {problem}"
        else:
            facts.queue = document["queue"]
            facts.queue_oldest_age_seconds = document["queue_oldest_age_seconds"]
        collected[name] = facts
    return collected
