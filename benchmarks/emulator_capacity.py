"""How many updateExpiry items per second the emulator serves on this machine.

The emulator runs in its own process (so the client's CPU is not counted
against it) with zero latency; the client is hand-rolled aiohttp with plain
dicts, chunks of 100 and a semaphore. Run: ``python -m benchmarks.emulator_capacity``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp

from capillary_async.testing import Emulator, sample_expiry_updates

SEED, CUSTOMERS, AWARDS_PER_CUSTOMER = 1, 2000, 10
BASIC = "Basic " + base64.b64encode(b"demo:" + hashlib.md5(b"demo").hexdigest().encode()).decode()


@contextlib.contextmanager
def emulator_process(*extra: str) -> Iterator[str]:
    """An emulator in a child process; yields its base URL."""
    command = [
        sys.executable,
        "-m",
        "capillary_async.testing",
        "--port",
        "0",
        "--seed",
        str(SEED),
        "--customers",
        str(CUSTOMERS),
        "--awards-per-customer",
        str(AWARDS_PER_CUSTOMER),
        *extra,
    ]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            for _ in range(10):
                match = re.search(r"on (http://\S+)", process.stderr.readline())
                if match:
                    yield match.group(1)
                    break
            else:
                raise RuntimeError("the emulator did not start")
        finally:
            process.terminate()
            process.wait(timeout=10)


def items(count: int) -> list[dict[str, Any]]:
    """Valid wire items matching the emulator process's records (same seed)."""
    local = Emulator(seed=SEED, customers=CUSTOMERS, awards_per_customer=AWARDS_PER_CUSTOMER)
    return list(sample_expiry_updates(local.store, count, now=local.clock.now()))


async def drive(
    base_url: str, payload: list[dict[str, Any]], concurrency: int, chunk: int
) -> float:
    """Items per second with hand-rolled aiohttp."""
    semaphore = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(part: list[dict[str, Any]]) -> None:
            async with semaphore:
                body = json.dumps({"expiryDateUpdateRequest": part}).encode()
                headers = {"Authorization": BASIC, "Content-Type": "application/json"}
                async with session.post(
                    base_url + "/v2/points/updateExpiry", data=body, headers=headers
                ) as response:
                    answer = await response.json()
                    assert response.status == 200, answer

        started = time.perf_counter()
        await asyncio.gather(*(send(payload[i : i + chunk]) for i in range(0, len(payload), chunk)))
        return len(payload) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    payload = items(args.items)
    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores; {args.items} items, chunks of {args.chunk}"
    )
    with emulator_process() as base_url:
        asyncio.run(drive(base_url, payload[: args.chunk * 4], 4, args.chunk))  # warm up
        for concurrency in args.concurrency:
            rate = asyncio.run(drive(base_url, payload, concurrency, args.chunk))
            print(f"concurrency {concurrency:>3}: {rate:10,.0f} items/s")


if __name__ == "__main__":
    main()
