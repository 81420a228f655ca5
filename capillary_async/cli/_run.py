"""``expiry apply`` and ``redemption apply``: a file, the bulk engine, a journal, a report."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
import attrs

from .. import UNSET, CapillaryClient
from .._auth import Auth
from .._batch import ItemOutcome, Job, Merged, OutcomeStatus, failure_columns, write_csv
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
    JournalIOError,
    JournalLock,
    Resume,
    file_kind,
    fingerprint,
    resume,
    shown,
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
_RERUN_FINISH = (
    "rerun the same command with --journal {} to finish the job without repeating what was sent"
)
#: States in which an earlier run may have applied a row.
_MAYBE_APPLIED = frozenset({"unknown", "in_flight"})
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
    """The endpoint's spec, over rows: keeps each item's row (index and line) with it.

    ``on_request`` hears of the items of every request just before it is made:
    from then on they may have reached the server.
    """

    def __init__(
        self,
        kind: _Kind,
        inner: Any,
        on_request: Callable[[list[Prepared]], None] | None = None,
    ) -> None:
        self.kind = kind
        self.inner = inner
        self.on_request = on_request
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
        except RecursionError:  # the reader bounds nesting; a row must never end the job
            raise ValidationError(f"line {raw.line}", "nested too deeply to read") from None

    def key(self, item: Prepared) -> Hashable:
        key: Hashable = self.inner.key(item.model)
        return key

    def idempotent(self, item: Prepared) -> bool:
        return bool(self.inner.idempotent(item.model))

    async def send(self, items: list[Prepared]) -> tuple[Any, str | None]:
        if self.on_request is not None:
            self.on_request(items)
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


# -- outputs ---------------------------------------------------------------------------------


@attrs.define
class _Output:
    """Where ``--report`` or ``--failures`` goes, checked before anything is sent.

    A regular file (or one to be made) is written by its path at the end. A pipe
    or a device (``>(gzip > f.gz)``, ``/dev/stdout``, ``/dev/null``) is opened
    at once without blocking, and held open until written: a named pipe that
    nothing reads is refused rather than waited on, and a reader that is there
    does not get an end of file before the output.
    """

    option: str
    path: str
    fd: int | None = None

    def open(self, newline: str | None) -> IO[str]:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            return os.fdopen(fd, "w", encoding="utf-8", newline=newline)
        return Path(self.path).open("w", encoding="utf-8", newline=newline)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


@attrs.define
class _Outputs:
    report: _Output | None = None
    failures: _Output | None = None

    def close(self) -> None:
        for output in (self.report, self.failures):
            if output is not None:
                output.close()


#: Files SQLite and the lock keep next to a journal: an output written there ruins it.
_COMPANIONS = (
    ("-wal", "the journal's write-ahead log"),
    ("-shm", "the journal's shared-memory index"),
    ("-journal", "the journal's rollback journal"),
    (".lock", "the journal's lock file"),
)


def _protected(options: ApplyOptions) -> list[tuple[str, str]]:
    """Files an output must not be: the input, the journal and the files beside it."""
    files = [] if options.input == "-" else [("INPUT", options.input)]
    if options.journal:
        files.append(("--journal", options.journal))
        for base in dict.fromkeys([options.journal, os.path.realpath(options.journal)]):
            files += [(label, base + suffix) for suffix, label in _COMPANIONS]
    return files


def _same_file(path: str, other: str) -> bool:
    """The same file by any name: one real path, or one inode (a hard link)."""
    if os.path.realpath(path) == os.path.realpath(other):
        return True
    try:
        return os.path.samefile(path, other)
    except (OSError, ValueError):  # one of them does not exist (yet)
        return False


def _check_outputs(options: ApplyOptions) -> _Outputs:
    """Find an unusable --report / --failures before anything is sent, by opening it."""
    outputs = _Outputs()
    protected = _protected(options)
    try:
        for option, path in (("--report", options.report), ("--failures", options.failures)):
            if path:
                setattr(outputs, option[2:], _check_output(option, path, protected))
                protected.append((option, path))
    except BaseException:
        outputs.close()
        raise
    return outputs


def _check_output(option: str, path: str, protected: list[tuple[str, str]]) -> _Output:
    for label, other in protected:
        if _same_file(path, other):
            raise UsageError(
                f"{option} {_shown(path)} is the same file as {label}; "
                "give another path (nothing was sent)"
            )
    return _probe(option, path)


def _standard_streams() -> list[os.stat_result]:
    found = []
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            found.append(os.fstat(fd))
    return found


def _probe(option: str, path: str) -> _Output:
    shown_path = _shown(path)
    info = _existing(option, path, "written")
    if info is not None and stat.S_ISREG(info.st_mode):
        for stream in _standard_streams():
            if (stream.st_dev, stream.st_ino) == (info.st_dev, info.st_ino):
                # Opened again and truncated, it would be overwritten by the summary.
                raise UsageError(
                    f"{option} {shown_path} is the file standard output or standard error "
                    "goes to; give another path (nothing was sent)"
                )
    if info is None or stat.S_ISREG(info.st_mode):
        existed = info is not None
        try:
            with Path(path).open("a", encoding="utf-8"):  # creates nothing it does not keep
                pass
        except OSError as exc:
            raise UsageError(
                f"{option} {shown_path} cannot be written ({exc.strerror or 'error'}); "
                "nothing was sent"
            ) from None
        if not existed:
            Path(path).unlink(missing_ok=True)
        return _Output(option, path)
    if stat.S_ISFIFO(info.st_mode) or stat.S_ISCHR(info.st_mode):
        return _Output(option, path, _open_stream(option, path))
    raise UsageError(
        f"{option} {shown_path} is {file_kind(info.st_mode)}; give a file path, a pipe "
        "or a device (nothing was sent)"
    )


def _open_stream(option: str, path: str) -> int:
    """A pipe or device opened for writing now, without waiting for a reader."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a named pipe with no reader
            raise UsageError(
                f"{option} {_shown(path)} is a named pipe that nothing is reading; start "
                "its reader first, or give a file path (nothing was sent)"
            ) from None
        raise UsageError(
            f"{option} {_shown(path)} cannot be written ({exc.strerror or 'error'}); "
            "nothing was sent"
        ) from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):  # replaced since it was looked at
        os.close(fd)
        raise UsageError(f"{option} {_shown(path)} changed while it was checked; run again")
    os.set_blocking(fd, True)  # the output itself may wait for a slow reader
    return fd


def _check_input(path: str) -> None:
    if path == "-":
        return
    try:
        info = os.stat(path)
    except OSError:
        raise UsageError(f"INPUT: no such file: {_shown(path)}") from None
    if not stat.S_ISREG(info.st_mode):
        # It is read more than once (counted, fingerprinted, sent): a pipe cannot be.
        raise UsageError(
            f"INPUT {_shown(path)} is {file_kind(info.st_mode)}, not a regular file; "
            "give a file, or - to read JSONL from standard input"
        )


def _existing(option: str, path: str, verb: str) -> os.stat_result | None:
    """What is at ``path`` (None: nothing yet), found without opening it (never blocks).

    A directory, or a path that cannot even be looked at, is a usage error.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(
            f"{option} {_shown(path)} cannot be {verb} ({exc.strerror or 'error'}); "
            "nothing was sent"
        ) from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{option} {_shown(path)} is a directory; give a file path")
    return info


def _check_journal_path(options: ApplyOptions) -> None:
    """A journal is a regular file, or none yet; checked without opening it (never blocks)."""
    path = options.journal
    if not path:
        return
    info = _existing("--journal", path, "used")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise UsageError(
            f"--journal {_shown(path)} is {file_kind(info.st_mode)}, not a regular file; "
            "give the path of a journal file (it is made if it does not exist)"
        )
    if options.input != "-" and _same_file(path, options.input):
        raise UsageError(f"--journal {_shown(path)} is the same file as INPUT; give another path")


def _write_report(target: _Output, summary: dict[str, Any]) -> None:
    # ensure_ascii: a lone surrogate from foreign text is written as its \u escape.
    with target.open(None) as out:
        out.write(json.dumps(summary, indent=2) + "\n")


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


def _write_failures(target: _Output, kind: _Kind, failures: Iterator[Failure]) -> None:
    """The failures CSV in the library's layout (``failure_columns``), streamed."""
    with target.open("") as out:
        write_csv(out, kind.failure_columns, (_failure_cells(f, kind) for f in failures))


def _shown(text: object) -> str:
    """Text safe to print whatever it holds (control characters, undecodable bytes)."""
    return shown(text)


# -- dry run ------------------------------------------------------------------------------------


async def _dry_run(
    options: ApplyOptions, kind: _Kind, outputs: _Outputs, out: IO[str], err: IO[str]
) -> int:
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
    if outputs.report is not None:
        report = {**summary, "invalid_rows": [_failure_cells(p, kind) for p in problems]}
        unwritten += await _output("report", outputs.report, _write_report, report)
    if outputs.failures is not None:
        unwritten += await _output(
            "failures CSV", outputs.failures, _write_failures, kind, iter(problems)
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


async def _output(
    what: str, target: _Output, write: Callable[..., object], *args: Any
) -> list[str]:
    """``write(target, *args)`` in a worker thread; a failure is a sentence, not a traceback."""
    try:
        await anyio.to_thread.run_sync(write, target, *args)
    except OSError as exc:
        return [
            f"the {what} could not be written to {_shown(target.path)} ({exc.strerror or 'error'})"
        ]
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
    empty input, an unusable output or journal path, a journal in use or not a
    journal) is a ``UsageError`` raised before the first request.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    kind = _Kind(options.kind)
    _check_input(options.input)
    outputs = _check_outputs(options)
    try:
        if options.dry_run:
            return await _dry_run(options, kind, outputs, out, err)
        if base_url is None or auth is None:
            raise UsageError("a target and credentials are needed to send anything")
        if options.journal and options.input == "-":
            raise UsageError("--journal needs an INPUT file: standard input cannot be resumed")
        _check_journal_path(options)
        context = _Context(options, kind, outputs, base_url, auth, out, err, fancy, clock)
        with open_input(options.input, kind.columns) as rows:
            if options.journal:
                return await _with_journal(context, rows, Path(options.journal))
            return await _with_scratch_journal(context, rows)
    finally:
        outputs.close()


@attrs.frozen
class _Context:
    """What a run needs besides its rows and journal."""

    options: ApplyOptions
    kind: _Kind
    outputs: _Outputs
    base_url: str
    auth: Auth
    out: IO[str]
    err: IO[str]
    fancy: bool | None
    clock: Clock | None


async def _with_journal(context: _Context, rows: Iterator[Row], path: Path) -> int:
    lock = JournalLock(path)
    try:
        lock.acquire()
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    try:
        status, _ = await _run(context, rows, lock.path, lock.name, lock)
    finally:
        lock.release()
    return status


async def _with_scratch_journal(context: _Context, rows: Iterator[Row]) -> int:
    """Without --journal, a scratch one keeps memory flat and the report exact."""
    scratch = Path(tempfile.mkdtemp(prefix="capillary-job-"))
    path = scratch / "journal.db"
    keep: str | None = None
    try:
        status, keep = await _run(context, rows, path, f"scratch journal {_shown(path)}", None)
    finally:
        if keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    if keep is not None:
        kept = _shown(path)
        print(
            f"capillary-async: the journal is kept in {kept} {keep.format(kept)}", file=context.err
        )
    return status


async def _run(
    context: _Context, rows: Iterator[Row], path: Path, name: str, lock: JournalLock | None
) -> tuple[int, str | None]:
    """Open the journal and run the job: the exit status, and why to keep the journal if so."""
    options = context.options
    stamp = (
        await anyio.to_thread.run_sync(
            fingerprint, context.kind.name, options.input, context.base_url
        )
        if options.input != "-"
        else "stdin"
    )
    try:
        journal = await Journal.open(path, stamp, name=name)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    if lock is not None:
        lock.opened = True  # SQLite has it now: the lock never removes it
    try:
        if lock is not None and not lock.holds(path):
            raise UsageError(f"{name} was replaced while it was opened; nothing was sent")
        run = _JobRun(context, journal)
        status = await run.run(rows)
    finally:
        with contextlib.suppress(JournalIOError):  # whatever it could not save, it has said
            await journal.close()
    return status, run.keep_reason


class _JobRun:
    """One run of ``apply``: the job, its journal, the display and Ctrl-C.

    The journal must know every request before it is made, so a failure to
    write it stops the job: a chunk it cannot mark in flight is not sent, and
    after an outcome it cannot record nothing more is sent, while the requests
    in flight finish. The run then reports its counts from memory.
    """

    def __init__(self, context: _Context, journal: Journal) -> None:
        self.context = context
        self.options = context.options
        self.kind = context.kind
        self.journal = journal
        self.out = context.out
        self.err = context.err
        self.counters = {"skipped": 0}
        self.interrupts = 0
        self.processed = 0
        self.failures = 0
        self.job: Job[Prepared, Any] | None = None
        #: Rows marked in flight in the journal and still without an outcome: index -> line.
        self.in_flight: dict[int, int] = {}
        #: Of those, the rows handed to a request (they may have reached the server).
        self.handed: set[int] = set()
        #: Rows of this run that an earlier run left unknown or in flight.
        self.maybe_applied_before: set[int] = set()
        #: Rows aborted in flight (a second Ctrl-C), reported unknown.
        self.aborted = 0
        #: Why the journal could not be written or read, the first time it could not.
        self.journal_problem: str | None = None
        #: Whether the journal holds every outcome this run knows.
        self.journal_complete = True
        #: Whether that failure stopped the job (rather than came once it had ended).
        self.stopped_by_journal = False
        self.job_done = False
        self.output_problems: list[str] = []

    @property
    def keep_reason(self) -> str | None:
        """Why a scratch journal must be kept (what it holds, what a rerun with it does)."""
        if not self.journal_complete:
            return "with every request this run made;\n  once the cause is fixed, " + _RERUN_FINISH
        if self.journal_problem:
            return "with every outcome;\n  " + _RERUN_FINISH
        if self.output_problems:
            return (
                "with every outcome;\n  rerun the same command with --journal {} "
                "to write the outputs"
            )
        return None

    async def run(self, rows: Iterator[Row]) -> int:
        options, context = self.options, self.context
        total = await anyio.to_thread.run_sync(count_rows, options.input)
        started = time.perf_counter()
        async with CapillaryClient(
            context.base_url,
            auth=context.auth,
            max_connections=max(10, options.concurrency),
            clock=context.clock,
            max_response_bytes=options.max_response_bytes,
        ) as client:
            inner = (
                _ExpirySpec(client, UNSET)
                if self.kind.name == "expiry"
                else _RedemptionSpec(client, UNSET)
            )
            spec = RowSpec(self.kind, inner, on_request=self._handed)
            job: Job[Prepared, Any] = Job(
                spec,
                self._rows_to_send(rows),
                clock=client.clock,
                retry=client.retry,
                chunk_size=options.chunk_size if self.kind.name == "expiry" else 1,
                concurrency=options.concurrency,
                rate_limit=options.rate,
                fail_fast=options.fail_fast,
                keep_failures=False,
                on_send=lambda items: self._mark_in_flight(spec, items),
            )
            self.job = job
            await self._drive(job, spec, total)
        elapsed = time.perf_counter() - started
        summary: dict[str, Any] | None = None
        if self.journal_problem is None:
            try:
                summary = await _summary(
                    self.journal, self.kind, options, job, elapsed=elapsed, processed=self.processed
                )
            except JournalIOError as exc:
                self._journal_failed(exc)
        if summary is None:  # this run's counts are known in memory whatever the journal says
            summary = self._summary_from_memory(job, elapsed)
        await self._write_outputs(summary)
        _print_summary(summary, options, self.out)
        for problem in self.output_problems:
            print(f"capillary-async: error: {problem}", file=self.err)
        if self.journal_problem is not None:
            print(self._journal_message(), file=self.err)
            return EXIT_NOT_ALL_SUCCEEDED
        if self.interrupts:
            return EXIT_INTERRUPTED
        if self.output_problems or summary["succeeded"] != summary["total"]:
            return EXIT_NOT_ALL_SUCCEEDED
        return EXIT_OK

    # -- the journal failing ---------------------------------------------------------------

    def _journal_failed(self, exc: JournalIOError) -> None:
        """Stop the job at the journal's first failure: nothing more is sent."""
        if self.journal_problem is None:
            self.journal_problem = str(exc)
            if self.job is not None and not self.job_done:
                self.stopped_by_journal = True
                self.job.stop(f"{exc}: nothing more is sent", drain=False)

    async def _save(self, entries: list[Entry]) -> bool:
        """Record outcomes; False (and the job stopped) if the journal cannot be written."""
        try:
            await self.journal.record(entries)
        except JournalIOError as exc:
            self._journal_failed(exc)
            return False
        return True

    def _journal_message(self) -> str:
        problem = f"capillary-async: error: {self.journal_problem}."
        if self.stopped_by_journal:
            problem += " The job was stopped: nothing more was sent."
        if self.journal_complete:
            return (
                f"{problem} Every outcome this run knows was saved in the journal nonetheless: "
                "rerun the same command to finish the job"
            )
        return (
            f"{problem} The counts above are this run's, from memory. The journal does not hold "
            "every outcome of this run: a rerun with it sends again every row without a "
            "recorded verdict, except FIXED_DAYS / FIXED_MONTHS rows recorded as in flight "
            "(they may have been applied), which stay unknown until you check them and "
            "rerun with --retry-unknown. Free disk space (or fix the cause), then rerun the "
            "same command."
        )

    def _summary_from_memory(self, job: Job[Prepared, Any], elapsed: float) -> dict[str, Any]:
        """This run's counts, from the job's report, when the journal cannot give them."""
        report = job.report
        skipped = self.counters["skipped"]
        return {
            "input": self.options.input,
            "kind": self.kind.name,
            "total": report.total + skipped,
            "succeeded": report.succeeded,
            "failed": report.failed,
            "invalid": report.invalid,
            "unknown": report.unknown + self.aborted,
            "not_attempted": report.not_attempted,
            "skipped": skipped,
            "requests": report.requests,
            "retried_requests": report.retried_requests,
            "split_requests": report.split_requests,
            "elapsed_seconds": round(elapsed, 3),
            "items_per_second": round(self.processed / elapsed, 1) if elapsed > 0 else 0.0,
            "failures_by_code": {
                excerpt(code, 40): count for code, count in report.failures_by_code.items()
            },
            "stop_reason": None if report.stop_reason is None else excerpt(report.stop_reason),
            "anomalies": [excerpt(note) for note in report.anomalies[:100]],
            "journal": self.options.journal,
            "journal_error": self.journal_problem,
            "complete": False,
        }

    # -- rows ----------------------------------------------------------------------------

    async def _rows_to_send(self, rows: Iterator[Row]) -> AsyncIterator[Row]:
        """The input's rows, less those a previous run finished (a streaming merge, flat memory)."""
        journal = self.journal
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
                        state.state,
                        state.settled,
                        state.idempotent,
                        retry_unknown=self.options.retry_unknown,
                    )
                    if action is not Resume.SEND:
                        self.counters["skipped"] += 1
                        if action is Resume.UNKNOWN:
                            unsafe.append(
                                Entry(row.index, row.line, "unknown", error_message=UNSAFE_RESEND)
                            )
                            if len(unsafe) >= 500:
                                if not await self._save(unsafe):
                                    return
                                unsafe = []
                        continue
                    if state.state in _MAYBE_APPLIED:
                        self.maybe_applied_before.add(row.index)
                yield row
        except JournalIOError as exc:  # it cannot be read: the input ends here
            self._journal_failed(exc)
        finally:
            await states.aclose()
            if unsafe and self.journal_problem is None:
                await self._save(unsafe)  # they stay in flight otherwise: a rerun says the same

    async def _mark_in_flight(self, spec: RowSpec, items: list[Prepared]) -> None:
        """Commit the rows of a chunk as in flight before it is sent; raising stops the send."""
        if self.journal_problem is not None:
            raise JournalIOError(self.journal_problem)
        for p in items:
            self.in_flight[p.row.index] = p.row.line
        try:
            await self.journal.mark_in_flight(
                [
                    (p.row.index, p.row.line, spec.idempotent(p), *self.kind.refs(p.model))
                    for p in items
                ]
            )
        except Exception as exc:
            # Rolled back: the rows are as they were, and the engine ends them not attempted.
            for p in items:
                self.in_flight.pop(p.row.index, None)
            if isinstance(exc, JournalIOError):
                self._journal_failed(exc)
            raise

    def _handed(self, items: list[Prepared]) -> None:
        self.handed.update(p.row.index for p in items)

    def _settle(self, outcome: ItemOutcome, entry: Entry) -> Entry | None:
        """Forget a row that has its outcome; the entry to record, if any."""
        index = entry.index
        self.in_flight.pop(index, None)
        self.handed.discard(index)
        if index in self.maybe_applied_before:
            self.maybe_applied_before.discard(index)
            if outcome.status is OutcomeStatus.NOT_ATTEMPTED:
                return None  # not sent now, and maybe applied before: it stays as it was
        if self.journal_problem is not None and outcome.status is OutcomeStatus.NOT_ATTEMPTED:
            return None  # never marked in flight: its journalled state is still right
        return entry

    def _unfinished(self) -> list[Entry]:
        """Rows marked in flight that never got an outcome (the run was aborted)."""
        entries = []
        for index, line in sorted(self.in_flight.items()):
            if index in self.handed:  # sent, and the answer never came
                self.aborted += 1
                entries.append(Entry(index, line, "unknown", error_message=ABORTED_IN_FLIGHT))
            elif index not in self.maybe_applied_before:  # never sent after all
                entries.append(Entry(index, line, "not_attempted"))
            # else: left in flight, as an earlier run left it
        self.in_flight.clear()
        return entries

    # -- running -------------------------------------------------------------------------

    async def _write_outputs(self, summary: dict[str, Any]) -> None:
        """The report and the failures CSV; the journal holds everything either way."""
        outputs = self.context.outputs
        if outputs.report is not None:
            self.output_problems += await _output("report", outputs.report, _write_report, summary)
        if outputs.failures is None:
            return
        if not self.journal_complete:
            self.output_problems.append(
                f"the failures CSV was not written to {_shown(outputs.failures.path)}: "
                "its rows come from the journal, which is incomplete"
            )
            return
        writer = functools.partial(_write_failures, outputs.failures, self.kind)
        try:
            await self.journal.export_failures(writer)
        except OSError as exc:
            self.output_problems.append(
                f"the failures CSV could not be written to {_shown(outputs.failures.path)} "
                f"({exc.strerror or 'error'})"
            )
        except JournalIOError as exc:
            self._journal_failed(exc)
            self.output_problems.append(
                f"the failures CSV was not written to {_shown(outputs.failures.path)}: {exc}"
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
                with Display(title, total, stream=self.err, fancy=self.context.fancy) as display:
                    async for outcome in receive:
                        self._take(spec, outcome, pending)
                        if len(pending) >= 1000 or not receive.statistics().current_buffer_used:
                            # After a failure, what is pending waits for one last try.
                            if self.journal_problem is None and await self._save(pending):
                                pending = []
                            display.update(self.done, self.failures)
                    display.update(self.done, self.failures, final=True)
            finally:
                restore()
                # An abort can land between the engine giving out outcomes and this
                # loop reading them: those answers came, so they are recorded as
                # such, not as "unknown".
                with contextlib.suppress(
                    anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError
                ):
                    while True:  # until the buffer is empty
                        self._take(spec, receive.receive_nowait(), pending)
                receive.close()
                self.job_done = True  # its outcomes are all in (or it was aborted)
                with anyio.CancelScope(shield=True):  # an abort still saves what is known
                    await self._save_last(job, pending + self._unfinished())

    def _take(self, spec: RowSpec, outcome: ItemOutcome, pending: list[Entry]) -> None:
        self.processed += 1
        self.failures += not outcome.ok
        entry = self._settle(outcome, _entry(spec, outcome))
        if entry is not None:
            pending.append(entry)

    async def _save_last(self, job: Job[Prepared, Any], entries: list[Entry]) -> None:
        """The outcomes not yet recorded, and the counters: one last try after a failure."""
        try:
            await self.journal.record(entries)
            await self.journal.add_counters(
                requests=job.report.requests,
                retried_requests=job.report.retried_requests,
                split_requests=job.report.split_requests,
            )
        except JournalIOError as exc:
            self._journal_failed(exc)
            self.journal_complete = False

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
        ("done before", "skipped"),  # from memory only: rows earlier runs finished
    ):
        if key in summary:
            print(f"  {label:<14}{summary[key]:>10,}", file=out)
    if summary.get("complete") is False:
        print("  (this run's counts, from memory: the journal could not be written)", file=out)
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
