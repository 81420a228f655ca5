"""Run every benchmark scenario, print one table, write the figures as JSON.

``python -m benchmarks [--quick] [--json PATH] [--chart PATH]``. The emulator
serves from its own process with a fixed latency; each client measurement is a
fresh process. Every figure is the median of several runs with its min and
max, and every comparison is a ratio of figures from this run, taken
interleaved (A B A B) so a noisy machine does not fake a win.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from . import _scenarios
from ._fleet import fleet
from ._fleet import table as fleet_table


@attrs.frozen
class Sizes:
    items: int
    memory_small: int
    memory_large: int
    single_calls: int
    reps: int
    concurrencies: tuple[int, ...] = (1, 8, 32)
    chunk: int = 100
    latency_ms: int = 20
    #: Share of ``items`` for the latency-bound runs (concurrency 1, the naive
    #: loop): their rate does not depend on the size, only their duration does.
    sequential_share: float = 1.0
    #: Scenario 7: the server's limit (requests/s) and the items each of 4 processes sends.
    fleet_limit: float = 100.0
    fleet_items: int = 4000
    fleet_chunk: int = 10

    def items_at(self, concurrency: int) -> int:
        share = self.sequential_share if concurrency == 1 else 1.0
        return max(self.chunk, int(self.items * share))


FULL = Sizes(items=100_000, memory_small=100_000, memory_large=1_000_000, single_calls=5000, reps=3)
QUICK = Sizes(
    items=20_000,
    memory_small=10_000,
    memory_large=50_000,
    single_calls=500,
    reps=2,
    sequential_share=0.25,
    fleet_limit=50.0,
    fleet_items=1000,
)
TINY = Sizes(
    items=600,
    memory_small=300,
    memory_large=1200,
    single_calls=50,
    reps=1,
    concurrencies=(1, 8),
    fleet_limit=50.0,
    fleet_items=60,
)

TARGETS = {
    "throughput_vs_a": 0.97,
    "share_of_bound_c8": 0.90,
    "cpu_vs_a": 1.2,
    "memory_ratio": 1.1,
    "memory_vs_a": 1.1,
    "single_call_overhead_p50_us": 50.0,
    "single_call_overhead_p99_us": 150.0,
    "from_wire_vs_hand": 4.0,
    "cli_vs_library": 0.85,
    "refused_vs_ok": 1.3,
    "fleet_shared_429_share": 0.01,
    "fleet_shared_accepted_share": 0.90,
}


# -- processes -------------------------------------------------------------------------------


@contextlib.contextmanager
def emulator(
    *, awards: int, latency_ms: int = 0, extra: tuple[str, ...] = ()
) -> Iterator[dict[str, Any]]:
    """An emulator in its own process, seeded with ``awards`` records; yields its details."""
    apc = 4
    customers = max(1, -(-awards // apc))
    command = [
        sys.executable,
        "-m",
        "capillary_async.testing",
        "--port",
        "0",
        "--seed",
        "1",
        "--customers",
        str(customers),
        "--awards-per-customer",
        str(apc),
        "--redemptions",
        "1",
        "--max-items",
        "1000",
        "--latency-ms",
        str(latency_ms),
        *extra,
    ]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            for _ in range(20):
                match = re.search(r"on (http://\S+)", process.stderr.readline())
                if match:
                    break
            else:
                raise RuntimeError("the emulator did not start")
            yield {"url": match.group(1), "seed": 1, "customers": customers, "apc": apc}
        finally:
            process.terminate()
            process.wait(timeout=20)


def run(workload: str, server: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """One workload in a fresh process; its JSON result."""
    pairs = [f"{k}={v}" for k, v in {**(server or {}), **options}.items()]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._workloads", workload, *pairs],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{workload} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/_emulator/stats", timeout=10) as response:
        data: dict[str, Any] = json.load(response)
    return data


def figure(values: list[float]) -> dict[str, float]:
    """Median with min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def interleaved(
    reps: int, **variants: Callable[[], dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Run each variant ``reps`` times, alternating: A B A B."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, call in variants.items():
            results[name].append(call())
    return results


# -- scenarios -----------------------------------------------------------------------------------


def throughput_and_cpu(sizes: Sizes, log: Callable[[str], None]) -> dict[str, Any]:
    """Scenarios 1 and 2: items/s at each concurrency; client CPU per 1,000 items."""
    out: dict[str, Any] = {
        "items": sizes.items,
        "chunk": sizes.chunk,
        "latency_ms": sizes.latency_ms,
    }
    with emulator(awards=sizes.items, latency_ms=0) as fast:
        log("measuring the emulator's own capacity")
        capacity = interleaved(
            sizes.reps,
            a=lambda: run("raw_bulk", fast, n=sizes.items, chunk=sizes.chunk, concurrency=64),
        )["a"]
        out["emulator_capacity"] = figure([r["items"] / r["seconds"] for r in capacity])
    rows = []
    with emulator(awards=sizes.items, latency_ms=sizes.latency_ms) as server:
        log("naive loop, baseline (b)")
        naive = interleaved(
            sizes.reps,
            b=lambda: run("naive_bulk", server, n=sizes.items_at(1), chunk=sizes.chunk),
        )["b"]
        out["baseline_b"] = figure([r["items"] / r["seconds"] for r in naive])
        for concurrency in sizes.concurrencies:
            log(f"concurrency {concurrency}: SDK and baseline (a), interleaved")
            n = sizes.items_at(concurrency)
            options = {"n": n, "chunk": sizes.chunk, "concurrency": concurrency}
            results = interleaved(
                sizes.reps,
                sdk=lambda options=options: run("sdk_bulk", server, **options),
                a=lambda options=options: run("raw_bulk", server, **options),
            )
            sdk_rates = [r["items"] / r["seconds"] for r in results["sdk"]]
            a_rates = [r["items"] / r["seconds"] for r in results["a"]]
            ratios = [s / a for s, a in zip(sdk_rates, a_rates, strict=True)]
            cpu_sdk = [1e6 * r["cpu_seconds"] / r["items"] for r in results["sdk"]]
            cpu_a = [1e6 * r["cpu_seconds"] / r["items"] for r in results["a"]]
            bound = min(
                concurrency * sizes.chunk / (sizes.latency_ms / 1000),
                out["emulator_capacity"]["median"],
            )
            assert all(r["succeeded"] == n for r in results["sdk"]), results["sdk"]
            rows.append(
                {
                    "concurrency": concurrency,
                    "items": n,
                    "sdk_items_per_second": figure(sdk_rates),
                    "a_items_per_second": figure(a_rates),
                    "sdk_over_a": figure(ratios),
                    "bound_items_per_second": bound,
                    "sdk_share_of_bound": figure([s / bound for s in sdk_rates]),
                    "sdk_cpu_ms_per_1000": figure(cpu_sdk),
                    "a_cpu_ms_per_1000": figure(cpu_a),
                    "cpu_sdk_over_a": figure([s / a for s, a in zip(cpu_sdk, cpu_a, strict=True)]),
                }
            )
    out["by_concurrency"] = rows
    return out


def memory(sizes: Sizes, log: Callable[[str], None]) -> dict[str, Any]:
    """Scenario 3: peak RSS streaming many items against streaming few."""
    with emulator(awards=min(sizes.memory_small, 100_000)) as server:
        log(f"memory: streaming {sizes.memory_large:,} against {sizes.memory_small:,} items")
        options = {"chunk": sizes.chunk, "concurrency": 8}
        results = interleaved(
            max(1, sizes.reps - 1),
            small=lambda: run("sdk_stream", server, n=sizes.memory_small, **options),
            large=lambda: run("sdk_stream", server, n=sizes.memory_large, **options),
            a=lambda: run("raw_bulk", server, n=sizes.memory_large, **options),
        )
    small = [r["maxrss_kb"] for r in results["small"]]
    large = [r["maxrss_kb"] for r in results["large"]]
    a = [r["maxrss_kb"] for r in results["a"]]
    return {
        "small_items": sizes.memory_small,
        "large_items": sizes.memory_large,
        "small_peak_rss_mb": figure([k / 1024 for k in small]),
        "large_peak_rss_mb": figure([k / 1024 for k in large]),
        "ratio": figure([b / a for a, b in zip(small, large, strict=True)]),
        "a_peak_rss_mb": figure([k / 1024 for k in a]),
        "sdk_over_a": figure([s / b for s, b in zip(large, a, strict=True)]),
        "peak_held": max(r["peak_held"] for r in results["large"]),
        "held_limit": results["large"][0]["held_limit"],
        "all_succeeded": all(r["succeeded"] == r["items"] for r in results["large"]),
    }


def single_calls(sizes: Sizes, log: Callable[[str], None]) -> dict[str, Any]:
    """Scenario 4: sequential update_redemption, SDK against raw aiohttp."""
    with emulator(awards=4) as server:
        log(f"single calls: {sizes.single_calls:,} sequential update_redemption")
        results = interleaved(
            sizes.reps,
            sdk=lambda: run("sdk_single", server, n=sizes.single_calls),
            untraced=lambda: run("sdk_single_untraced", server, n=sizes.single_calls),
            raw=lambda: run("raw_single", server, n=sizes.single_calls),
        )
    out: dict[str, Any] = {"calls": sizes.single_calls}
    for q in ("p50", "p99"):
        sdk = [r["latencies_us"][q] for r in results["sdk"]]
        raw = [r["latencies_us"][q] for r in results["raw"]]
        out[f"sdk_{q}_us"] = figure(sdk)
        out[f"raw_{q}_us"] = figure(raw)
        out[f"overhead_{q}_us"] = figure([s - r for s, r in zip(sdk, raw, strict=True)])
        # OpenTelemetry's API installed with no SDK, against no tracing code at all.
        untraced = [r["latencies_us"][q] for r in results["untraced"]]
        out[f"tracing_off_cost_{q}_us"] = figure(
            [s - u for s, u in zip(sdk, untraced, strict=True)]
        )
    return out


def models(sizes: Sizes, log: Callable[[str], None]) -> dict[str, Any]:
    """Scenario 5: to_wire / from_wire of 100 items against hand-written dict code."""
    log("models")
    runs = [run("models", repeat=20 if sizes is TINY else 200) for _ in range(sizes.reps)]
    out: dict[str, Any] = {}
    for key in ("to_wire_us", "from_wire_us"):
        sdk = [r[key]["sdk"] for r in runs]
        hand = [r[key]["hand"] for r in runs]
        out[key] = {
            "sdk": figure(sdk),
            "hand": figure(hand),
            "ratio": figure([s / h for s, h in zip(sdk, hand, strict=True)]),
        }
    out["validate_100_us"] = figure([r["validate_us"]["sdk"] for r in runs])
    return out


def faults(sizes: Sizes, clean_c8: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Scenario 6: concurrency 8 with 5% 503s and 2% 429s (Retry-After: 1)."""
    extra = ("--fault-503", "0.05", "--fault-429", "0.02", "--retry-after", "1")
    with emulator(awards=sizes.items, latency_ms=sizes.latency_ms, extra=extra) as server:
        log("under faults: 5% 503, 2% 429 with Retry-After: 1")
        result = run("sdk_bulk", server, n=sizes.items, chunk=sizes.chunk, concurrency=8)
        audit = stats(server["url"])
    rate = result["items"] / result["seconds"]
    return {
        "items_per_second": rate,
        "share_of_fault_free": rate / clean_c8,
        "requests": result["requests"],
        "retried_requests": result["retried_requests"],
        "succeeded": result["succeeded"],
        "accounted": result["items"] == sizes.items,
        "emulator_faults": audit["faults"],
        "records_changed": audit["records_changed"],
        "every_item_applied": audit["records_changed"] == result["succeeded"] == sizes.items,
    }


# -- output -------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    def f(value: dict[str, float], fmt: str = "{:,.0f}") -> str:
        return (
            f"{fmt.format(value['median'])} ({fmt.format(value['min'])}-{fmt.format(value['max'])})"
        )

    lines = [
        f"capillary_async benchmarks, {results['machine']['python']} on "
        f"{results['machine']['cores']} cores, {results['date']} ({results['mode']})",
        "median (min-max) of interleaved runs; ratios are SDK / baseline from the same run",
        "",
    ]
    t = results["scenarios"]["throughput"]
    lines.append(
        f"1. Bulk throughput, {t['items']:,} items, chunk {t['chunk']}, emulator latency "
        f"{t['latency_ms']} ms; emulator capacity {f(t['emulator_capacity'])} items/s; "
        f"naive loop (b) {f(t['baseline_b'])} items/s"
    )
    lines.append(
        f"   {'conc':>4}  {'SDK items/s':>24}  {'baseline (a) items/s':>24}  "
        f"{'SDK/(a)':>18}  {'bound':>9}  {'SDK/bound':>18}"
    )
    for row in t["by_concurrency"]:
        lines.append(
            f"   {row['concurrency']:>4}  {f(row['sdk_items_per_second']):>24}  "
            f"{f(row['a_items_per_second']):>24}  {f(row['sdk_over_a'], '{:.2f}'):>18}  "
            f"{row['bound_items_per_second']:>9,.0f}  {f(row['sdk_share_of_bound'], '{:.2f}'):>18}"
        )
    lines.append("2. Client CPU, ms per 1,000 items (user+sys of the client process)")
    for row in t["by_concurrency"]:
        lines.append(
            f"   conc {row['concurrency']:>3}: SDK {f(row['sdk_cpu_ms_per_1000'], '{:.1f}')}, "
            f"(a) {f(row['a_cpu_ms_per_1000'], '{:.1f}')}, "
            f"SDK/(a) {f(row['cpu_sdk_over_a'], '{:.2f}')}"
        )
    m = results["scenarios"]["memory"]
    lines.append(
        f"3. Memory: peak RSS streaming {m['large_items']:,} items {f(m['large_peak_rss_mb'], '{:.1f}')} MB "
        f"vs {m['small_items']:,} items {f(m['small_peak_rss_mb'], '{:.1f}')} MB: ratio "
        f"{f(m['ratio'], '{:.2f}')}; held items peak {m['peak_held']:,} (bound {m['held_limit']:,}); "
        f"baseline (a) on the large stream {f(m['a_peak_rss_mb'], '{:.1f}')} MB: SDK/(a) "
        f"{f(m['sdk_over_a'], '{:.2f}')}"
    )
    s = results["scenarios"]["single_calls"]
    lines.append(
        f"4. Single calls ({s['calls']:,} sequential update_redemption, zero latency): "
        f"p50 SDK {f(s['sdk_p50_us'])} us vs raw {f(s['raw_p50_us'])} us, overhead "
        f"{f(s['overhead_p50_us'])} us; p99 overhead {f(s['overhead_p99_us'])} us; "
        f"tracing off (OpenTelemetry API, no SDK) costs {f(s['tracing_off_cost_p50_us'], '{:.1f}')} us "
        "at p50"
    )
    md = results["scenarios"]["models"]
    lines.append(
        f"5. Models, 100 items: to_wire {f(md['to_wire_us']['sdk'])} us vs hand "
        f"{f(md['to_wire_us']['hand'])} us (x{md['to_wire_us']['ratio']['median']:.1f}); "
        f"from_wire {f(md['from_wire_us']['sdk'])} us vs hand {f(md['from_wire_us']['hand'])} us "
        f"(x{md['from_wire_us']['ratio']['median']:.1f}); validating 100 wire items "
        f"{f(md['validate_100_us'])} us"
    )
    fa = results["scenarios"]["faults"]
    lines.append(
        f"6. Under faults (conc 8, 5% 503, 2% 429 Retry-After 1): {fa['items_per_second']:,.0f} "
        f"items/s = {fa['share_of_fault_free']:.2f} of fault-free; {fa['retried_requests']} "
        f"retried of {fa['requests']} requests; every item accounted for: {fa['accounted']}, "
        f"audit: {fa['records_changed']:,} records changed = {fa['succeeded']:,} succeeded"
    )
    if "fleet" in results["scenarios"]:
        lines += fleet_table(results["scenarios"]["fleet"])
    lines += _scenarios.table(results["scenarios"])
    lines.append("")
    lines.append("Targets")
    for name, (value, target, met) in results["targets"].items():
        lines.append(
            f"   {name:<36} {value:>10.2f}  target {target:>7}  {'met' if met else 'MISSED'}"
        )
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> dict[str, tuple[float, str, bool]]:
    sc = results["scenarios"]
    t = sc["throughput"]["by_concurrency"]
    worst = min(row["sdk_over_a"]["median"] for row in t)
    c8 = next((row for row in t if row["concurrency"] == 8), t[-1])
    cpu = max(row["cpu_sdk_over_a"]["median"] for row in t)
    memory = sc["memory"]
    single = sc["single_calls"]
    p50, p99 = single["overhead_p50_us"]["median"], single["overhead_p99_us"]["median"]
    from_wire = sc["models"]["from_wire_us"]["ratio"]["median"]
    share = c8["sdk_share_of_bound"]["median"]

    def at_least(value: float, key: str) -> tuple[float, str, bool]:
        return (value, f">= {TARGETS[key]:g}", value >= TARGETS[key])

    def at_most(value: float, key: str) -> tuple[float, str, bool]:
        return (value, f"<= {TARGETS[key]:g}", value <= TARGETS[key])

    found = {
        "throughput SDK/(a), worst conc": at_least(worst, "throughput_vs_a"),
        "SDK share of bound, conc 8": at_least(share, "share_of_bound_c8"),
        "client CPU SDK/(a), worst conc": at_most(cpu, "cpu_vs_a"),
        "memory ratio large/small": at_most(memory["ratio"]["median"], "memory_ratio"),
        "memory peak SDK/(a), large": at_most(memory["sdk_over_a"]["median"], "memory_vs_a"),
        "single-call overhead p50 us": (p50, "< 50", p50 < TARGETS["single_call_overhead_p50_us"]),
        "single-call overhead p99 us": (p99, "< 150", p99 < TARGETS["single_call_overhead_p99_us"]),
        "from_wire SDK/hand, 100 items": at_most(from_wire, "from_wire_vs_hand"),
    }
    if "cli" in sc:
        found["command line/library, items/s"] = at_least(
            sc["cli"]["cli_over_library"]["median"], "cli_vs_library"
        )
    if "refusals" in sc:
        found["CPU 20% refused/none"] = at_most(
            sc["refusals"]["refused_over_ok"]["median"], "refused_vs_ok"
        )
    shared = results["scenarios"].get("fleet", {}).get("runs", {}).get("c")
    if shared is not None:
        refused, used = shared["refused_share"], shared["accepted_rps_share_of_limit"]
        found["fleet (c): 429 share of requests"] = at_most(refused, "fleet_shared_429_share")
        found["fleet (c): accepted rps / L"] = at_least(used, "fleet_shared_accepted_share")
    return found


def chart(results: dict[str, Any], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = results["scenarios"]["throughput"]["by_concurrency"]
    xs = [row["concurrency"] for row in rows]
    figure_, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(
        xs,
        [r["sdk_items_per_second"]["median"] for r in rows],
        "o-",
        label="SDK bulk_update_expiry",
    )
    axes.plot(
        xs,
        [r["a_items_per_second"]["median"] for r in rows],
        "s--",
        label="baseline (a): hand-rolled aiohttp",
    )
    axes.plot(xs, [r["bound_items_per_second"] for r in rows], ":", color="grey", label="bound")
    axes.set_xscale("log", base=2)
    axes.set_xticks(xs, [str(x) for x in xs])
    axes.set_xlabel("concurrency (requests in flight)")
    axes.set_ylabel("items per second")
    axes.set_title(
        f"Throughput, chunk {results['scenarios']['throughput']['chunk']}, "
        f"latency {results['scenarios']['throughput']['latency_ms']} ms"
    )
    axes.legend()
    axes.grid(True, alpha=0.3)
    figure_.tight_layout()
    figure_.savefig(path, dpi=110)
    plt.close(figure_)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes: under a minute")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, to check the runner")
    parser.add_argument("--json", metavar="PATH", help="write the figures here")
    parser.add_argument("--chart", metavar="PATH", help="write a PNG of throughput here")
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"

    def log(text: str) -> None:
        print(f"[bench] {text}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {
        "mode": mode,
        "date": dt.date.today().isoformat(),
        "machine": {
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "cores": os.cpu_count(),
            "platform": platform.platform(),
        },
        "sizes": attrs.asdict(sizes),
        "scenarios": {},
    }
    scenarios = results["scenarios"]
    scenarios["throughput"] = throughput_and_cpu(sizes, log)
    scenarios["memory"] = memory(sizes, log)
    scenarios["single_calls"] = single_calls(sizes, log)
    scenarios["models"] = models(sizes, log)
    c8 = next(
        (r for r in scenarios["throughput"]["by_concurrency"] if r["concurrency"] == 8),
        scenarios["throughput"]["by_concurrency"][-1],
    )
    scenarios["faults"] = faults(sizes, c8["sdk_items_per_second"]["median"], log)
    tools = {"emulator": emulator, "run": run, "interleaved": interleaved, "figure": figure}
    scenarios["cli"] = _scenarios.cli_vs_library(
        sizes.items, sizes.chunk, sizes.reps, latency_ms=sizes.latency_ms, log=log, **tools
    )
    scenarios["refusals"] = _scenarios.refusals(
        sizes.items, sizes.chunk, sizes.reps, log=log, **tools
    )
    scenarios["fleet"] = fleet(
        sizes.fleet_limit,
        sizes.fleet_items,
        sizes.fleet_chunk,
        emulator=emulator,
        stats=stats,
        log=log,
    )
    results["targets"] = {k: list(v) for k, v in targets(results).items()}
    print(table({**results, "targets": targets(results)}))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)
    if args.chart and not chart(results, args.chart):
        print("(no chart: install the bench extra for matplotlib)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
