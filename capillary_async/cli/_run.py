"""``expiry apply`` and ``redemption apply``: a file, the bulk engine, a journal, a report."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
import attrs

from .._auth import Auth
from .._batch import ItemOutcome, Job, Merged, OutcomeStatus, failure_columns, write_csv
from .._client import UNSET, CapillaryClient
from .._config import DEFAULT_MAX_RESPONSE_BYTES, Clock
from .._exceptions import ValidationError, excerpt
from .._models import ExpiryUpdate, RedemptionUpdate
from .._resources import _ExpirySpec, _prepare, _RedemptionSpec
from ._env import UsageError
from ._inputs import Row, columns_of, count_rows, open_input
from ._journal import (
    Entry,
    Failure,
    Journal,
    JournalError,
    JournalLock,
    Resume,
    fingerprint,
    resume,
    stored_ref,
)
from ._progress import Display

__all__ = ["ApplyOptions", "apply"]

EXIT_OK, EXIT_NOT_ALL_SUCCEEDED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

UNSAFE_RESEND = (
    "in flight when an earlier run stopped; not resent because FIXED_DAYS / FIXED_MONTHS "
    "is not idempotent (check the record, then rerun with --retry-unknown to send it)"
)
ABORTED_IN_FLIGHT = (
    "sent, but the run was aborted before the answer came: it may have been applied "
    "(FIXED_DAYS / FIXED_MONTHS rows are resent only with --retry-unknown)"
)
#: Verdicts by definition, whatever the engine's ``settled`` says.
_ALWAYS_SETTLED = frozenset({OutcomeStatus.SUCCEEDED, OutcomeStatus.INVALID})


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
    max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES


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
        self.columns = columns_of(name)
        self.failure_columns = failure_columns(self.ref_columns)

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
        return attrs.evolve(
            merged,
            outcomes=[
                (i, rows[i], status, update, code, msg)
                for i, _, status, update, code, msg in merged.outcomes
            ],
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


def _entry(spec: RowSpec, outcome: ItemOutcome) -> Entry:
    item = outcome.item
    row = item.row if isinstance(item, Prepared) else item
    described = spec.describe(item)
    first, second = spec.kind.ref_columns
    message = outcome.error_message
    if message and outcome.status is OutcomeStatus.INVALID and not message.startswith("line "):
        message = f"line {row.line}: {message}"
    return Entry(
        row.index,
        row.line,
        outcome.status.value,
        described[first],
        described[second],
        outcome.error_code,
        message,
        outcome.request_id,
        settled=outcome.settled or outcome.status in _ALWAYS_SETTLED,
    )


async def _rows_to_send(
    rows: Iterator[Row], journal: Journal, retry_unknown: bool, counters: dict[str, int]
) -> AsyncIterator[Row]:
    """The input's rows, less those a previous run finished (a streaming merge, flat memory)."""
    states = journal.states()
    unsafe: list[Entry] = []
    try:
        state = await anext(states, None)
        for n, row in enumerate(rows):
            if n % 512 == 511:
                await anyio.lowlevel.checkpoint()
            while state is not None and state.index < row.index:
                state = await anext(states, None)
            if state is not None and state.index == row.index:
                action = resume(
                    state.state, state.settled, state.idempotent, retry_unknown=retry_unknown
                )
                if action is not Resume.SEND:
                    counters["skipped"] += 1
                    if action is Resume.UNKNOWN:
                        unsafe.append(
                            Entry(row.index, row.line, "unknown", error_message=UNSAFE_RESEND)
                        )
                        if len(unsafe) >= 500:
                            await journal.record(unsafe)
                            unsafe = []
                    continue
            yield row
    finally:
        await states.aclose()
        await journal.record(unsafe)


# -- outputs ---------------------------------------------------------------------------------


def _check_outputs(options: ApplyOptions) -> None:
    """Find an unwritable --report / --failures before anything is sent, by opening it."""
    named = [("--report", options.report), ("--failures", options.failures)]
    seen: dict[str, str] = {}
    others = {"INPUT": options.input, "--journal": options.journal}
    for option, path in named:
        if not path:
            continue
        where = os.path.realpath(path)
        for other, other_path in [*seen.items(), *others.items()]:
            if other_path and other_path != "-" and os.path.realpath(other_path) == where:
                raise UsageError(f"{option} and {other} name the same file: {_shown(path)}")
        seen[option] = path
        _probe(option, path)


def _check_journal_path(path: str | None) -> None:
    # Before the lock file is made next to it: a directory is a usage mistake.
    if path and Path(path).is_dir():
        raise UsageError(f"--journal {_shown(path)} is a directory; give a file path")


def _probe(option: str, path: str) -> None:
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{option} {_shown(path)} is a directory; give a file path")
    existed = os.path.lexists(target)
    try:
        with target.open("a", encoding="utf-8"):  # creates nothing it does not keep
            pass
    except OSError as exc:
        raise UsageError(
            f"{option} {_shown(path)} cannot be written ({exc.strerror or 'error'}); "
            "nothing was sent"
        ) from None
    if not existed:
        target.unlink(missing_ok=True)


def _write_report(path: str, summary: dict[str, Any]) -> None:
    # ensure_ascii: a lone surrogate from foreign text is written as its \u escape.
    Path(path).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def _failure_cells(failure: Failure, kind: _Kind) -> dict[str, Any]:
    first, second = kind.ref_columns
    return {
        "index": failure.index,
        "line": failure.line,
        first: failure.ref_id,
        second: failure.ref_type,
        "status": failure.state,
        "error_code": failure.error_code,
        "error_message": failure.error_message,
        "request_id": failure.request_id,
    }


def _write_failures(path: str, kind: _Kind, failures: Iterator[Failure]) -> None:
    """The failures CSV in the library's layout (``failure_columns``), streamed."""
    with Path(path).open("w", encoding="utf-8", newline="") as out:
        write_csv(out, kind.failure_columns, (_failure_cells(f, kind) for f in failures))


def _shown(text: object) -> str:
    """Text safe to print whatever it holds (a path with undecodable bytes, say)."""
    return excerpt(text, 4000)


# -- dry run ------------------------------------------------------------------------------------


async def _dry_run(options: ApplyOptions, kind: _Kind, out: IO[str], err: IO[str]) -> int:
    spec = RowSpec(kind, None)  # validation only: nothing is sent
    total = 0
    problems: list[Failure] = []
    with open_input(options.input, kind.columns) as rows:
        for row in rows:
            total += 1
            try:
                spec.prepare(row)
            except ValidationError as exc:
                first, second = kind.refs(row.data)
                message = str(exc) if str(exc).startswith("line ") else f"line {row.line}: {exc}"
                problems.append(
                    Failure(
                        row.index,
                        row.line,
                        stored_ref(first),
                        stored_ref(second),
                        "invalid",
                        exc.code,
                        excerpt(message),
                        None,
                    )
                )
    invalid = len(problems)
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
    unwritten: list[str] = []
    if options.report:
        report = {**summary, "invalid_rows": [_failure_cells(p, kind) for p in problems]}
        unwritten += await _output("report", options.report, _write_report, report)
    if options.failures:
        unwritten += await _output(
            "failures CSV", options.failures, _write_failures, kind, iter(problems)
        )
    print(
        f"{kind.name} dry run: {total:,} rows, {total - invalid:,} valid, {invalid:,} invalid; "
        "nothing sent",
        file=out,
    )
    for problem in problems[:20]:
        print(f"  {_shown(problem.error_message)}", file=out)
    if invalid > 20:
        print(f"  ... and {invalid - 20:,} more", file=out)
    for sentence in unwritten:
        print(f"capillary-async: error: {sentence}", file=err)
    return EXIT_OK if invalid == 0 and not unwritten else EXIT_NOT_ALL_SUCCEEDED


async def _output(what: str, path: str, write: Callable[..., object], *args: Any) -> list[str]:
    """``write(path, *args)`` in a worker thread; a failure is a sentence, not a traceback."""
    try:
        await anyio.to_thread.run_sync(write, path, *args)
    except OSError as exc:
        return [f"the {what} could not be written to {_shown(path)} ({exc.strerror or 'error'})"]
    return []


# -- apply ------------------------------------------------------------------------------------


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
    """Run one file through the bulk engine; returns the exit status.

    Everything that can be found wrong before sending (the input's header, an
    empty input, an unwritable output, a journal in use or not a journal) is a
    ``UsageError`` raised before the first request.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    kind = _Kind(options.kind)
    if options.input != "-" and not await anyio.Path(options.input).is_file():
        raise UsageError(f"INPUT: no such file: {_shown(options.input)}")
    _check_outputs(options)
    if options.dry_run:
        return await _dry_run(options, kind, out, err)
    if base_url is None or auth is None:
        raise UsageError("a target and credentials are needed to send anything")
    if options.journal and options.input == "-":
        raise UsageError("--journal needs an INPUT file: standard input cannot be resumed")
    _check_journal_path(options.journal)

    with open_input(options.input, kind.columns) as rows:
        if options.journal:
            lock = JournalLock(Path(options.journal))
            try:
                lock.acquire()
            except JournalError as exc:
                raise UsageError(str(exc)) from None
            try:
                status, _ = await _run(
                    options,
                    kind,
                    rows,
                    journal_path=Path(options.journal),
                    base_url=base_url,
                    auth=auth,
                    out=out,
                    err=err,
                    fancy=fancy,
                    clock=clock,
                )
            finally:
                lock.release()
            return status
        # Without --journal, a scratch one keeps memory flat and the report exact.
        scratch = Path(tempfile.mkdtemp(prefix="capillary-job-"))
        keep = False
        try:
            status, keep = await _run(
                options,
                kind,
                rows,
                journal_path=scratch / "journal.db",
                base_url=base_url,
                auth=auth,
                out=out,
                err=err,
                fancy=fancy,
                clock=clock,
            )
        finally:
            if not keep:
                shutil.rmtree(scratch, ignore_errors=True)
        if keep:  # an output could not be written: the outcomes are all in the journal
            kept = _shown(scratch / "journal.db")
            print(
                f"capillary-async: the journal is kept in {kept} with every outcome;\n"
                f"  rerun the same command with --journal {kept} to write the outputs",
                file=err,
            )
        return status


async def _run(
    options: ApplyOptions,
    kind: _Kind,
    rows: Iterator[Row],
    *,
    journal_path: Path,
    base_url: str,
    auth: Auth,
    out: IO[str],
    err: IO[str],
    fancy: bool | None,
    clock: Clock | None,
) -> tuple[int, bool]:
    """Open the journal and run the job: the exit status, and whether an output failed."""
    stamp = (
        await anyio.to_thread.run_sync(fingerprint, kind.name, options.input, base_url)
        if options.input != "-"
        else "stdin"
    )
    try:
        journal = await Journal.open(journal_path, stamp)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    try:
        run = _JobRun(options, kind, journal, out=out, err=err, fancy=fancy)
        status = await run.run(rows, base_url, auth, clock)
    finally:
        await journal.close()
    return status, bool(run.output_problems)


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
        #: Rows of this run sent and still without an outcome: index -> line.
        self.in_flight: dict[int, int] = {}
        self.output_problems: list[str] = []

    async def run(self, rows: Iterator[Row], base_url: str, auth: Auth, clock: Clock | None) -> int:
        options = self.options
        total = await anyio.to_thread.run_sync(count_rows, options.input)
        started = time.perf_counter()
        async with CapillaryClient(
            base_url,
            auth=auth,
            max_connections=max(10, options.concurrency),
            clock=clock,
            max_response_bytes=options.max_response_bytes,
        ) as client:
            inner = (
                _ExpirySpec(client, UNSET)
                if self.kind.name == "expiry"
                else _RedemptionSpec(client, UNSET)
            )
            spec = RowSpec(self.kind, inner)
            job: Job[Prepared, Any] = Job(
                spec,
                _rows_to_send(rows, self.journal, options.retry_unknown, self.counters),
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
        await self._write_outputs(summary)
        _print_summary(summary, options, self.out)
        for problem in self.output_problems:
            print(f"capillary-async: error: {problem}", file=self.err)
        if self.interrupts:
            return EXIT_INTERRUPTED
        if self.output_problems or summary["succeeded"] != summary["total"]:
            return EXIT_NOT_ALL_SUCCEEDED
        return EXIT_OK

    async def _write_outputs(self, summary: dict[str, Any]) -> None:
        """The report and the failures CSV; the journal holds everything either way."""
        options = self.options
        if options.report:
            self.output_problems += await _output("report", options.report, _write_report, summary)
        if options.failures:
            writer = functools.partial(_write_failures, options.failures, self.kind)
            try:
                await self.journal.export_failures(writer)
            except OSError as exc:
                self.output_problems.append(
                    f"the failures CSV could not be written to {_shown(options.failures)} "
                    f"({exc.strerror or 'error'})"
                )

    async def _mark_in_flight(self, spec: RowSpec, items: list[Prepared]) -> None:
        for p in items:
            self.in_flight[p.row.index] = p.row.line
        await self.journal.mark_in_flight(
            [(p.row.index, p.row.line, spec.idempotent(p), *self.kind.refs(p.model)) for p in items]
        )

    async def _drive(self, job: Job[Prepared, Any], spec: RowSpec, total: int | None) -> None:
        """Run the job, journal each chunk's outcomes, show progress, handle Ctrl-C."""
        send, receive = anyio.create_memory_object_stream[ItemOutcome](job.chunk_size)
        pending: list[Entry] = []
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
                            entry = _entry(spec, outcome)
                            pending.append(entry)
                            self.in_flight.pop(entry.index, None)
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
                    # Sent, and the answer never came (a second Ctrl-C): not "not attempted".
                    await self.journal.record(
                        Entry(index, line, "unknown", error_message=ABORTED_IN_FLIGHT)
                        for index, line in sorted(self.in_flight.items())
                    )
                    self.in_flight.clear()
                    await self.journal.add_counters(
                        requests=job.report.requests,
                        retried_requests=job.report.retried_requests,
                        split_requests=job.report.split_requests,
                    )

    @property
    def done(self) -> int:
        return self.processed + self.counters["skipped"]


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
        # Rows left in flight by an earlier run this one did not reach were sent too.
        "unknown": states.get("unknown", 0) + states.get("in_flight", 0),
        "not_attempted": states.get("not_attempted", 0),
        "requests": counters.get("requests", 0),
        "retried_requests": counters.get("retried_requests", 0),
        "split_requests": counters.get("split_requests", 0),
        "elapsed_seconds": round(elapsed, 3),
        "items_per_second": round(processed / elapsed, 1) if elapsed > 0 else 0.0,
        "failures_by_code": data["failures_by_code"],
        "stop_reason": None if job.report.stop_reason is None else excerpt(job.report.stop_reason),
        "anomalies": [excerpt(note) for note in job.report.anomalies[:100]],
        "journal": options.journal,
    }
    if states.get("in_flight"):
        summary["in_flight"] = states["in_flight"]
    return summary


def _print_summary(summary: dict[str, Any], options: ApplyOptions, out: IO[str]) -> None:
    codes = ", ".join(
        f"{code}: {count:,}" for code, count in sorted(summary["failures_by_code"].items())
    )
    print(
        f"\n{summary['kind']} apply: {summary['total']:,} rows from {_shown(options.input)}",
        file=out,
    )
    for label, key in (
        ("succeeded", "succeeded"),
        ("failed", "failed"),
        ("invalid", "invalid"),
        ("unknown", "unknown"),
        ("not attempted", "not_attempted"),
    ):
        print(f"  {label:<14}{summary[key]:>10,}", file=out)
    if codes:
        print(f"  by code: {_shown(codes)}", file=out)
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
            print(f"  {label}: {_shown(path)}", file=out)


def _catch_sigint(handler: Any) -> Any:
    """Route Ctrl-C to ``handler`` while a job runs; returns the undo."""
    import asyncio

    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, handler)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGINT)
