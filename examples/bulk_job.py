"""A bulk expiry extension from a CSV file, resumable: interrupt it, run it again.

The journal (an SQLite file) records every row's outcome as the job goes.
Ctrl-C (or SIGTERM) stops it gracefully: requests in flight finish, nothing
more is sent, and the journal keeps what is known. The same command again
sends only the rows without a verdict, and reports the whole file as if it
had run once. To try it against a local emulator:

    capillary-async emulator --port 8080 --write-sample extend.csv --sample-count 5000
    export CAPILLARY_BASE_URL=http://127.0.0.1:8080 CAPILLARY_USERNAME=demo CAPILLARY_PASSWORD=demo
    python examples/bulk_job.py extend.csv --journal extend.db     # Ctrl-C midway
    python examples/bulk_job.py extend.csv --journal extend.db     # finishes the job

Exit status: 0 every row succeeded, 1 some did not (see --failures), 2 refused before
sending anything (target, credentials, journal), 130 stopped by a signal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from capillary_async import BulkReport, CapillaryClient, CapillaryError, InputFile, OutcomeStream

SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def apply(args: argparse.Namespace, running: list[OutcomeStream]) -> BulkReport:
    """The job, its stream in ``running`` while it runs (for the signal handler)."""
    rows = InputFile(args.input, kind="expiry")  # .csv with dotted wire names, or .jsonl
    async with CapillaryClient.from_env() as client:
        stream = client.points.stream_update_expiry(
            rows,
            journal=args.journal,
            concurrency=args.concurrency,
            chunk_size=args.chunk_size,
            preflight=True,  # a wrong URL or password raises here, with nothing sent
            keep_failures=True,
        )
        async with stream as outcomes:
            running.append(outcomes)
            done = 0
            async for batch in outcomes.batches():  # a chunk's outcomes at a time
                done += len(batch)
                rate = outcomes.progress().items_per_second
                print(f"progress {done} rows, {rate:.0f}/s", flush=True)
        return outcomes.report


async def run(args: argparse.Namespace) -> int:
    """The first signal stops the job gracefully, a second one (or one before it runs) aborts."""
    loop, me = asyncio.get_running_loop(), asyncio.current_task()
    running: list[OutcomeStream] = []

    def on_signal(signum: int) -> None:
        if running and running[0].report.stop_reason is None:
            running[0].stop(signal.Signals(signum).name)  # requests in flight finish
        elif me is not None:
            me.cancel()  # abort: requests in flight are abandoned; the journal keeps the rest

    for signum in SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        report = await apply(args, running)
        report.to_csv(args.failures)
    except CapillaryError as exc:  # refused before sending: target, credentials, journal
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:
        print("aborted: run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        for signum in SIGNALS:
            loop.remove_signal_handler(signum)
    print(json.dumps(report.summary(), default=str))
    if report.stop_reason in ("SIGINT", "SIGTERM"):
        print(f"stopped ({report.stop_reason}): run the same command again to resume")
        return 130
    if report.stop_reason:
        print(f"stopped: {report.stop_reason}", file=sys.stderr)
    return 0 if report.succeeded == report.total else 1


def main() -> None:
    parser = argparse.ArgumentParser(description="A resumable expiry extension from a file.")
    parser.add_argument("input", help="a .csv or .jsonl file of expiryDateUpdateRequest items")
    parser.add_argument("--journal", default="extend.db", help="default: %(default)s")
    parser.add_argument("--failures", default="failures.csv", help="default: %(default)s")
    parser.add_argument("--chunk-size", type=int, default=100, help="default: %(default)s")
    parser.add_argument("--concurrency", type=int, default=8, help="default: %(default)s")
    raise SystemExit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
