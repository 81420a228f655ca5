"""``capillary-async demo``: a real bulk job against the built-in emulator, no setup."""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path
from typing import IO

from .. import BasicAuth, excerpt
from ..testing import Emulator, sample_expiry_updates
from ._run import ApplyOptions, apply

__all__ = ["demo"]

DEMO_ITEMS = 20_000


def write_sample(emulator: Emulator, path: Path, count: int, *, seed: int = 7) -> int:
    """A JSONL input of ``count`` rows: mostly good, a few hundred bad as real files are.

    Bad rows: unknown customers, unknown records, dates in the past, a program
    id that is not a number, and lines that are not JSON at all.
    """
    rng = random.Random(seed)
    items = sample_expiry_updates(
        emulator.store, count, seed=seed, bad=0.015, now=emulator.clock.now()
    )
    written = 0
    with path.open("w", encoding="utf-8") as out:
        for item in items:
            if rng.random() < 0.001:
                out.write('{"identifierName": "mobile", "identifierValue": 91\n')  # cut short
            else:
                out.write(json.dumps(item, separators=(",", ":")) + "\n")
            written += 1
    return written


async def demo(
    *,
    items: int = DEMO_ITEMS,
    directory: str | None = None,
    fancy: bool | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Start the emulator, write a sample file, apply it with the real bulk job, report."""
    out = out or sys.stdout
    work = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="capillary-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    customers = max(1, -(-items // 4))
    emulator = Emulator(seed=7, customers=customers, awards_per_customer=4, latency=(0.002, 0.01))
    sample = work / "expiry-extension.jsonl"
    count = write_sample(emulator, sample, items)
    async with emulator:
        print(
            f"Capillary emulator on {emulator.base_url} (user demo), "
            f"{len(emulator.store.awards):,} points-awarded records\n"
            f"sample input: {excerpt(sample)} ({count:,} rows, some bad on purpose)\n",
            file=out,
            flush=True,
        )
        options = ApplyOptions(
            kind="expiry",
            input=str(sample),
            chunk_size=100,
            concurrency=8,
            report=str(work / "report.json"),
            failures=str(work / "failures.csv"),
            journal=str(work / "journal.db"),
        )
        status = await apply(
            options,
            base_url=emulator.base_url,
            auth=BasicAuth("demo", "demo"),
            out=out,
            err=err,
            fancy=fancy,
        )
    print(
        f"\nThe report is in {excerpt(work / 'report.json')}, every row that did not succeed "
        f"in {excerpt(work / 'failures.csv')}.\nThe bad rows were planted: 'expiry apply' "
        f"itself exits with {status} here (0 only when every row succeeds). The demo exits 0 "
        "because every row was accounted for.",
        file=out,
    )
    return 0 if status in (0, 1) else status
