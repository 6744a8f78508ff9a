"""Throughput benchmark on the lab: accepted and delivered msg/s, side by side.

    .venv/bin/python benchmarks/throughput.py [--rounds 3] [--sessions 1,8,32] [--sizes 2048,51200]
        [--paths lb,fip,direct] [--messages 1000] [--max-seconds 15] [--profile] [--json FILE]

Each run opens N SMTP sessions that send message after message (mailha.load)
through one path: the load balancer, the floating IP, or straight to the
active relay's own address; and once more straight to the active relay with
DKIM signing off, the ceiling signing is judged against. Rounds are
interleaved: every configuration runs once per round, so drift on a shared
machine spreads over all of them.

Per run: accepted msg/s (first submission to the last 250) and delivered
msg/s (first submission to the last message stored at the sink, read from
the sink's Maildir file names). Between runs the relays' queues drain, the
run's messages are counted at the sink (lost ones are reported) and removed
from it. With --profile, the CPU time each process name used in each
container during a run is read from /proc and printed per message.

Prints a line per run, then Markdown tables: medians with the spread
(min-max) and the ratios load balancer / direct, signed / unsigned and
delivered / accepted. A benchmark, not a test: it asserts nothing. Exit
codes: 0 done, 1 the lab was not ready or a run lost mail, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from mailha import lab, load, pair, probes, status
from mailha.errors import MailhaError
from mailha.node import vrrp
from mailha.traffic import Target, new_run_id

REPO = Path(__file__).resolve().parent.parent
PATHS = {"lb": "load balancer", "fip": "floating IP", "direct": "direct"}
# Postfix's virtual(8) names Maildir files "<seconds>.V<dev>I<inode>M<microseconds>.<host>".
MAILDIR_NAME = re.compile(r"^(\d+)\.V[0-9a-f]+I[0-9a-f]+M(\d+)\.")
MILTER_SETTINGS = ("smtpd_milters", "non_smtpd_milters")
VRRP_LOG = vrrp.LOG_FILE  # keepalived_notify_log


@dataclass(frozen=True)
class Config:
    path: str  # lb, fip, direct
    signed: bool
    sessions: int
    size: int

    @property
    def label(self) -> str:
        signing = "signed" if self.signed else "unsigned"
        return f"{PATHS[self.path]:13} {signing:8} {self.sessions:2} sessions {self.size // 1024:3} KB"


@dataclass
class Run:
    config: Config
    accepted: int
    refused: int
    lost: int
    duplicated: int
    transitions: int  # VRRP transitions during the run: a relay judged failed under load
    accepted_per_second: float
    delivered_per_second: float
    cpu: dict[str, float]  # "container/process" -> CPU seconds during the run


class Lab:
    """The lab as the benchmark drives it: targets, signing, queues and the sink."""

    def __init__(self, inventory: Path, drain_seconds: float):
        self.pair = pair.load(inventory)
        self.hosts = lab.PodmanHosts(self.pair)
        self.sink = lab.recipient_side(self.pair, self.hosts)
        self.drain_seconds = drain_seconds
        topology = status.gather(self.pair)
        if len(topology.holders) != 1:
            raise MailhaError(f"the floating IP has {len(topology.holders)} holders; benchmark a steady pair")
        self.active = self.pair.node(topology.holders[0])
        self.targets = {
            "lb": Target(self.pair.balancer["mailha_address"], 25),
            "fip": Target(self.pair.floating_ip, 25),
            "direct": Target(self.active.address, 25),
        }
        self.milters = {
            name: self.postconf("-h", name).stdout.strip() for name in MILTER_SETTINGS
        }  # restored by set_signing(True)
        if not self.milters["smtpd_milters"]:
            raise MailhaError(f"{self.active.name} signs nothing (smtpd_milters is empty); provision the lab first")

    def postconf(self, *args: str):
        return self.hosts.exec(self.active.target, "postconf", *args)

    def set_signing(self, on: bool) -> None:
        values = self.milters if on else dict.fromkeys(MILTER_SETTINGS, "")
        self.postconf("-e", *(f"{name}={value}" for name, value in values.items()))
        self.hosts.exec(self.active.target, "postfix", "reload")
        if not probes.poll(lambda: probes.smtp_greeting(self.active.address, 25, 1.0).ok, 15, 0.2):
            raise MailhaError(f"{self.active.name} did not greet within 15 s of a reload")

    def transitions(self) -> int:
        """VRRP transitions logged so far on both relays: a run that changes this flapped."""
        return sum(
            int(self.hosts.exec(n.target, "sh", "-c", f"wc -l < {VRRP_LOG}", check=False).stdout.strip() or 0)
            for n in self.pair.nodes.values()
        )

    def wait_drained(self) -> bool:
        return probes.poll(lambda: status.queues_empty(self.pair), self.drain_seconds, 0.5)

    def arrivals(self, run_id: str, since: float) -> tuple[Counter, list[str], float | None]:
        """This run's messages at the sink: counts by Message-ID, their files, the last arrival time."""
        prefix = f"<mailha-{run_id}-"
        counts: Counter = Counter()
        files, last = [], None
        for entry in self.sink.index(since=since - 1):
            message_id = entry.get("message_id") or ""
            if not message_id.startswith(prefix):
                continue
            counts[message_id] += 1
            files.append(entry["file"])
            stamp = MAILDIR_NAME.match(os.path.basename(entry["file"]))
            if stamp:
                at = int(stamp.group(1)) + int(stamp.group(2)) / 1e6
                last = at if last is None else max(last, at)
        return counts, files, last

    def remove(self, files: list[str]) -> None:
        for start in range(0, len(files), 500):
            self.hosts.exec(self.sink.target, "rm", "-f", "--", *files[start : start + 500])


class CpuMeter:
    """CPU seconds per (container, process name), read from the host's /proc."""

    SCOPE = re.compile(r"libpod-([0-9a-f]{64})")

    def __init__(self, hosts: lab.PodmanHosts):
        out = hosts.podman("ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}").stdout
        self.containers = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        self.tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                cgroup = Path(entry.path, "cgroup").read_text()
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            found = self.SCOPE.search(cgroup)
            where = self.containers.get(found.group(1), "?") if found else "host"
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            totals[f"{where}/{name}"] += (int(fields[11]) + int(fields[12])) / self.tick
        return totals


def one_run(the_lab: Lab, config: Config, args, meter: CpuMeter | None) -> Run:
    run_id = new_run_id()
    transitions = the_lab.transitions()
    before = meter.sample() if meter else {}
    result = load.SessionLoad(
        the_lab.targets[config.path],
        config.sessions,
        args.messages,
        config.size,
        max_seconds=args.max_seconds,
        run_id=run_id,
    ).run()
    if not the_lab.wait_drained():
        raise MailhaError(f"the relays' queues did not drain within {args.drain_seconds:g} s after {config.label}")
    cpu = {}
    if meter:
        after = meter.sample()
        cpu = {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0}
    accepted = {a.message_id for a in result.accepted}
    # The sink acknowledged them all; its own delivery to the Maildir may still be under way.
    deadline = time.monotonic() + args.drain_seconds
    while True:
        counts, files, last = the_lab.arrivals(run_id, result.started)
        if accepted <= set(counts) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    the_lab.remove(files)
    lost = len(accepted - set(counts))
    delivered = len(accepted & set(counts)) / (last - result.started) if last and last > result.started else 0.0
    if result.errors:
        print(f"    first errors: {'; '.join(result.errors[:3])}", flush=True)
    duplicated = sum(n - 1 for n in counts.values())
    flaps = the_lab.transitions() - transitions
    return Run(
        config, len(accepted), result.refused, lost, duplicated, flaps, result.accepted_per_second, delivered, cpu
    )


def plan(args) -> list[Config]:
    """One round's configurations: signing off last, so it is switched twice per round."""
    configs = [Config(p, True, s, z) for z in args.sizes for s in args.sessions for p in args.paths]
    return configs + [Config("direct", False, s, z) for z in args.sizes for s in args.sessions]


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def ratio(top: list[float], bottom: list[float]) -> str:
    if not top or not bottom or statistics.median(bottom) == 0:
        return "-"
    return f"{statistics.median(top) / statistics.median(bottom):.0%}"


def tables(runs: list[Run], args) -> str:
    by: dict[Config, list[Run]] = defaultdict(list)
    for run in runs:
        by[run.config].append(run)

    def figures(path: str, signed: bool, sessions: int, size: int, what: str) -> list[float]:
        return [getattr(r, what) for r in by.get(Config(path, signed, sessions, size), [])]

    rounds = max((len(v) for v in by.values()), default=0)
    heads = [PATHS[p] for p in args.paths]

    def table(what: str, ratio_heads: list[str], ratios) -> list[str]:
        lines = [
            f"| size | sessions | {' | '.join(heads)} | direct, unsigned | {' | '.join(ratio_heads)} |",
            "|---|---:|" + "---:|" * (len(heads) + 1 + len(ratio_heads)),
        ]
        for size in args.sizes:
            for sessions in args.sessions:
                cells = [spread(figures(p, True, sessions, size, what)) for p in args.paths]
                cells.append(spread(figures("direct", False, sessions, size, what)))
                cells += [ratio(*pair) for pair in ratios(lambda p, s, w, n=sessions, z=size: figures(p, s, n, z, w))]
                lines.append(f"| {size // 1024} KB | {sessions} | {' | '.join(cells)} |")
        return lines

    accepted = "accepted_per_second"
    lines = [
        f"Accepted msg/s, median (min-max) over {rounds} rounds, {args.messages} messages or "
        f"{args.max_seconds:g} s per run:",
        "",
        *table(
            accepted,
            ["load balancer / direct", "signed / unsigned"],
            lambda f: [
                (f("lb", True, accepted), f("direct", True, accepted)),
                (f("direct", True, accepted), f("direct", False, accepted)),
            ],
        ),
        "",
        "Delivered msg/s (first submission to the last message stored at the sink), median (min-max):",
        "",
        *table(
            "delivered_per_second",
            ["delivered / accepted, direct"],
            lambda f: [(f("direct", True, "delivered_per_second"), f("direct", True, accepted))],
        ),
    ]
    lost = sum(r.lost for r in runs)
    refused = sum(r.refused for r in runs)
    accepted = sum(r.accepted for r in runs)
    duplicated = sum(r.duplicated for r in runs)
    flaps = sum(r.transitions for r in runs)
    lines += [
        "",
        f"{accepted} accepted, {refused} refused, {lost} lost, {duplicated} duplicated, "
        f"{flaps} VRRP transitions over {len(runs)} runs.",
    ]
    return "\n".join(lines)


def profile_table(runs: list[Run], top: int = 12) -> str:
    """CPU milliseconds per accepted message, per container and process: direct signed and unsigned, load balancer."""
    lines = []
    for path, signed in (("direct", True), ("direct", False), ("lb", True)):
        chosen = [r for r in runs if r.config.path == path and r.config.signed == signed and r.cpu]
        if not chosen:
            continue
        total: Counter = Counter()
        messages = sum(r.accepted for r in chosen)
        for run in chosen:
            for key, seconds in run.cpu.items():
                where = key.split("/", 1)[0]
                if where == "host":  # the load client, the kernel's workers, anything else on the machine
                    key = "host (load client, kernel, the rest)"
                elif where == "?":
                    key = "containers outside the lab"
                total[key] += seconds
        lines += [
            "",
            f"CPU per accepted message, {PATHS[path]}, {'signed' if signed else 'unsigned'} ({messages} messages):",
            "",
            "| container/process | CPU ms per message |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {1000 * v / messages:.2f} |" for k, v in total.most_common(top)]
        lines.append(f"| all | {1000 * sum(total.values()) / messages:.2f} |")
    return "\n".join(lines)


def numbers(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be a comma-separated list of whole numbers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{name} must list positive numbers")
    return values


def parse(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=lambda t: numbers(t, "--sessions"), default=[1, 8, 32])
    parser.add_argument("--sizes", type=lambda t: numbers(t, "--sizes"), default=[2048, 51200])
    parser.add_argument("--paths", type=lambda t: [p for p in t.split(",") if p], default=list(PATHS))
    parser.add_argument("--messages", type=int, default=1000, help="per run, at most")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="per run, at most")
    parser.add_argument("--drain-seconds", type=float, default=120.0, help="wait for the queues after a run")
    parser.add_argument("--profile", action="store_true", help="CPU per message by container and process")
    parser.add_argument("--json", type=Path, help="write every run's figures to this file")
    parser.add_argument("--inventory", type=Path, default=REPO / "inventories" / "lab" / "hosts.yml")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.paths) - set(PATHS))
    if unknown:
        parser.error(f"unknown path(s) {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    if "direct" not in args.paths:
        args.paths.append("direct")  # the reference every ratio is taken against
    if args.rounds < 1 or args.messages < 1 or args.max_seconds <= 0 or args.drain_seconds <= 0:
        parser.error("--rounds, --messages, --max-seconds and --drain-seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    the_lab = Lab(args.inventory, args.drain_seconds)
    meter = CpuMeter(the_lab.hosts) if args.profile else None
    if not the_lab.wait_drained():
        raise MailhaError("the relays' queues are not empty; let them drain (mailha status) before measuring")
    print(f"active relay {the_lab.active.name}; {args.rounds} rounds of {len(plan(args))} runs", flush=True)
    runs: list[Run] = []
    began = time.monotonic()
    try:
        for round_number in range(1, args.rounds + 1):
            signing = True
            for config in plan(args):
                if config.signed != signing:
                    the_lab.set_signing(config.signed)
                    signing = config.signed
                run = one_run(the_lab, config, args, meter)
                runs.append(run)
                print(
                    f"round {round_number} {config.label}: {run.accepted_per_second:6.0f} accepted/s "
                    f"{run.delivered_per_second:6.0f} delivered/s ({run.accepted} accepted, {run.refused} refused, "
                    f"{run.lost} lost, {run.duplicated} duplicated, {run.transitions} VRRP transitions)",
                    flush=True,
                )
            if not signing:
                the_lab.set_signing(True)
    finally:
        the_lab.set_signing(True)
    print(f"\n{len(runs)} runs in {time.monotonic() - began:.0f} s\n")
    print(tables(runs, args))
    if meter:
        print(profile_table(runs))
    if args.json:
        args.json.write_text(
            json.dumps([{**r.__dict__, "config": r.config.__dict__} for r in runs], indent=1, sort_keys=True) + "\n"
        )
    return 1 if any(r.lost or r.duplicated for r in runs) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MailhaError as exc:
        print(f"benchmark stopped: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("benchmark stopped: interrupted; signing was restored", file=sys.stderr)
        sys.exit(1)
