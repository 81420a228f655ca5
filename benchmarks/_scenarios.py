"""Scenarios 8 and 9: the command line against the library, and items refused one by one.

Both run with zero emulator latency, where the client's own work decides the
pace: the harshest setting for each comparison.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._workloads import items

Run = Callable[..., dict[str, Any]]


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cli(
    server: dict[str, Any], path: Path, work: Path, *, chunk: int, concurrency: int
) -> dict[str, Any]:
    """``capillary-async expiry apply FILE --journal ...`` in a fresh process; its report."""
    journal, report = work / f"journal-{time.monotonic_ns()}.db", work / "report.json"
    env = {**os.environ, "CAPILLARY_USERNAME": "demo", "CAPILLARY_PASSWORD": "demo"}
    cpu, started = _cpu_of_children(), time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "capillary_async.cli",
            "expiry",
            "apply",
            str(path),
            "--base-url",
            server["url"],
            "--chunk-size",
            str(chunk),
            "--concurrency",
            str(concurrency),
            "--journal",
            str(journal),
            "--report",
            str(report),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    seconds, cpu = time.perf_counter() - started, _cpu_of_children() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"the command line failed ({done.returncode}):\n{done.stderr[-3000:]}")
    data = json.loads(report.read_text(encoding="utf-8"))
    return {
        "items": data["total"],
        "succeeded": data["succeeded"],
        "items_per_second": data["items_per_second"],
        "process_seconds": seconds,
        "cpu_seconds": cpu,
    }


def cli_vs_library(
    n: int,
    chunk: int,
    reps: int,
    *,
    latency_ms: int,
    emulator: Callable[..., Any],
    run: Run,
    interleaved: Callable[..., dict[str, list[dict[str, Any]]]],
    figure: Callable[[list[float]], dict[str, float]],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Scenario 8: the same JSONL file through the command line (with --journal) and the library.

    At zero latency (the client's work sets the pace: the figure with a target)
    and at scenario 1's latency (a server that takes its time, as real ones do).
    """
    concurrency = 8
    out: dict[str, Any] = {"items": n, "chunk": chunk, "concurrency": concurrency}
    for latency in (0, latency_ms):
        with (
            tempfile.TemporaryDirectory(prefix="capillary-bench-") as tmp,
            emulator(awards=n, latency_ms=latency) as server,
        ):
            work = Path(tmp)
            path = work / "rows.jsonl"
            data = {k: server[k] for k in ("seed", "customers", "apc")}
            with path.open("w", encoding="utf-8") as rows:
                for item in items(n, **data):
                    rows.write(json.dumps(item) + "\n")
            log(f"command line with --journal against the library: {n:,} rows, {latency} ms")
            results = interleaved(
                reps,
                library=lambda server=server, path=path: run(
                    "sdk_file", server, n=n, chunk=chunk, concurrency=concurrency, path=path
                ),
                cli=lambda server=server, path=path, work=work: _cli(
                    server, path, work, chunk=chunk, concurrency=concurrency
                ),
            )
        lib = [r["items_per_second"] for r in results["library"]]
        cli = [r["items_per_second"] for r in results["cli"]]
        assert all(r["succeeded"] == n for r in results["library"] + results["cli"]), results
        figures = {
            "library_items_per_second": figure(lib),
            "cli_items_per_second": figure(cli),
            "cli_over_library": figure([c / b for c, b in zip(cli, lib, strict=True)]),
            "cli_process_seconds": figure([r["process_seconds"] for r in results["cli"]]),
            "cli_cpu_ms_per_1000": figure([1e6 * r["cpu_seconds"] / n for r in results["cli"]]),
        }
        if latency == 0:
            out.update(figures)
        else:
            out["at_latency"] = {"latency_ms": latency, **figures}
    return out


def refusals(
    n: int,
    chunk: int,
    reps: int,
    *,
    emulator: Callable[..., Any],
    run: Run,
    interleaved: Callable[..., dict[str, list[dict[str, Any]]]],
    figure: Callable[[list[float]], dict[str, float]],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Scenario 9: client CPU per item with 20% of items refused one by one, against none."""
    share = 0.2
    with emulator(awards=n, latency_ms=0) as server:
        log(f"refused items: {share:.0%} of {n:,} refused per item, against all succeeding")
        options = {"n": n, "chunk": chunk, "concurrency": 8}
        results = interleaved(
            reps,
            ok=lambda: run("sdk_bulk", server, **options),
            refused=lambda: run("sdk_bulk", server, refused=share, **options),
        )
    ok = [1e6 * r["cpu_seconds"] / r["items"] for r in results["ok"]]
    bad = [1e6 * r["cpu_seconds"] / r["items"] for r in results["refused"]]
    failed = results["refused"][0]["failed"]
    assert all(r["succeeded"] == n for r in results["ok"]), results["ok"]
    assert all(r["items"] == n for r in results["refused"]), results["refused"]
    return {
        "items": n,
        "refused_share": share,
        "refused_items": failed,
        "ok_cpu_ms_per_1000": figure(ok),
        "refused_cpu_ms_per_1000": figure(bad),
        "refused_over_ok": figure([b / a for a, b in zip(ok, bad, strict=True)]),
    }


def table(scenarios: dict[str, Any]) -> list[str]:
    def f(value: dict[str, float], fmt: str = "{:,.0f}") -> str:
        return (
            f"{fmt.format(value['median'])} ({fmt.format(value['min'])}-{fmt.format(value['max'])})"
        )

    lines = []
    c = scenarios.get("cli")
    if c is not None:
        lines.append(
            f"8. Command line with --journal against the library, {c['items']:,} rows of one JSONL "
            f"file, chunk {c['chunk']}, concurrency {c['concurrency']}, zero latency: "
            f"{f(c['cli_items_per_second'])} against {f(c['library_items_per_second'])} items/s, "
            f"ratio {f(c['cli_over_library'], '{:.2f}')}; the whole process "
            f"{f(c['cli_process_seconds'], '{:.1f}')} s, {f(c['cli_cpu_ms_per_1000'], '{:.1f}')} ms "
            "CPU per 1,000 rows (start-up included)"
        )
        slow = c.get("at_latency")
        if slow is not None:
            lines.append(
                f"   at {slow['latency_ms']} ms latency: {f(slow['cli_items_per_second'])} against "
                f"{f(slow['library_items_per_second'])} items/s, ratio "
                f"{f(slow['cli_over_library'], '{:.2f}')}"
            )
    r = scenarios.get("refusals")
    if r is not None:
        lines.append(
            f"9. Refused items, {r['items']:,} items, concurrency 8, zero latency: client CPU "
            f"{f(r['refused_cpu_ms_per_1000'], '{:.1f}')} ms per 1,000 with {r['refused_share']:.0%} "
            f"refused ({r['refused_items']:,} items) against {f(r['ok_cpu_ms_per_1000'], '{:.1f}')} "
            f"with none: ratio {f(r['refused_over_ok'], '{:.2f}')}"
        )
    return lines
