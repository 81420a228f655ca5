"""``expiry apply`` / ``redemption apply``: a file through the public bulk API, with a journal.

The library does the work (chunks, retries, the journal and its resume rules,
the report and its writers); this module checks paths before anything is
sent, shows progress, turns Ctrl-C into a graceful stop, and prints.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
import attrs

from .. import (
    DEFAULT_MAX_RESPONSE_BYTES,
    Auth,
    BearerToken,
    BulkOptions,
    BulkReport,
    CapillaryClient,
    CapillaryError,
    Clock,
    InputError,
    InputFile,
    JournalError,
    OutcomeStatus,
    OutcomeStream,
)
from ._env import UsageError
from ._fleet import check_limiter, claim_shard, make_limiter
from ._paths import Output, Outputs, check_input, check_journal_path, check_outputs, shown
from ._progress import Display

__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "ApplyOptions", "apply"]

EXIT_OK, EXIT_NOT_ALL_SUCCEEDED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SUCCEEDED, INVALID = OutcomeStatus.SUCCEEDED, OutcomeStatus.INVALID

_RERUN_FINISH = (
    "rerun the same command with --journal {} to finish the job without repeating what was sent"
)
#: Where a dry run without a target "sends": nowhere, and it is never contacted.
_NOWHERE = "https://dry-run.invalid"


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
    #: Share the pace through this Redis (``--redis`` / ``CAPILLARY_REDIS_URL``).
    redis: str | None = None
    #: TLS files for that Redis (``--redis-ca``, ``--redis-cert``, ``--redis-key``).
    redis_ca: str | None = None
    redis_cert: str | None = None
    redis_key: str | None = None
    limiter_name: str | None = None
    adaptive: bool = False
    #: (k, n): every n-th row starting at row k.
    shard: tuple[int, int] | None = None
    #: Prove the target and the credentials with one harmless request first.
    preflight: bool = True


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
    """Run one file through the bulk API; returns the exit status.

    Everything that can be found wrong before sending (the input's header, an
    empty input, an unusable output or journal path, a journal in use or not a
    journal) is a ``UsageError`` raised before the first request.
    """
    run = _Run(options, out or sys.stdout, err or sys.stderr, fancy)
    check_input(options.input)
    outputs = check_outputs(options)
    try:
        source = InputFile(options.input, kind=options.kind, shard=options.shard)
        if source.path != "-":  # standard input can be read once only: checked as it is read
            try:
                await anyio.to_thread.run_sync(source.check)
            except InputError as exc:
                raise UsageError(str(exc)) from None
        if options.dry_run:
            if options.journal and base_url is None:
                raise UsageError("--dry-run with --journal needs the target the journal is for")
            base_url = base_url or _NOWHERE
            auth = auth or BearerToken("dry-run-never-sent")
        elif base_url is None or auth is None:
            raise UsageError("a target and credentials are needed to send anything")
        if options.redis and not options.rate and not options.dry_run:
            raise UsageError("--redis needs --rate: the requests per second the fleet shares")
        if options.adaptive and not options.rate:
            raise UsageError("--adaptive needs --rate: the rate to adapt below")
        if options.journal and options.input == "-":
            raise UsageError("--journal needs an INPUT file: standard input cannot be resumed")
        check_journal_path(options)
        if options.journal or options.dry_run:
            return await run.run(source, options.journal, base_url, auth, outputs, clock)
        # Without --journal, a scratch one keeps memory flat and the failures file exact.
        scratch = Path(tempfile.mkdtemp(prefix="capillary-job-"))
        path = str(scratch / "journal.db")
        try:
            status = await run.run(source, path, base_url, auth, outputs, clock)
        finally:
            if run.keep is None:
                shutil.rmtree(scratch, ignore_errors=True)
        if run.keep is not None:
            kept = shown(path)
            message = f"capillary-async: the journal is kept in {kept} {run.keep.format(kept)}"
            print(message, file=run.err)
        return status
    finally:
        outputs.close()


class _Run:
    """One run: the client, the job, the display, Ctrl-C, and the outputs."""

    def __init__(self, options: ApplyOptions, out: IO[str], err: IO[str], fancy: bool | None):
        self.options = options
        self.out = out
        self.err = err
        self.fancy = fancy
        self.interrupts = 0
        #: Why a scratch journal must be kept (what a rerun with it does), if it must.
        self.keep: str | None = None
        self.problems: list[str] = []
        #: The first invalid rows' reasons, shown after a dry run.
        self.invalid: list[str] = []

    async def run(  # noqa: PLR0917 - what apply found out, handed over once
        self,
        source: InputFile,
        journal: str | None,
        base_url: str,
        auth: Auth,
        outputs: Outputs,
        clock: Clock | None,
    ) -> int:
        options = self.options
        job = BulkOptions(
            chunk_size=options.chunk_size if options.kind == "expiry" else 1,
            concurrency=options.concurrency,
            # --rate is the client's pace (shared through Redis with --redis), not the job's.
            fail_fast=options.fail_fast,
            # The journal has them, in flat memory; a dry run writes no journal.
            keep_failures=options.dry_run,
            journal=journal,
            retry_unknown=options.retry_unknown,
            dry_run=options.dry_run,
            preflight=options.preflight,
        )
        total = await anyio.to_thread.run_sync(source.count)
        # Standard input cannot be resumed; a scratch journal still keeps memory flat.
        items = iter(source) if source.path == "-" else source
        limiter = make_limiter(options, base_url, auth)
        try:
            await check_limiter(limiter)
            async with (
                claim_shard(limiter, source, options.shard),
                CapillaryClient(
                    base_url,
                    auth=auth,
                    max_connections=max(10, options.concurrency),
                    clock=clock,
                    max_response_bytes=options.max_response_bytes,
                    limiter=limiter,
                ) as client,
            ):
                points = client.points
                stream = (
                    points.stream_update_expiry(items, options=job)
                    if options.kind == "expiry"
                    else points.stream_update_redemption(items, options=job)
                )
                running = False
                try:
                    async with stream as outcomes:
                        running = True
                        report = await self._drive(outcomes, total)
                except CapillaryError as exc:
                    if running or isinstance(exc, (JournalError, InputError)):
                        raise
                    # The preflight: a wrong URL, password or key, with nothing applied.
                    raise UsageError(
                        f"the target or the credentials do not work: {exc}; nothing was "
                        "applied (the check itself changes nothing; --no-preflight skips it)"
                    ) from None
        except (JournalError, InputError) as exc:  # found before anything was sent
            raise UsageError(str(exc)) from None
        finally:
            with anyio.CancelScope(shield=True):
                await limiter.aclose()
        report.input_total = total
        if self.interrupts and not options.journal and not options.dry_run:
            self.keep = "with every outcome;\n  " + _RERUN_FINISH
        if report.journal_error is not None and not options.journal:
            self.keep = (
                "with every request this run made;\n  once the cause is fixed, " + _RERUN_FINISH
                if not report.journal_complete
                else "with every outcome;\n  " + _RERUN_FINISH
            )
        await self._write_outputs(report, outputs)
        if self.problems and not options.journal and self.keep is None and not options.dry_run:
            self.keep = (
                "with every outcome;\n  rerun the same command with --journal {} "
                "to write the outputs"
            )
        self._print(report)
        return self._status(report)

    async def _drive(self, outcomes: OutcomeStream, total: int | None) -> BulkReport:
        """Consume the outcomes, showing progress; Ctrl-C stops, a second one aborts."""
        done = failures = 0
        with anyio.CancelScope() as scope:

            def on_interrupt() -> None:
                self.interrupts += 1
                if self.interrupts == 1:
                    print(
                        "\ninterrupted: finishing the requests in flight, sending nothing more "
                        "(Ctrl-C again to abort them)",
                        file=self.err,
                        flush=True,
                    )
                    outcomes.stop("interrupted")
                else:
                    scope.cancel()

            restore = _catch_sigint(on_interrupt)
            title = f"{self.options.kind} {'dry run' if self.options.dry_run else 'apply'}"
            try:
                with Display(title, total, stream=self.err, fancy=self.fancy) as display:
                    async for batch in outcomes.batches():
                        before = done
                        done += len(batch)
                        for outcome in batch:
                            if outcome.status is not SUCCEEDED:
                                failures += 1
                                if outcome.status is INVALID and len(self.invalid) < 20:
                                    self.invalid.append(outcome.error_message or "invalid")
                        if done // 100 != before // 100:
                            display.update(done, failures)
                    display.update(done, failures, final=True)
            finally:
                restore()
        return outcomes.report

    async def _write_outputs(self, report: BulkReport, outputs: Outputs) -> None:
        """The report and the failures CSV, both with the library's writers."""
        if outputs.report is not None:
            await self._output("report", outputs.report, None, report.write_json)
        if outputs.failures is None:
            return
        if report.journal_error is not None and not report.journal_complete:
            self.problems.append(
                f"the failures CSV was not written to {shown(outputs.failures.path)}: "
                "its rows come from the journal, which is incomplete"
            )
            return
        await self._output("failures CSV", outputs.failures, "", report.write_csv)

    async def _output(
        self, what: str, target: Output, newline: str | None, write: Callable[[IO[str]], None]
    ) -> None:
        """``write`` to ``target`` in a worker thread; a failure is a sentence, not a traceback."""

        def run() -> None:
            with target.open(newline) as stream:
                write(stream)

        try:
            await anyio.to_thread.run_sync(run)
        except OSError as exc:
            self.problems.append(
                f"the {what} could not be written to {shown(target.path)} "
                f"({exc.strerror or 'error'})"
            )
        except JournalError as exc:
            self.problems.append(f"the {what} was not written to {shown(target.path)}: {exc}")

    def _status(self, report: BulkReport) -> int:
        if report.journal_error is not None:
            return EXIT_NOT_ALL_SUCCEEDED
        if self.interrupts:
            return EXIT_INTERRUPTED
        if report.dry_run:
            return EXIT_OK if report.invalid == 0 and not self.problems else EXIT_NOT_ALL_SUCCEEDED
        if self.problems or not report.ok:
            return EXIT_NOT_ALL_SUCCEEDED
        return EXIT_OK

    def _print(self, report: BulkReport) -> None:
        options, out = self.options, self.out
        if report.dry_run:
            valid = report.total - report.invalid
            print(
                f"{options.kind} dry run: {report.total:,} rows, {valid:,} valid, "
                f"{report.invalid:,} invalid; nothing sent",
                file=out,
            )
            for problem in self.invalid:
                print(f"  {shown(problem)}", file=out)
            if report.invalid > len(self.invalid):
                print(f"  ... and {report.invalid - len(self.invalid):,} more", file=out)
        else:
            _print_summary(report, options, out)
        for problem in self.problems:
            print(f"capillary-async: error: {problem}", file=self.err)
        if report.journal_error is not None:
            print(_journal_message(report), file=self.err)


def _journal_message(report: BulkReport) -> str:
    problem = (
        f"capillary-async: error: {report.journal_error}. "
        "The job was stopped: nothing more was sent."
    )
    if report.journal_complete:
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


def _print_summary(report: BulkReport, options: ApplyOptions, out: IO[str]) -> None:
    summary = report.summary()
    codes = ", ".join(
        f"{code}: {count:,}" for code, count in sorted(summary["failures_by_code"].items())
    )
    print(f"\n{options.kind} apply: {report.total:,} rows from {shown(options.input)}", file=out)
    for label, value in (
        ("succeeded", report.succeeded),
        ("failed", report.failed),
        ("invalid", report.invalid),
        ("unknown", report.unknown),
        ("not attempted", report.not_attempted),
        ("done before", report.resumed),  # final in the journal from earlier runs
    ):
        print(f"  {label:<14}{value:>10,}", file=out)
    if report.journal_error is not None:
        print("  (this run's counts, from memory: the journal could not be written)", file=out)
    if codes:
        print(f"  by code: {shown(codes)}", file=out)
    print(
        f"  {report.requests:,} requests ({report.retried_requests:,} retried, "
        f"{report.split_requests:,} split), {report.elapsed:.1f} s, "
        f"{report.items_per_second:,.0f} items/s",
        file=out,
    )
    if report.stop_reason:
        print(f"  stopped early: {shown(report.stop_reason)}", file=out)
    if report.unread:
        print(
            f"  not read:     {report.unread:>10,} of the input's {report.input_total:,} rows "
            "(the run stopped before it read them)",
            file=out,
        )
    if options.journal and (report.stop_reason or not report.input_complete):
        command = [f"capillary-async {options.kind} apply", shlex.quote(options.input)]
        if options.shard is not None:
            command.append(f"--shard {options.shard[0]}/{options.shard[1]}")
        command.append(f"--journal {shlex.quote(options.journal)}")
        print(f"  to resume:    {shown(' '.join(command))} (with the same options)", file=out)
    for label, path in (
        ("report", options.report),
        ("failures", options.failures),
        ("journal", options.journal),
    ):
        if path:
            print(f"  {label}: {shown(path)}", file=out)


def _catch_sigint(handler: Callable[[], None]) -> Callable[[], Any]:
    """Route Ctrl-C to ``handler`` while a job runs; returns the undo."""
    import asyncio

    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, handler)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGINT)
