"""Scenario 7: four client processes against one organisation-wide limit of L requests per second.

Three ways to pace them, in the same run:

- (a) each process with its own ``rate_limit=L`` (four times the limit in all);
- (b) each with its own adaptive limiter (AIMD on 429s, no coordination);
- (c) all four sharing one ``RedisLimiter(rate_limit=L)``.

For each: the 429s the server sent, the requests per second it saw as a share
of L, and items per second as a share of the bound (L x chunk). The emulator
enforces L across all connections, answering 429 with ``Retry-After`` above it.

``python -m benchmarks._fleet worker key=value ...`` is one client process.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from capillary_async import BasicAuth, CapillaryClient, Limiter, LocalLimiter, RetryPolicy

from ._workloads import items

PROCESSES = 4
CONFIGS = (
    ("a", "own rate_limit=L each"),
    ("b", "own adaptive limiter each"),
    ("c", "one shared RedisLimiter(L)"),
)


async def worker(options: dict[str, str]) -> dict[str, Any]:
    """One client process: a bulk job paced as ``mode`` says, started at ``start``."""
    rate = float(options["rate"])
    mode = options["mode"]
    limiter: Limiter
    if mode == "c":
        from capillary_async.redis import RedisLimiter

        limiter = RedisLimiter.from_url(options["redis"], name="bench-fleet", rate_limit=rate)
    else:
        limiter = LocalLimiter(rate, adaptive=mode == "b")
    data = {k: int(options[k]) for k in ("seed", "customers", "apc")}
    delay = float(options["start"]) - time.time()
    if delay > 0:
        await asyncio.sleep(delay)  # every process starts at the same moment
    started = time.perf_counter()
    async with CapillaryClient(
        options["url"],
        auth=BasicAuth("demo", "demo"),
        limiter=limiter,
        retry=RetryPolicy(max_attempts=20, max_retry_after=5.0),
    ) as client:
        report = await client.points.bulk_update_expiry(
            items(int(options["n"]), **data), chunk_size=int(options["chunk"]), concurrency=4
        )
    await limiter.aclose()
    return {
        "seconds": time.perf_counter() - started,
        "items": report.total,
        "succeeded": report.succeeded,
        "requests": report.requests,
    }


@contextmanager
def redis_server() -> Iterator[str | None]:
    """A throwaway redis-server on a free port, or None when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", directory]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


def fleet(
    limit: float,
    per_process: int,
    chunk: int,
    *,
    emulator: Callable[..., Any],
    stats: Callable[[str], dict[str, Any]],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Run (a), (b) and (c) against one emulator limited to ``limit`` requests per second."""
    results: dict[str, Any] = {"limit": limit, "processes": PROCESSES, "chunk": chunk, "runs": {}}
    awards = per_process
    extra = ("--rate-limit", str(limit))
    with redis_server() as redis_url, emulator(awards=awards, extra=extra) as server:
        for mode, label in CONFIGS:
            if mode == "c" and redis_url is None:
                log("fleet (c): skipped, redis-server is not installed")
                continue
            log(f"fleet ({mode}): {PROCESSES} processes, {label}, server limit {limit:g}/s")
            before = stats(server["url"])
            start = time.time() + 2.0
            pairs = {
                **{k: server[k] for k in ("url", "seed", "customers", "apc")},
                "mode": mode,
                "rate": limit,
                "n": per_process,
                "chunk": chunk,
                "start": start,
                "redis": redis_url or "",
            }
            command = [sys.executable, "-m", "benchmarks._fleet", "worker"]
            command += [f"{k}={v}" for k, v in pairs.items()]
            processes = [
                subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
                for _ in range(PROCESSES)
            ]
            outputs = [p.communicate(timeout=1800)[0] for p in processes]
            wall = max(json.loads(out.strip().splitlines()[-1])["seconds"] for out in outputs)
            after = stats(server["url"])
            refused = after["faults"].get("rate_limited", 0) - before["faults"].get(
                "rate_limited", 0
            )
            seen = after["requests"] - before["requests"]
            done = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
            total_items = sum(d["items"] for d in done)
            results["runs"][mode] = {
                "label": label,
                "seconds": wall,
                "requests_seen": seen,
                "refused_429": refused,
                "refused_share": refused / seen if seen else 0.0,
                "server_rps_share_of_limit": seen / wall / limit,
                "accepted_rps_share_of_limit": (seen - refused) / wall / limit,
                "items_per_second": total_items / wall,
                "share_of_bound": total_items / wall / (limit * chunk),
                "every_item_succeeded": all(d["succeeded"] == d["items"] for d in done),
            }
    return results


def table(results: dict[str, Any]) -> list[str]:
    limit = results["limit"]
    lines = [
        f"7. Fleet: {results['processes']} processes, server limit L = {limit:g} requests/s "
        f"(429 + Retry-After above it), chunk {results['chunk']}",
        f"   {'config':<32}{'429s':>7}{'429 share':>11}{'server rps/L':>14}"
        f"{'accepted/L':>12}{'items/s share of bound':>24}",
    ]
    for mode, label in CONFIGS:
        run = results["runs"].get(mode)
        if run is None:
            lines.append(f"   ({mode}) {label:<28} skipped: no redis-server")
            continue
        lines.append(
            f"   ({mode}) {label:<28}{run['refused_429']:>7,}{run['refused_share']:>11.1%}"
            f"{run['server_rps_share_of_limit']:>14.2f}{run['accepted_rps_share_of_limit']:>12.2f}"
            f"{run['share_of_bound']:>24.2f}"
        )
    return lines


if __name__ == "__main__":
    name, *pairs = sys.argv[1:]
    if name != "worker":
        raise SystemExit("usage: python -m benchmarks._fleet worker key=value ...")
    print(json.dumps(asyncio.run(worker(dict(pair.split("=", 1) for pair in pairs)))))
