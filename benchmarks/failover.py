"""Failover benchmark on the lab: every scenario N times, with the project's
keepalived timings and with stock ones, figures side by side.

    .venv/bin/python benchmarks/failover.py [--runs 3] [--scenarios mta-crash,...] [--rate 20] [--duration 15]

Prints, per scenario and profile: median and worst client-observed outage
(first refused submission after the fault to the first accepted one),
detection time, floating-IP move time, and total lost and duplicated
messages; then the stock/tuned ratio. A benchmark, not a test: it asserts
nothing, the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from mailha import drill, pair

REPO = Path(__file__).resolve().parent.parent

PROFILES = ("tuned", "stock")


def apply_profile(profile: str, inventory: Path) -> None:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            str(REPO / "benchmarks" / "keepalived-timings.yml"),
            "-e",
            f"mailha_benchmark_profile={profile}",
        ],
        check=True,
        env=env,
        capture_output=True,
    )


def figures(report: dict) -> dict[str, float]:
    f = report["figures"]

    def number(key):
        return float("nan") if f.get(key) is None else float(f[key])

    return {
        "outage": number("outage_seconds"),
        "detect": number("detection_seconds"),
        "move": number("floating_ip_moved_seconds"),
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
        "lost": sum(r["lost"] for r in runs),
        "duplicated": sum(r["duplicated"] for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenarios", default="mta-crash,network-partition,keepalived-crash,host-down")
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--inventory", type=Path, default=REPO / "inventories" / "lab" / "hosts.yml")
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    the_pair = pair.load(args.inventory)
    results: dict[tuple[str, str], dict[str, float]] = {}
    try:
        for profile in PROFILES:
            apply_profile(profile, args.inventory)
            for scenario in scenarios:
                runs = []
                for number in range(args.runs):
                    settings = drill.DrillSettings(scenario=scenario, rate=args.rate, duration=args.duration)
                    report, _ = drill.run_drill(the_pair, settings, lambda _text: None)
                    runs.append(figures(report))
                    print(
                        f"{profile:5} {scenario:18} run {number + 1}: "
                        + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()),
                        flush=True,
                    )
                results[(profile, scenario)] = summarise(runs)
    finally:
        apply_profile("tuned", args.inventory)

    header = (
        f"{'scenario':18} {'profile':7} {'outage median':>13} {'outage worst':>12} {'detect':>7} "
        f"{'IP move':>7} {'lost':>5} {'dup':>4}"
    )
    print("\n" + header)
    for scenario in scenarios:
        for profile in PROFILES:
            r = results[(profile, scenario)]
            print(
                f"{scenario:18} {profile:7} {r['outage_median']:12.2f}s {r['outage_worst']:11.2f}s "
                f"{r['detect_median']:6.2f}s {r['move_median']:6.2f}s {r['lost']:5.0f} {r['duplicated']:4.0f}"
            )
        tuned, stock = results[("tuned", scenario)], results[("stock", scenario)]
        ratio = stock["outage_median"] / tuned["outage_median"] if tuned["outage_median"] else float("inf")
        print(f"{scenario:18} {'ratio':7} {ratio:12.1f}x  (stock / tuned median outage)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
