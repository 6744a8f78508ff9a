"""Failover benchmark on the lab: every scenario N times, with the project's
keepalived timings and with stock ones, figures side by side.

    .venv/bin/python benchmarks/failover.py [--runs 3] [--scenarios mta-crash,...] [--rate 20] [--duration 15]

Prints a line per run, then one Markdown table: per scenario, the median
and worst client-observed outage (first refused submission after the fault
to the first accepted one), median detection and floating-IP move times,
the median and worst seconds with two holders of the floating IP, and over
all runs the submissions refused through the load balancer and through the
floating IP and the lost and duplicated messages, for the tuned and the
stock profile side by side with the stock/tuned ratio. A benchmark, not a
test: it asserts nothing, the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from mailha import drill, pair
from mailha.errors import MailhaError

REPO = Path(__file__).resolve().parent.parent

PROFILES = ("tuned", "stock")


def apply_profile(profile: str, inventory: Path) -> None:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            str(REPO / "playbooks" / "benchmark-keepalived-timings.yml"),
            "-e",
            f"mailha_benchmark_profile={profile}",
        ],
        check=True,
        env=env,
        capture_output=True,
    )


def figures(report: dict, balancer: str) -> dict[str, float]:
    """The run's figures; `balancer` is the load balancer's target ("address:25")."""
    f = report["figures"]

    def number(key):
        return float("nan") if f.get(key) is None else float(f[key])

    return {
        "outage": number("outage_seconds"),
        "detect": number("detection_seconds"),
        "move": number("floating_ip_moved_seconds"),
        "split": number("split_seconds"),
        "refused_lb": f.get("refused_by_target", {}).get(balancer, 0),
        "refused_fip": sum(n for target, n in f.get("refused_by_target", {}).items() if target != balancer),
        "lost": f["lost"],
        "duplicated": f["duplicated"],
    }


def summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    def finite(key):
        return [r[key] for r in runs if r[key] == r[key]] or [float("nan")]

    return {
        "outage_median": statistics.median(finite("outage")),
        "outage_worst": max(finite("outage")),
        "detect_median": statistics.median(finite("detect")),
        "move_median": statistics.median(finite("move")),
        "split_median": statistics.median(finite("split")),
        "split_worst": max(finite("split")),
        "refused_lb": sum(r["refused_lb"] for r in runs),
        "refused_fip": sum(r["refused_fip"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "duplicated": sum(r["duplicated"] for r in runs),
    }


ROWS = (
    ("outage_median", "outage, median (s)"),
    ("outage_worst", "outage, worst (s)"),
    ("detect_median", "detection, median (s)"),
    ("move_median", "floating IP moved, median (s)"),
    ("split_median", "two holders, median (s)"),
    ("split_worst", "two holders, worst (s)"),
    ("refused_lb", "refused via load balancer, all runs"),
    ("refused_fip", "refused via floating IP, all runs"),
    ("lost", "lost, all runs"),
    ("duplicated", "duplicated, all runs"),
)

COUNTS = ("refused_lb", "refused_fip", "lost", "duplicated")


def ratio(stock: float, tuned: float) -> str:
    if stock != stock or tuned != tuned:
        return "-"
    if tuned == 0:
        return "-" if stock == 0 else "inf"
    return f"{stock / tuned:.1f}x"


def table(results: dict, scenarios: list[str], runs: int) -> str:
    """One Markdown table: per scenario and figure, tuned, stock and stock/tuned."""
    lines = [
        f"| scenario ({runs} runs each) | figure | tuned | stock | stock / tuned |",
        "|---|---|---:|---:|---:|",
    ]
    for scenario in scenarios:
        tuned, stock = results[("tuned", scenario)], results[("stock", scenario)]
        for key, label in ROWS:
            t, s = tuned[key], stock[key]
            if key in COUNTS:  # whole numbers, and no ratio
                lines.append(f"| {scenario} | {label} | {t:.0f} | {s:.0f} | - |")
            else:
                lines.append(f"| {scenario} | {label} | {t:.2f} | {s:.2f} | {ratio(s, t)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenarios", default="mta-crash,keepalived-crash,network-partition,host-down,vrrp-blocked")
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--inventory", type=Path, default=REPO / "inventories" / "lab" / "hosts.yml")
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(scenarios) - set(drill.SCENARIOS))
    if unknown or args.runs < 1:
        print(f"error: unknown scenario(s) {', '.join(unknown)}" if unknown else "error: --runs must be at least 1")
        return 2
    the_pair = pair.load(args.inventory)
    results: dict[tuple[str, str], dict[str, float]] = {}
    try:
        for profile in PROFILES:
            print(f"== profile {profile}", flush=True)
            apply_profile(profile, args.inventory)
            for scenario in scenarios:
                runs = []
                for number in range(args.runs):
                    settings = drill.DrillSettings(scenario=scenario, rate=args.rate, duration=args.duration)
                    report, _ = drill.run_drill(the_pair, settings, lambda _text: None)
                    runs.append(figures(report, f"{the_pair.balancer['mailha_address']}:25"))
                    print(
                        f"{profile:5} {scenario:18} run {number + 1}: "
                        + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()),
                        flush=True,
                    )
                results[(profile, scenario)] = summarise(runs)
    finally:
        apply_profile("tuned", args.inventory)
    print(f"\nrate {args.rate:g} msg/s, {args.duration:g} s per run\n")
    print(table(results, scenarios, args.runs))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MailhaError as exc:
        print(f"benchmark stopped: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except subprocess.CalledProcessError as exc:
        print(
            f"benchmark stopped: {' '.join(exc.cmd[-3:])} failed: {(exc.stderr or b'').decode()[-300:]}",
            file=sys.stderr,
        )
        sys.exit(1)
