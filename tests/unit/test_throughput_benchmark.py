"""The throughput benchmark's tables and options (benchmarks/throughput.py), without a lab."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("throughput_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def run(bench, path, signed, accepted, delivered, lost=0):
    config = bench.Config(path, signed, 8, 2048)
    return bench.Run(config, 1000, 0, lost, 0, 0, accepted, delivered, {})


def test_tables_give_medians_spreads_and_the_three_ratios(bench):
    args = bench.parse(["--sessions", "8", "--sizes", "2048"])
    runs = [
        *(run(bench, "lb", True, a, a) for a in (90, 95, 100)),
        *(run(bench, "fip", True, a, a) for a in (99, 100, 101)),
        *(run(bench, "direct", True, a, d) for a, d in ((100, 90), (100, 90), (120, 80))),
        *(run(bench, "direct", False, a, a) for a in (200, 250, 300)),
    ]
    text = bench.tables(runs, args)
    accepted, delivered = (line for line in text.splitlines() if line.startswith("| 2 KB | 8 |"))
    # lb 95 / direct 100; signed 100 / unsigned 250; delivered 90 / accepted 100
    assert accepted == "| 2 KB | 8 | 95 (90-100) | 100 (99-101) | 100 (100-120) | 250 (200-300) | 95% | 40% |"
    assert delivered == "| 2 KB | 8 | 95 (90-100) | 100 (99-101) | 90 (80-90) | 250 (200-300) | 90% |"
    assert "12000 accepted, 0 refused, 0 lost, 0 duplicated, 0 VRRP transitions over 12 runs." in text


def test_plan_runs_unsigned_last_so_signing_is_switched_twice_a_round(bench):
    args = bench.parse(["--sessions", "1,8", "--sizes", "2048,51200"])
    plan = bench.plan(args)
    assert len(plan) == 3 * 2 * 2 + 2 * 2
    signing = [c.signed for c in plan]
    assert signing == sorted(signing, reverse=True)


@pytest.mark.parametrize(
    "argv",
    [["--paths", "lb,nowhere"], ["--sessions", "0"], ["--sizes", "two"], ["--rounds", "0"], ["--messages", "-1"]],
)
def test_bad_options_exit_2_with_one_line(bench, argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        bench.parse(argv)
    assert stopped.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_direct_path_is_always_measured(bench):
    assert bench.parse(["--paths", "lb"]).paths == ["lb", "direct"]
