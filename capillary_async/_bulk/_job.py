"""The scheduler: one job is a task group holding a reader, a packer and ``concurrency`` workers.

- The reader pulls the input lazily, one held-item token per item (the tokens
  are the backpressure: a token comes back when its item's outcome is out),
  turns it into a model (a failure is an ``invalid`` outcome, sent nowhere)
  and adds it to the ``Chunker``.
- The packer turns the chunker's chunks into work. It sleeps on one event,
  ``_changed``, set when an item is added or released, and flushes a partial
  chunk when the input stalls for ``flush_after`` seconds.
- Workers send chunks one attempt at a time and merge the answers; after a
  failure ``decide`` says what to do. A chunk to be retried sleeps in a task of
  its own until it is due, so the workers carry on with fresh chunks.

Every item ends through ``_final``: the one place that counts, reports and
hands out an outcome, gives back its token and frees its key.
"""

from __future__ import annotations

import functools
import inspect
from collections import deque
from collections.abc import AsyncIterable, Iterable, Sequence, Sized
from typing import Any, Generic, Protocol, TypeVar

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from .. import _otel
from .._config import Clock, RetryPolicy
from .._exceptions import CapillaryError, excerpt
from .._limiter import Limiter, LocalLimiter
from .._logs import get_logger
from .._retry import OnRetry, maybe_applied
from ._chunker import Chunker
from ._files import InputFile
from ._flow import Chunk, Gate, Signal, send_fast
from ._options import BulkOptions
from ._outcomes import ItemOutcome, OutcomeStatus, Progress
from ._pacing import Budget, Pacer, RetryBudget
from ._reader import Reading
from ._recovery import Recovery
from ._report import MAX_ANOMALIES, BulkReport
from ._specs import BulkSpec

__all__ = ["Job", "JobHooks"]

logger = get_logger("bulk")

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")
Entry = tuple[int, Any]

SUCCEEDED, FAILED, INVALID, UNKNOWN, NOT_ATTEMPTED = (
    OutcomeStatus.SUCCEEDED,
    OutcomeStatus.FAILED,
    OutcomeStatus.INVALID,
    OutcomeStatus.UNKNOWN,
    OutcomeStatus.NOT_ATTEMPTED,
)


class JobHooks(Protocol):
    """What a journal adds to a job."""

    async def before(self, index: int, raw: Any) -> ItemOutcome | None:
        """An earlier run's final outcome for this input item, or None to process it."""
        ...

    async def on_send(self, entries: list[Entry]) -> None:
        """Items about to be written (not marked yet); raising keeps them home, stops the job."""
        ...

    async def on_unsent(self, entries: list[Entry]) -> None:
        """Items marked in flight whose attempt certainly was not applied: no longer in flight."""
        ...

    async def on_final(self, outcomes: Sequence[ItemOutcome]) -> None:
        """Outcomes as they are made final, in order (before the caller sees them)."""
        ...


class Job(Reading[ItemT], Recovery, Generic[ItemT, ResultT]):
    """One run of the engine over one input."""

    def __init__(
        self,
        spec: BulkSpec[ItemT, ResultT],
        items: Iterable[Any] | AsyncIterable[Any],
        options: BulkOptions,
        *,
        clock: Clock,
        retry: RetryPolicy,
        keep_failures: bool,
        hooks: JobHooks | None = None,
        limiter: Limiter | None = None,
        drain_on_stop: bool = True,
        on_retry: OnRetry | None = None,
    ) -> None:
        chunk_size = options.chunk_size
        if spec.max_chunk_size is not None:
            chunk_size = min(chunk_size, spec.max_chunk_size)
        self.spec = spec
        self.items = items
        self.options = options
        self.clock = clock
        self.retry = retry
        self.hooks = hooks
        #: The client's limiter, told of every 429 and Retry-After.
        self.limiter: Limiter = limiter if limiter is not None else LocalLimiter(clock=clock)
        self.chunker: Chunker[ItemT] = Chunker(chunk_size, spec.key)
        self.pacer = Pacer(clock, options.concurrency, options.rate_limit)
        self.budget = Budget(options.retry_budget or RetryBudget())
        self.report = BulkReport(
            keep_all=options.keep_all, keep_failures=keep_failures, describe=spec.describe
        )
        self.report._wire = spec.wire
        self.report.dry_run = options.dry_run
        # In flight, one chunk being built, and one waiting to retry.
        self.held_limit = chunk_size * (options.concurrency + 2)
        self.report.held_limit = self.held_limit
        self._held = Gate(self.held_limit)
        self._ready: deque[Chunk] = deque()
        self._unfinished = 0  # chunks made and not yet final (parked ones included)
        self._input_done = False
        self._packing_done = False
        self._changed = Signal()  # for the packer: an item was added or released
        self._work = Signal()  # for the workers: a chunk is ready, or the job is over
        self._stopping = False
        self._drain = True
        self._read = 0
        self._sent = 0
        self._lines: dict[int, int] = {}
        self._finalized: set[int] = set()
        self._watermark = 0
        self._started = clock.monotonic()
        self._out: MemoryObjectSendStream[list[ItemOutcome]] | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._parked: set[anyio.CancelScope] = set()
        #: Chunks waiting for a slot of the job's or the client's pace (not yet sent).
        self._waiting: set[anyio.CancelScope] = set()
        #: The pending read of an async input, if one is pending.
        self._reading: anyio.CancelScope | None = None
        self._patience = options.flush_after if options.flush_after is not None else 1.0
        self._yielded = 0.0
        #: The job's own stops read the rest of the input (a bulk call's report covers it).
        self._drain_on_stop = drain_on_stop
        #: The client's ``on_retry``, told of each chunk's retry too.
        self.on_retry = on_retry
        #: The job's span, when tracing is on (stops, pauses and retries are its events).
        self.span: Any = None
        #: Answers in a row that could not be read (reset by one that could).
        self._unreadable = 0

    @property
    def chunk_size(self) -> int:
        return self.chunker.size

    # -- running -----------------------------------------------------------------------

    async def run(self, out: MemoryObjectSendStream[list[ItemOutcome]]) -> None:
        """Run to the end, sending every outcome to ``out`` (closed when done)."""
        self._out = out
        self._started = self.clock.monotonic()
        try:
            async with out, anyio.create_task_group() as tg:
                self._task_group = tg
                tg.start_soon(self._reader)
                tg.start_soon(self._packer)
                for _ in range(self.options.concurrency):
                    tg.start_soon(self._worker)
        finally:
            out.close()  # also when cancelled before a task got to it
            self.report.elapsed = self.clock.monotonic() - self._started
            self.report.peak_held = self._held.peak
        await self._report_progress()

    def stop(self, reason: str, *, drain: bool | None = None) -> None:
        """Send nothing more: requests in flight finish, items not sent end ``not_attempted``.

        Chunks waiting for a pace slot or a retry stay home. ``drain=None`` (the
        job's own stops: a 401, ``fail_fast``, a spent budget) drains the input
        of a bulk call (its report covers every item) and, for a stream, only an
        input known to end (a sized collection, an ``InputFile``): a generator
        or a queue may never end, and is left unread. With ``drain=False``
        the rest of the input is not read at all (a pending read of an async
        input is abandoned; a journal knows those items are still pending), so
        the report covers only what was read. Draining reads on until the
        input ends or makes the job wait ``flush_after`` seconds (1 s when it
        is None) for its next item.
        """
        if drain is None:
            drain = self._drain_on_stop or isinstance(self.items, (Sized, InputFile))
        if not drain:
            self._drain = False
            if self._reading is not None:
                self._reading.cancel()
        elif self._reading is not None and not self._stopping:
            self._reading.deadline = anyio.current_time() + self._patience
        if not self._stopping:
            self._stopping = True
            self.report.stop_reason = reason
            logger.warning("bulk job stopping: %s", reason, extra={"stop_reason": reason})
            _otel.job_event(self.span, "stop", reason=reason)
            for scope in (*self._parked, *self._waiting):  # waiting chunks settle now
                scope.cancel()
            self._changed.set()
            self._work.set()

    def stopping(self) -> bool:
        """Whether the job is stopping (a method: the answer changes across awaits)."""
        return self._stopping

    # -- outcomes --------------------------------------------------------------------------

    def _outcome(  # noqa: PLR0917 - the fields of ItemOutcome, in its order
        self,
        index: int,
        item: Any,
        status: OutcomeStatus,
        update: Any = None,
        code: int | None = None,
        message: str | None = None,
        request_id: str | None = None,
        settled: bool = False,
    ) -> ItemOutcome:
        line = self._lines.pop(index, None) if self._lines else None
        return ItemOutcome(index, item, status, update, code, message, request_id, settled, line)

    def _ended(
        self,
        entries: Sequence[Entry],
        status: OutcomeStatus,
        error: CapillaryError | None = None,
        message: str | None = None,
        *,
        settled: bool = False,
    ) -> list[ItemOutcome]:
        """One status for many items, with the error that ended them."""
        code = getattr(error, "code", None) if error is not None else None
        text = message or (f"{type(error).__name__}: {error}" if error is not None else None)
        text = None if text is None else excerpt(text)
        request_id = None if error is None else error.request_id
        return [
            self._outcome(index, item, status, None, code, text, request_id, settled)
            for index, item in entries
        ]

    async def _final(
        self, outcomes: Sequence[ItemOutcome], *, chunk: Chunk | None = None, placed: bool = True
    ) -> None:
        """The one verb for "these items are final": counted, handed out, key and token freed.

        ``chunk``: the chunk they end (it is over). ``placed``: the items went
        through the chunker (not refused or resumed at the reader).
        """
        out = self._out
        if out is None:
            raise RuntimeError("the job is not running")
        report, finalized, hooks = self.report, self._finalized, self.hooks
        add = report._add
        for outcome in outcomes:
            add(outcome)
            finalized.add(outcome.index)
        if hooks is not None and outcomes:
            await hooks.on_final(outcomes)
        watermark = self._watermark
        while watermark in finalized:
            finalized.discard(watermark)
            watermark += 1
        self._watermark = watermark
        if outcomes:
            # One message per call, not per item: the stream's reader unpacks it.
            await send_fast(out, list(outcomes))
            self._held.give(len(outcomes))
        if placed and outcomes:
            self.chunker.release((o.index, o._item) for o in outcomes)
            self._changed.set()
        if chunk is not None:
            self._unfinished -= 1
            self._work.set()

    def progress(self) -> Progress:
        """The counts right now."""
        report = self.report
        elapsed = self.clock.monotonic() - self._started
        return Progress(
            read=self._read,
            sent=self._sent,
            succeeded=report.succeeded,
            failed=report.failed,
            invalid=report.invalid,
            unknown=report.unknown,
            not_attempted=report.not_attempted,
            requests=report.requests,
            retried_requests=report.retried_requests,
            split_requests=report.split_requests,
            elapsed=elapsed,
            items_per_second=report.total / elapsed if elapsed > 0 else 0.0,
            watermark=self._watermark,
            concurrency=int(self.pacer.limiter.total_tokens),
            chunk_size=self.chunk_size,
        )

    async def _report_progress(self) -> None:
        on_progress = self.options.on_progress
        if on_progress is None:
            return
        result = on_progress(self.progress())
        if inspect.isawaitable(result):
            await result

    def _note_anomaly(self, text: str) -> None:
        """Count every oddity of the answers; keep and log a bounded sample."""
        report = self.report
        report.anomaly_count += 1
        if len(report.anomalies) < MAX_ANOMALIES:
            text = excerpt(text, 300)
            report.anomalies.append(text)
            logger.warning("bulk job: %s", text)
        elif report.anomaly_count == MAX_ANOMALIES + 1:
            logger.warning("bulk job: more anomalies; they are counted, not logged")

    # -- packing -------------------------------------------------------------------------------

    async def _packer(self) -> None:
        chunker, flush_after = self.chunker, self.options.flush_after
        while True:
            if self._stopping:
                left = chunker.abandon()
                if left:
                    await self._final(self._ended(left, NOT_ATTEMPTED))
                if self._input_done:
                    break
            while (full := chunker.take()) is not None:
                self._submit(full)
            # A partial chunk goes early only when waiting could not help: the
            # input has ended, or every held item sits in it (nothing in flight
            # will free a token for the reader).
            if chunker.building and (
                self._input_done or (self._held.full and not self._unfinished)
            ):
                for part in chunker.flush():
                    self._submit(part)
                continue
            if self._input_done and not chunker:
                break
            changed = self._changed.waiter()
            if chunker.building and flush_after is not None:
                with anyio.move_on_after(flush_after) as scope:
                    await changed.wait()
                if scope.cancelled_caught:  # the input stalled: send what there is
                    for part in chunker.flush():
                        self._submit(part)
            else:
                await changed.wait()
        self._packing_done = True
        self._work.set()

    def _submit(self, items: list[Entry]) -> None:
        self._ready.append(Chunk(items))
        self._unfinished += 1
        self._work.set()

    # -- sending --------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            if self._ready:
                chunk = self._ready.popleft()
                if self._stopping:
                    await self._settle_unsent(chunk)
                else:
                    await self._process(chunk)
            elif self._packing_done and self._unfinished == 0:
                return
            else:
                await self._work.waiter().wait()

    async def _settle_unsent(self, chunk: Chunk) -> None:
        """A chunk the job will not send: never-sent items are not attempted."""
        error = chunk.last_error
        if error is None:
            await self._final(self._ended(chunk.items, NOT_ATTEMPTED), chunk=chunk)
        else:
            status = UNKNOWN if chunk.maybe_applied or maybe_applied(error) else FAILED
            await self._final(self._ended(chunk.items, status, error), chunk=chunk)

    async def _process(self, chunk: Chunk) -> None:
        waiting = anyio.CancelScope()  # cancelled by a stop until the request goes out
        self._waiting.add(waiting)
        sent: tuple[Any, str | None] | CapillaryError | None = None
        try:
            with waiting:
                sent = await self._send(chunk, waiting)
        except _KeptHomeError:
            sent = None
        except _NotRecordedError as exc:
            # Unrecorded, a request could not be told apart from one never sent
            # on a resume: nothing more goes out.
            self.stop(f"could not record a chunk before sending it ({exc})")
            await self._final(self._ended(chunk.items, NOT_ATTEMPTED), chunk=chunk)
            return
        finally:
            self._waiting.discard(waiting)
        if sent is None or waiting.cancelled_caught:  # stopped before it went out
            await self._settle_unsent(chunk)
            return
        if isinstance(sent, CapillaryError):
            await self._on_error(chunk, sent)
        else:
            await self._on_result(chunk, *sent)
        await self._report_progress()

    async def _send(
        self, chunk: Chunk, waiting: anyio.CancelScope
    ) -> tuple[Any, str | None] | CapillaryError:
        """One attempt of a chunk, once the job's pace lets it: the answer, or the error."""
        await self.pacer.wait_turn()
        async with self.pacer.limiter:
            if self._stopping:  # a stop while this chunk waited for a slot
                raise _KeptHomeError
            items = [item for _, item in chunk.items]
            try:
                return await self.spec.send(items, functools.partial(self._going, chunk, waiting))
            except (_KeptHomeError, _NotRecordedError):
                raise
            except CapillaryError as exc:
                return exc

    async def _going(self, chunk: Chunk, waiting: anyio.CancelScope) -> None:
        """Every slot is taken and the request is about to be written.

        From here a stop lets it finish, and a journal marks its items in flight.
        """
        if self._stopping:
            raise _KeptHomeError
        self._waiting.discard(waiting)
        if self.hooks is not None and not chunk.marked:
            try:
                await self.hooks.on_send(chunk.items)
            except Exception as exc:  # noqa: BLE001 - whatever it was, this chunk must not go
                raise _NotRecordedError(_describe(exc)) from None
            chunk.marked = True
            if self._stopping:  # stopped while it was being recorded: it stays home
                raise _KeptHomeError
        report = self.report
        report.requests += 1
        if chunk.attempt:
            report.retried_requests += 1
        elif chunk.split:
            report.split_requests += 1
        else:
            self._sent += len(chunk.items)
        chunk.attempt += 1

    async def _on_result(self, chunk: Chunk, result: ResultT, request_id: str | None) -> None:
        self.budget.refund()
        self.pacer.speed_up()
        try:
            merged = self.spec.merge(chunk.items, result)
            self._unreadable = 0
        except Exception:  # noqa: BLE001 - any answer we cannot read must not end the job
            # The request was processed; how, nobody can tell from this answer.
            logger.warning("bulk job: request %s: the answer could not be matched", request_id)
            self._unreadable_answer()
            self._note_anomaly(f"request {request_id}: the answer could not be matched to items")
            message = (
                "the server answered, but its answer could not be read: "
                "the item may or may not have been applied"
            )
            outcomes = self._ended(chunk.items, UNKNOWN, message=message)
            outcomes = [attrs.evolve(o, request_id=request_id) for o in outcomes]
            await self._final(outcomes, chunk=chunk)
            return
        for note in merged.anomalies:
            self._note_anomaly(f"request {request_id}: {note}")
        outcomes = []
        make = ItemOutcome
        lines = self._lines
        maybe = chunk.maybe_applied
        for index, item, said, update, code, text in merged.verdicts:
            status, why, settled = said, text, said is SUCCEEDED or said is FAILED
            if said is FAILED and maybe:
                # Refused now, but an earlier attempt may have landed: a refusal
                # cannot prove it did not. Only a success settles such an item.
                status, settled = UNKNOWN, False
                why = excerpt(
                    f"refused on a retry after an attempt that may have applied it: {text}"
                )
            line = lines.pop(index, None) if lines else None
            outcomes.append(make(index, item, status, update, code, why, request_id, settled, line))
        await self._final(outcomes, chunk=chunk)


class _KeptHomeError(CapillaryError):
    """The job stopped before this chunk's request went out: it stays home."""

    before_send = True


class _NotRecordedError(CapillaryError):
    """The journal could not record a chunk before its request: it stays home."""

    before_send = True


def _describe(exc: BaseException) -> str:
    """A foreign error in our words: its kind, and an OS error's reason (never its repr)."""
    reason = exc.strerror if isinstance(exc, OSError) else None
    if reason is None and type(exc).__module__ == "sqlite3":
        reason = excerpt(str(exc), 200)  # sqlite's own short texts ("disk I/O error")
    if reason is None and isinstance(exc, CapillaryError):
        reason = excerpt(str(exc), 300)  # our own words (a journal's "disk is full")
    return type(exc).__name__ + (f": {reason}" if reason else "")
