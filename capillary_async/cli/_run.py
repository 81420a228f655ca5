"""``expiry apply`` and ``redemption apply``: a file, the bulk engine, a journal, a report."""

from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Hashable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
import attrs

from .._auth import Auth
from .._batch import ItemOutcome, Job, Merged
from .._client import UNSET, CapillaryClient
from .._config import Clock
from .._exceptions import ValidationError
from .._models import ExpiryUpdate, RedemptionUpdate
from .._resources import _ExpirySpec, _prepare, _RedemptionSpec
from ._env import UsageError
from ._inputs import Row, count_rows, open_rows
from ._journal import FINAL, RESUMABLE, Journal, JournalMismatchError, fingerprint
from ._progress import Display

__all__ = ["ApplyOptions", "apply"]

EXIT_OK, EXIT_NOT_ALL_SUCCEEDED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

UNSAFE_RESEND = (
    "in flight when an earlier run stopped; not resent because FIXED_DAYS / FIXED_MONTHS "
    "is not idempotent (check the record, then rerun with --retry-unknown to send it)"
)


@attrs.frozen(kw_only=True)
class ApplyOptions:
    """What ``apply`` was asked to do."""

    kind: str  # "expiry" or "redemption"
    input: str
    chunk_size: int = 100
    concurrency: int = 8
    rate: float | None = None
    report: str | None = None
    failures: str | None = None
    journal: str | None = None
    dry_run: bool = False
    fail_fast: bool = False
    retry_unknown: bool = False


@attrs.frozen
class Prepared:
    """A validated row: the model, and the row it came from."""

    row: Row
    model: Any


class _Kind:
    """What differs between the two endpoints, for files and reports."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.model: type[Any] = ExpiryUpdate if name == "expiry" else RedemptionUpdate
        self.what = "an ExpiryUpdate" if name == "expiry" else "a RedemptionUpdate"
        self.ref_columns = (
            ("pointsAwardedRefId", "pointsAwardedRefType")
            if name == "expiry"
            else ("redemptionId", "externalReferenceNumber")
        )

    def prepare(self, data: Any) -> Any:
        return _prepare(self.model, data, self.what)

    def refs(self, source: Any) -> tuple[Any, Any]:
        if isinstance(source, ExpiryUpdate):
            return source.points_awarded_ref_id, source.points_awarded_ref_type.value
        if isinstance(source, RedemptionUpdate):
            return source.redemption_id, source.external_reference_number
        data = source if isinstance(source, dict) else {}
        first, second = self.ref_columns
        return data.get(first), data.get(second)


class RowSpec:
    """The endpoint's spec, over rows: keeps each item's row (index and line) with it."""

    def __init__(self, kind: _Kind, inner: Any) -> None:
        self.kind = kind
        self.inner = inner
        self.max_chunk_size = getattr(inner, "max_chunk_size", None)

    def prepare(self, raw: object) -> Prepared:
        if not isinstance(raw, Row):
            raise ValidationError("", "expected an input row")
        if raw.error is not None:
            raise ValidationError("", raw.error)
        try:
            return Prepared(raw, self.kind.prepare(raw.data))
        except ValidationError as exc:
            raise ValidationError(
                f"line {raw.line}: {exc.field}", exc.reason, code=exc.code
            ) from None

    def key(self, item: Prepared) -> Hashable:
        key: Hashable = self.inner.key(item.model)
        return key

    def idempotent(self, item: Prepared) -> bool:
        return bool(self.inner.idempotent(item.model))

    async def send(self, items: list[Prepared]) -> tuple[Any, str | None]:
        result: tuple[Any, str | None] = await self.inner.send([p.model for p in items])
        return result

    def merge(self, chunk: Sequence[tuple[int, Prepared]], result: Any) -> Merged:
        rows = dict(chunk)
        merged: Merged = self.inner.merge([(i, p.model) for i, p in chunk], result)
        return Merged(
            [
                (i, rows[i], status, update, code, msg)
                for i, _, status, update, code, msg in merged.outcomes
            ],
            merged.anomalies,
        )

    def describe(self, item: Any) -> dict[str, Any]:
        row = item.row if isinstance(item, Prepared) else item
        source = item.model if isinstance(item, Prepared) else getattr(item, "data", None)
        first, second = self.kind.refs(source)
        names = self.kind.ref_columns
        return {"line": getattr(row, "line", None), names[0]: first, names[1]: second}

    def wire(self, item: Any) -> Any:
        if isinstance(item, Prepared):
            return self.inner.wire(item.model)
        return getattr(item, "data", None)


def _journal_row(spec: RowSpec, outcome: ItemOutcome) -> tuple[Any, ...]:
    item = outcome.item
    row = item.row if isinstance(item, Prepared) else item
    described = spec.describe(item)
    first, second = spec.kind.ref_columns
    message = outcome.error_message
    if message and outcome.status.value == "invalid" and not message.startswith("line "):
        message = f"line {row.line}: {message}"
    return (
        row.index,
        row.line,
        outcome.status.value,
        described[first],
        described[second],
        outcome.error_code,
        message,
        outcome.request_id,
    )


async def _rows_to_send(
    rows: Iterator[Row], journal: Journal, retry_unknown: bool, counters: dict[str, int]
) -> AsyncIterator[Row]:
    """The input's rows, less those a previous run finished (a streaming merge, flat memory)."""
    states = journal.states()
    state = await anext(states, None)
    unsafe: list[tuple[Any, ...]] = []
    for n, row in enumerate(rows):
        if n % 512 == 511:
            await anyio.lowlevel.checkpoint()
        while state is not None and state[0] < row.index:
            state = await anext(states, None)
        if state is not None and state[0] == row.index:
            _, previous, idempotent = state
            if previous in FINAL and previous not in RESUMABLE:
                counters["skipped"] += 1
                continue
            if previous == "in_flight" and not (idempotent or retry_unknown):
                unsafe.append(
                    (row.index, row.line, "unknown", None, None, None, UNSAFE_RESEND, None)
                )
                counters["skipped"] += 1
                if len(unsafe) >= 500:
                    await journal.record(unsafe)
                    unsafe = []
                continue
        yield row
    await journal.record(unsafe)


async def _dry_run(options: ApplyOptions, kind: _Kind, out: IO[str]) -> int:
    spec = RowSpec(kind, None)  # validation only: nothing is sent
    total = invalid = 0
    problems: list[dict[str, Any]] = []
    for row in open_rows(options.input):
        total += 1
        try:
            spec.prepare(row)
        except ValidationError as exc:
            invalid += 1
            first, second = kind.refs(row.data)
            message = str(exc) if str(exc).startswith("line ") else f"line {row.line}: {exc}"
            problems.append(
                {
                    "line": row.line,
                    kind.ref_columns[0]: first,
                    kind.ref_columns[1]: second,
                    "status": "invalid",
                    "errorCode": exc.code,
                    "errorMessage": message,
                }
            )
    summary = {
        "dry_run": True,
        "total": total,
        "valid": total - invalid,
        "invalid": invalid,
        "succeeded": 0,
        "failed": 0,
        "unknown": 0,
        "not_attempted": total - invalid,
    }
    if options.report:
        text = json.dumps({**summary, "invalid_rows": problems}, indent=2)
        await anyio.Path(options.report).write_text(text, encoding="utf-8")
    if options.failures:
        _write_failures(options.failures, kind, iter(problems))
    print(
        f"{kind.name} dry run: {total:,} rows, {total - invalid:,} valid, {invalid:,} invalid; "
        "nothing sent",
        file=out,
    )
    for problem in problems[:20]:
        print(f"  {problem['errorMessage']}", file=out)
    if len(problems) > 20:
        print(f"  ... and {len(problems) - 20:,} more", file=out)
    return EXIT_OK if invalid == 0 else EXIT_NOT_ALL_SUCCEEDED


def _write_failures(path: str, kind: _Kind, rows: Iterator[dict[str, Any]]) -> None:
    with Path(path).open("w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=_failure_columns(kind), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


async def apply(
    options: ApplyOptions,
    *,
    base_url: str | None,
    auth: Auth | None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    fancy: bool | None = None,
    clock: Clock | None = None,
) -> int:
    """Run one file through the bulk engine; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    kind = _Kind(options.kind)
    if options.input != "-" and not await anyio.Path(options.input).is_file():
        raise UsageError(f"INPUT: no such file: {options.input}")
    if options.dry_run:
        return await _dry_run(options, kind, out)
    if base_url is None or auth is None:
        raise UsageError("a target and credentials are needed to send anything")
    if options.journal and options.input == "-":
        raise UsageError("--journal needs an INPUT file: standard input cannot be resumed")

    scratch: Path | None = None
    if options.journal:
        journal_path = Path(options.journal)
    else:  # without --journal, a scratch one keeps memory flat and the report exact
        scratch = Path(tempfile.mkdtemp(prefix="capillary-job-"))
        journal_path = scratch / "journal.db"
    try:
        stamp = (
            await anyio.to_thread.run_sync(fingerprint, kind.name, options.input, base_url)
            if options.input != "-"
            else "stdin"
        )
        try:
            journal = await Journal.open(journal_path, stamp)
        except JournalMismatchError as exc:
            raise UsageError(str(exc)) from None
        try:
            run = _JobRun(options, kind, journal, out=out, err=err, fancy=fancy)
            return await run.run(base_url, auth, clock)
        finally:
            await journal.close()
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


class _JobRun:
    """One run of ``apply``: the job, its journal, the display and Ctrl-C."""

    def __init__(
        self,
        options: ApplyOptions,
        kind: _Kind,
        journal: Journal,
        *,
        out: IO[str],
        err: IO[str],
        fancy: bool | None,
    ) -> None:
        self.options = options
        self.kind = kind
        self.journal = journal
        self.out = out
        self.err = err
        self.fancy = fancy
        self.counters = {"skipped": 0}
        self.interrupts = 0
        self.processed = 0
        self.failures = 0

    async def run(self, base_url: str, auth: Auth, clock: Clock | None) -> int:
        options = self.options
        total = await anyio.to_thread.run_sync(count_rows, options.input)
        started = time.perf_counter()
        async with CapillaryClient(
            base_url, auth=auth, max_connections=max(10, options.concurrency), clock=clock
        ) as client:
            inner = (
                _ExpirySpec(client, UNSET)
                if self.kind.name == "expiry"
                else _RedemptionSpec(client, UNSET)
            )
            spec = RowSpec(self.kind, inner)
            job: Job[Prepared, Any] = Job(
                spec,
                _rows_to_send(
                    open_rows(options.input), self.journal, options.retry_unknown, self.counters
                ),
                clock=client.clock,
                retry=client.retry,
                chunk_size=options.chunk_size if self.kind.name == "expiry" else 1,
                concurrency=options.concurrency,
                rate_limit=options.rate,
                fail_fast=options.fail_fast,
                keep_failures=False,
                on_send=lambda items: self._mark_in_flight(spec, items),
            )
            await self._drive(job, spec, total)
        elapsed = time.perf_counter() - started
        summary = await _summary(
            self.journal, self.kind, options, job, elapsed=elapsed, processed=self.processed
        )
        if options.report:
            text = json.dumps(summary, indent=2)
            await anyio.Path(options.report).write_text(text, encoding="utf-8")
        if options.failures:
            await _stream_failures(options.failures, self.kind, self.journal)
        _print_summary(summary, options, self.out)
        if self.interrupts:
            return EXIT_INTERRUPTED
        return EXIT_OK if summary["succeeded"] == summary["total"] else EXIT_NOT_ALL_SUCCEEDED

    async def _mark_in_flight(self, spec: RowSpec, items: list[Prepared]) -> None:
        await self.journal.mark_in_flight(
            [(p.row.index, p.row.line, spec.idempotent(p), *self.kind.refs(p.model)) for p in items]
        )

    async def _drive(self, job: Job[Prepared, Any], spec: RowSpec, total: int | None) -> None:
        """Run the job, journal each chunk's outcomes, show progress, handle Ctrl-C."""
        send, receive = anyio.create_memory_object_stream[ItemOutcome](job.chunk_size)
        pending: list[tuple[Any, ...]] = []
        async with anyio.create_task_group() as tg:

            def on_interrupt() -> None:
                self.interrupts += 1
                if self.interrupts == 1:
                    print(
                        "\ninterrupted: finishing the requests in flight, sending nothing more "
                        "(Ctrl-C again to abort them)",
                        file=self.err,
                        flush=True,
                    )
                    job.stop("interrupted", drain=False)
                else:
                    tg.cancel_scope.cancel()

            restore = _catch_sigint(on_interrupt)
            title = f"{self.kind.name} apply"
            try:
                tg.start_soon(job.run, send)
                with Display(title, total, stream=self.err, fancy=self.fancy) as display:
                    async with receive:
                        async for outcome in receive:
                            pending.append(_journal_row(spec, outcome))
                            self.processed += 1
                            self.failures += not outcome.ok
                            if len(pending) >= 1000 or not receive.statistics().current_buffer_used:
                                await self.journal.record(pending)
                                pending = []
                                display.update(self.done, self.failures)
                    display.update(self.done, self.failures, final=True)
            finally:
                restore()
                with anyio.CancelScope(shield=True):  # an abort still saves what is known
                    await self.journal.record(pending)
                    await self.journal.add_counters(
                        requests=job.report.requests,
                        retried_requests=job.report.retried_requests,
                        split_requests=job.report.split_requests,
                    )

    @property
    def done(self) -> int:
        return self.processed + self.counters["skipped"]


async def _stream_failures(path: str, kind: _Kind, journal: Journal) -> None:
    """The failures CSV, written batch by batch from the journal: flat memory."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_failure_columns(kind), extrasaction="ignore")
    writer.writeheader()
    async with await anyio.open_file(path, "w", encoding="utf-8", newline="") as out:
        async for row in _failure_rows(journal, kind):
            writer.writerow(row)
            if buffer.tell() > 1 << 16:
                await out.write(buffer.getvalue())
                buffer.seek(0)
                buffer.truncate()
        await out.write(buffer.getvalue())


def _failure_columns(kind: _Kind) -> list[str]:
    return ["line", *kind.ref_columns, "status", "errorCode", "errorMessage"]


async def _failure_rows(journal: Journal, kind: _Kind) -> AsyncIterator[dict[str, Any]]:
    first, second = kind.ref_columns
    async for line, ref_id, ref_type, state, code, message in journal.failures():
        yield {
            "line": line,
            first: _plain(ref_id),
            second: _plain(ref_type),
            "status": state,
            "errorCode": code,
            "errorMessage": message,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, str) and value.startswith('"'):
        return json.loads(value)
    return value


async def _summary(
    journal: Journal,
    kind: _Kind,
    options: ApplyOptions,
    job: Job[Any, Any],
    *,
    elapsed: float,
    processed: int,
) -> dict[str, Any]:
    data = await journal.summary()
    states: dict[str, int] = data["states"]
    counters = data["counters"]
    summary = {
        "input": options.input,
        "kind": kind.name,
        "total": sum(states.values()),
        "succeeded": states.get("succeeded", 0),
        "failed": states.get("failed", 0),
        "invalid": states.get("invalid", 0),
        "unknown": states.get("unknown", 0),
        "not_attempted": states.get("not_attempted", 0) + states.get("in_flight", 0),
        "requests": counters.get("requests", 0),
        "retried_requests": counters.get("retried_requests", 0),
        "split_requests": counters.get("split_requests", 0),
        "elapsed_seconds": round(elapsed, 3),
        "items_per_second": round(processed / elapsed, 1) if elapsed > 0 else 0.0,
        "failures_by_code": data["failures_by_code"],
        "stop_reason": job.report.stop_reason,
        "anomalies": job.report.anomalies,
        "journal": options.journal,
    }
    if states.get("in_flight"):
        summary["in_flight"] = states["in_flight"]
    return summary


def _print_summary(summary: dict[str, Any], options: ApplyOptions, out: IO[str]) -> None:
    codes = ", ".join(
        f"{code}: {count:,}" for code, count in sorted(summary["failures_by_code"].items())
    )
    print(f"\n{summary['kind']} apply: {summary['total']:,} rows from {options.input}", file=out)
    for label, key in (
        ("succeeded", "succeeded"),
        ("failed", "failed"),
        ("invalid", "invalid"),
        ("unknown", "unknown"),
        ("not attempted", "not_attempted"),
    ):
        print(f"  {label:<14}{summary[key]:>10,}", file=out)
    if codes:
        print(f"  by code: {codes}", file=out)
    print(
        f"  {summary['requests']:,} requests ({summary['retried_requests']:,} retried, "
        f"{summary['split_requests']:,} split), {summary['elapsed_seconds']:.1f} s, "
        f"{summary['items_per_second']:,.0f} items/s",
        file=out,
    )
    if summary["stop_reason"]:
        print(f"  stopped early: {summary['stop_reason']}", file=out)
    for label, path in (
        ("report", options.report),
        ("failures", options.failures),
        ("journal", options.journal),
    ):
        if path:
            print(f"  {label}: {path}", file=out)


def _catch_sigint(handler: Any) -> Any:
    """Route Ctrl-C to ``handler`` while a job runs; returns the undo."""
    import asyncio

    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, handler)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGINT)
