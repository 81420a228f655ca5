"""A queue-fed worker: expiry updates as they arrive, stopped gracefully by SIGTERM or Ctrl-C.

A producer puts updates on an ``asyncio.Queue`` over time (standing in for a
message broker). The worker streams them through ``stream_update_expiry``,
which sends a partial chunk once the queue has been quiet for ``flush_after``
seconds. On SIGTERM or SIGINT it stops taking items, lets the requests in
flight finish, and accounts for every item it took: each has exactly one
outcome, and the ones certainly not applied (``outcome.resendable``: never
sent, or refused as a whole request, by a 401 say) go back on the queue for
the next worker.

    python examples/worker.py                  # against a built-in emulator
    python examples/worker.py --base-url URL --input rows.jsonl
        (CAPILLARY_USERNAME / CAPILLARY_PASSWORD for URL; one wire-format
        expiry update a line in rows.jsonl)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from capillary_async import (
    Auth,
    BasicAuth,
    CapillaryClient,
    OutcomeStatus,
    credentials_from_env,
    to_wire,
)
from capillary_async.testing import Emulator, sample_expiry_updates


async def feed(queue: asyncio.Queue[Any], taken: list[int]) -> AsyncIterator[Any]:
    """The queue as the job's input: it never ends by itself, a stop ends the job."""
    while (item := await queue.get()) is not None:
        taken[0] += 1
        yield item


async def produce(queue: asyncio.Queue[Any], rows: Iterator[Any], every: float) -> None:
    for row in rows:
        await queue.put(row)
        await asyncio.sleep(every)


async def work(client: CapillaryClient, queue: asyncio.Queue[Any], report_every: int) -> int:
    taken = [0]
    counts = dict.fromkeys(OutcomeStatus, 0)
    requeued = 0
    stream = client.points.stream_update_expiry(
        feed(queue, taken), chunk_size=25, concurrency=4, flush_after=0.2
    )
    async with stream as outcomes:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, outcomes.stop, signal.Signals(signum).name)
        try:
            async for outcome in outcomes:
                counts[outcome.status] += 1
                if outcome.resendable:  # certainly not applied: the next worker takes it
                    queue.put_nowait(to_wire(outcome.item))  # the message as it came
                    requeued += 1
                elif not outcome.ok:
                    print(f"item {outcome.index}: {outcome.status}: {outcome.error_message}")
                done = sum(counts.values())
                if done % report_every == 0:
                    print(f"progress: {done} outcomes", flush=True)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
    report = outcomes.report
    print(
        f"worker stopped ({report.stop_reason}): taken {taken[0]}, "
        f"outcomes {sum(counts.values())}: "
        + ", ".join(f"{status.value} {count}" for status, count in counts.items())
        + f"; requeued {requeued}, {queue.qsize()} on the queue",
        flush=True,
    )
    return 0 if sum(counts.values()) == taken[0] else 1


def read_jsonl(path: str) -> Iterator[Any]:
    with Path(path).open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


@contextlib.asynccontextmanager
async def target(args: argparse.Namespace) -> AsyncIterator[tuple[str, Auth, Iterator[Any]]]:
    """The cluster and rows asked for, or a seeded emulator and rows it knows."""
    if args.base_url:
        auth = credentials_from_env()  # CAPILLARY_USERNAME / _PASSWORD, or a key, or a token
        yield args.base_url, auth, read_jsonl(args.input)
        return
    async with Emulator(seed=7) as emulator:
        rows = sample_expiry_updates(emulator.store, args.items, now=emulator.clock.now())
        print(f"emulator at {emulator.base_url}; SIGTERM or Ctrl-C stops the worker", flush=True)
        yield emulator.base_url, BasicAuth("demo", "demo"), iter(rows)


async def main(args: argparse.Namespace) -> int:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    async with target(args) as (base_url, auth, rows):
        producer = asyncio.create_task(produce(queue, rows, args.every))
        try:
            async with CapillaryClient(base_url, auth=auth) as client:
                return await work(client, queue, args.report_every)
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="a real cluster (default: a built-in emulator)")
    parser.add_argument("--input", help="JSONL rows to feed (with --base-url)")
    parser.add_argument("--items", type=int, default=10_000, help="rows made for the emulator")
    parser.add_argument("--every", type=float, default=0.01, help="seconds between rows put")
    parser.add_argument("--report-every", type=int, default=100, help="outcomes per progress line")
    arguments = parser.parse_args()
    if arguments.base_url and not arguments.input:
        parser.error("--base-url needs --input: the rows to feed")
    raise SystemExit(asyncio.run(main(arguments)))
