"""Failover benchmark in the lab's simulated cloud mode (make lab-as-cloud):
the outage as a function of the cloud API's assign latency.

    .venv/bin/python benchmarks/cloud_failover.py [--latencies 0.5,2,5] [--runs 3] [--scenarios mta-crash,host-down]

For each latency the fake Hetzner API is restarted with it (python -m
mailha.lab_cloud latency S; same token, certificate and state), then each
scenario runs N drills. Prints a line per run, then one Markdown table per
scenario and latency: the median and worst client-observed outage (the
first refusal to the first acceptance after the fault), the median and
worst slowest accepted submission through the floating IP (a client that
waits for the API's routing is stalled, not refused), the median seconds
from the fault to the fake's assign to the standby, and over all runs the
submissions refused through the load balancer and through the floating IP
and the lost and duplicated messages. The fake is left at the latency
`make lab-as-cloud` started it with. A benchmark, not a test: it asserts
nothing, the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from failover import COUNTS, figures, summarise

from mailha import drill, lab_cloud, pair
from mailha.errors import MailhaError

REPO = Path(__file__).resolve().parent.parent

ROWS = (
    ("outage_median", "outage, median (s)"),
    ("outage_worst", "outage, worst (s)"),
    ("stall_median", "slowest via FIP, median (s)"),
    ("stall_worst", "slowest via FIP, worst (s)"),
    ("routed_median", "API routed, median (s)"),
    ("detect_median", "detection, median (s)"),
    ("move_median", "floating IP moved, median (s)"),
    ("refused_lb", "refused via LB"),
    ("refused_fip", "refused via FIP"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
)


def routes() -> list[str]:
    path = lab_cloud.cloud_dir() / "routes.log"
    return [line for line in path.read_text().splitlines() if " routed " in line] if path.exists() else []


def routed_at(line: str) -> float:
    stamp, millis = line.split()[0].split(".")
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + int(millis) / 1000


def cloud_figures(report: dict, floating_ip: str, moved: list[str]) -> dict[str, float]:
    """The stall through the floating IP and when the API routed it to another relay, after the fault."""
    fault_at = next((e["at"] for e in report["timeline"]["events"] if e["name"] == "fault_injected"), None)
    accepted = [a for a in report["attempts"] if a["target"] == f"{floating_ip}:25" and a["code"] == 250]
    after = [routed_at(line) - fault_at for line in moved if fault_at is not None and routed_at(line) >= fault_at]
    return {
        "stall": max((a["finished"] - a["started"] for a in accepted), default=float("nan")),
        "routed": after[0] if after else float("nan"),
    }


def table(results: dict, scenarios: list[str], latencies: list[float], runs: int) -> str:
    lines = [
        f"| scenario ({runs} runs each) | API latency (s) | " + " | ".join(label for _, label in ROWS) + " |",
        "|---|---:|" + "---:|" * len(ROWS),
    ]
    for scenario in scenarios:
        for latency in latencies:
            row = results[(scenario, latency)]
            cells = [f"{row[k]:.0f}" if k in COUNTS else f"{row[k]:.2f}" for k, _ in ROWS]
            lines.append(f"| {scenario} | {latency:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latencies", default="0.5,2,5")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenarios", default="mta-crash,host-down")
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--inventory", type=Path, default=REPO / "inventories" / "lab-cloud" / "hosts.yml")
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(scenarios) - set(drill.SCENARIOS))
    try:
        latencies = [float(text) for text in args.latencies.split(",") if text]
    except ValueError:
        latencies = []
    if unknown or args.runs < 1 or not latencies or not all(0 <= x <= lab_cloud.MAX_LATENCY for x in latencies):
        print(
            f"error: unknown scenario(s) {', '.join(unknown)}"
            if unknown
            else f"error: --runs at least 1, --latencies seconds from 0 to {lab_cloud.MAX_LATENCY}, comma-separated"
        )
        return 2
    the_pair = pair.load(args.inventory)
    started_with = lab_cloud.load_settings()["latency"]
    results: dict[tuple[str, float], dict[str, float]] = {}
    try:
        for latency in latencies:
            lab_cloud.relaunch(latency)
            print(f"== API latency {latency:g} s", flush=True)
            for scenario in scenarios:
                runs = []
                for number in range(args.runs):
                    settings = drill.DrillSettings(scenario=scenario, rate=args.rate, duration=args.duration)
                    before = len(routes())
                    report, _ = drill.run_drill(the_pair, settings, lambda _text: None)
                    runs.append(
                        figures(report, f"{the_pair.balancer['mailha_address']}:25")
                        | cloud_figures(report, the_pair.floating_ip, routes()[before:])
                    )
                    print(
                        f"{latency:4g} s {scenario:10} run {number + 1}: "
                        + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()),
                        flush=True,
                    )
                finite = {k: [r[k] for r in runs if r[k] == r[k]] or [float("nan")] for k in ("stall", "routed")}
                results[(scenario, latency)] = summarise(runs) | {
                    "stall_median": statistics.median(finite["stall"]),
                    "stall_worst": max(finite["stall"]),
                    "routed_median": statistics.median(finite["routed"]),
                }
    finally:
        lab_cloud.relaunch(started_with)
    print(f"\nrate {args.rate:g} msg/s, {args.duration:g} s per run, simulated cloud mode\n")
    print(table(results, scenarios, latencies, args.runs))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MailhaError as exc:
        print(f"benchmark stopped: {exc.message}", file=sys.stderr)
        sys.exit(1)
