"""The benchmark runner cannot rot: a tiny run must produce every scenario and figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_runner_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--tiny", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Targets" in done.stdout
    results = json.loads(out.read_text())
    assert results["mode"] == "tiny"
    assert {"python", "cores"} <= set(results["machine"])
    scenarios = results["scenarios"]
    assert set(scenarios) == {
        "throughput",
        "memory",
        "single_calls",
        "models",
        "faults",
        "fleet",
        "cli",
        "refusals",
    }
    throughput = scenarios["throughput"]
    assert {"emulator_capacity", "baseline_b", "by_concurrency"} <= set(throughput)
    for row in throughput["by_concurrency"]:
        for key in (
            "sdk_items_per_second",
            "a_items_per_second",
            "sdk_over_a",
            "sdk_share_of_bound",
            "sdk_cpu_ms_per_1000",
            "a_cpu_ms_per_1000",
            "cpu_sdk_over_a",
        ):
            assert set(row[key]) == {"median", "min", "max"}, key
        assert row["bound_items_per_second"] > 0
    memory = scenarios["memory"]
    assert {"ratio", "peak_held", "held_limit", "all_succeeded", "sdk_over_a"} <= set(memory)
    assert memory["all_succeeded"]
    assert memory["peak_held"] <= memory["held_limit"]
    for key in (
        "sdk_p50_us",
        "raw_p50_us",
        "overhead_p50_us",
        "overhead_p99_us",
        "tracing_off_cost_p50_us",
    ):
        assert set(scenarios["single_calls"][key]) == {"median", "min", "max"}
    for key in ("to_wire_us", "from_wire_us"):
        assert {"sdk", "hand", "ratio"} <= set(scenarios["models"][key])
    faults = scenarios["faults"]
    assert faults["accounted"]
    assert faults["every_item_applied"]
    assert "share_of_fault_free" in faults
    fleet = scenarios["fleet"]
    runs = fleet["runs"]
    assert {"a", "b"} <= set(runs)  # (c) needs redis-server, which CI installs
    for run in runs.values():
        assert run["every_item_succeeded"]
        assert run["requests_seen"] > 0
        assert {"refused_429", "server_rps_share_of_limit", "share_of_bound"} <= set(run)
    cli = scenarios["cli"]
    assert cli["items"] > 0
    for key in ("cli_items_per_second", "library_items_per_second", "cli_over_library"):
        assert set(cli[key]) == {"median", "min", "max"}, key
        assert set(cli["at_latency"][key]) == {"median", "min", "max"}, key
    refusals = scenarios["refusals"]
    assert refusals["refused_items"] == round(refusals["items"] * refusals["refused_share"])
    assert set(refusals["refused_over_ok"]) == {"median", "min", "max"}
    assert len(results["targets"]) == 10 + 2 * ("c" in runs)
