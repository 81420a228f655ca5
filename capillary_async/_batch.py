"""The bulk engine: bounded chunks, bounded concurrency, one outcome per input item.

One job is one task group holding a reader, a chunker and ``concurrency``
workers:

- the reader pulls the input lazily, one held-item token per item (the tokens
  are the backpressure: an item's token comes back when its outcome is out),
  and turns mappings into models (a failure is an ``invalid`` outcome, sent
  nowhere);
- the chunker packs items into chunks of at most ``chunk_size``, never two with
  the same key (a later duplicate waits until the earlier one is final), and
  flushes a partial chunk when the input stalls for ``flush_after`` seconds;
- workers send chunks one attempt at a time and merge the answers. A chunk to
  be retried sleeps in a task of its own until it is due, so the workers carry
  on with fresh chunks; a chunk refused as a whole is split in halves down to
  the items at fault.

What is specific to an endpoint (how to validate, key, send and merge) lives
in a ``BulkSpec``; the engine knows nothing of Capillary's payloads.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import inspect
import json
import logging
import time
from collections import Counter, deque
from collections.abc import (
    AsyncIterable,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import IO, Any, Generic, Protocol, TypeVar

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._config import Clock, RetryPolicy
from ._exceptions import (
    MAX_QUOTED,
    APIError,
    AuthenticationError,
    BadRequestError,
    CapillaryError,
    PermissionDeniedError,
    RateLimitError,
    TransportError,
    ValidationError,
    excerpt,
    is_ambiguous,
    is_retryable,
)

__all__ = [
    "BulkReport",
    "BulkSpec",
    "ItemOutcome",
    "Job",
    "Lazy",
    "Merged",
    "OutcomeStatus",
    "Progress",
    "RetryBudget",
]

logger = logging.getLogger("capillary_async")

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

#: How many anomalies a report keeps as text (all are counted).
MAX_ANOMALIES = 20
#: The slowest rate a job takes, in requests per second.
MIN_RATE = 0.001


class OutcomeStatus(str, enum.Enum):
    """How one input item ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: Refused by client-side validation: never sent.
    INVALID = "invalid"
    #: Sent, but its fate could not be learned and repeating it was not safe.
    UNKNOWN = "unknown"
    #: The job stopped before the item was sent.
    NOT_ATTEMPTED = "not_attempted"

    def __str__(self) -> str:
        return self.value


class Lazy:
    """A value built on first use: most bulk jobs never look at the success entries."""

    __slots__ = ("load",)

    def __init__(self, load: Callable[[], Any]) -> None:
        self.load = load

    def __repr__(self) -> str:
        return "<not read yet>"


@attrs.frozen
class ItemOutcome:
    """The one outcome of one input item.

    ``index`` is the item's 0-based position in the input; ``item`` the model
    sent (or the raw input, when it never became one); ``update`` the success
    entry of the answer (built from the answer's JSON on first access);
    ``request_id`` the request that decided it.

    ``settled`` says whether the outcome is a verdict on this very item: a
    success, the server's per-item refusal, or client-side validation. A
    resumed job never sends a settled item again. An outcome reached without
    one (never sent, a request-wide failure, retries exhausted, ``unknown``)
    is not settled: a later run may send the item again (``unknown`` ones only
    when that is safe or asked for).
    """

    index: int
    item: Any
    status: OutcomeStatus
    _update: Any = None
    error_code: int | None = None
    error_message: str | None = None
    request_id: str | None = None
    settled: bool = False

    @property
    def update(self) -> Any:
        """The success entry of the answer, if the item succeeded."""
        value = self._update
        if isinstance(value, Lazy):
            value = value.load()
            object.__setattr__(self, "_update", value)
        return value

    @property
    def ok(self) -> bool:
        """Whether the item succeeded."""
        return self.status is OutcomeStatus.SUCCEEDED


@attrs.frozen(kw_only=True)
class Progress:
    """Running counts, passed to ``on_progress`` at least once per completed chunk.

    ``watermark`` is the input index below which every item has its final
    outcome: what a resumable job checkpoints.
    """

    read: int
    sent: int
    succeeded: int
    failed: int
    invalid: int
    unknown: int
    not_attempted: int
    requests: int
    retried_requests: int
    split_requests: int
    elapsed: float
    items_per_second: float
    watermark: int
    concurrency: int
    chunk_size: int


@attrs.frozen(kw_only=True)
class RetryBudget:
    """A job-wide retry allowance, refilled by successes (as botocore's retry quota).

    Each retry costs ``retry_cost`` (``timeout_cost`` after a timeout or lost
    connection), each successful request refunds ``success_refund``; when a
    retry cannot be paid for, the server is failing faster than it recovers and
    the job stops. 429s are not charged: they slow the job down instead.
    """

    capacity: int = 500
    retry_cost: int = 5
    timeout_cost: int = 10
    success_refund: int = 1


class _Budget:
    def __init__(self, config: RetryBudget) -> None:
        self.config = config
        self.available = config.capacity

    def charge(self, error: CapillaryError) -> bool:
        if isinstance(error, RateLimitError):
            return True
        cost = (
            self.config.timeout_cost
            if isinstance(error, TransportError)
            else self.config.retry_cost
        )
        if cost > self.available:
            return False
        self.available -= cost
        return True

    def refund(self) -> None:
        self.available = min(self.config.capacity, self.available + self.config.success_refund)


@attrs.frozen
class Merged:
    """A spec's reading of one answer: per item, its status and details; plus oddities."""

    outcomes: list[tuple[int, Any, OutcomeStatus, Any, int | None, str | None]]
    anomalies: list[str] = attrs.field(factory=list)


class BulkSpec(Protocol[ItemT, ResultT]):
    """What the engine needs to know about one endpoint."""

    #: The largest chunk the endpoint takes (1 for one-item endpoints), or None.
    max_chunk_size: int | None

    def prepare(self, raw: object) -> ItemT:
        """A model from an input item; raises ``ValidationError``."""
        ...

    def key(self, item: ItemT) -> Hashable:
        """What two items must not share within one chunk."""
        ...

    def idempotent(self, item: ItemT) -> bool:
        """Whether sending the item twice is safe."""
        ...

    async def send(self, items: list[ItemT]) -> tuple[ResultT, str | None]:
        """One attempt, no retries: the answer and its request id, or a ``CapillaryError``."""
        ...

    def merge(self, chunk: Sequence[tuple[int, ItemT]], result: ResultT) -> Merged:
        """Match an answer back to the chunk's items."""
        ...

    def describe(self, item: Any) -> dict[str, Any]:
        """The identifying wire fields of an item, for reports."""
        ...

    def wire(self, item: Any) -> Any:
        """An item as JSON, for reports."""
        ...


# -- the report -------------------------------------------------------------------


class BulkReport:
    """The merged result of a bulk job.

    The counts always add up to ``total``. The outcomes of items that did not
    succeed are kept (``failures()``); every outcome only with ``keep_all``.
    ``stop_reason`` says why a job stopped early (None when it ran through).
    """

    def __init__(
        self,
        *,
        keep_all: bool = False,
        keep_failures: bool = True,
        describe: Callable[[Any], dict[str, Any]],
    ):
        self.keep_all = keep_all
        self.keep_failures = keep_failures
        self._describe = describe
        self._wire: Callable[[Any], Any] = lambda item: item
        self.total = 0
        self.succeeded = 0
        self.failed = 0
        self.invalid = 0
        self.unknown = 0
        self.not_attempted = 0
        self.failures_by_code: Counter[int | str] = Counter()
        self.requests = 0
        self.retried_requests = 0
        self.split_requests = 0
        self.elapsed = 0.0
        self.peak_held = 0
        self.held_limit = 0
        self.stop_reason: str | None = None
        #: A sample of the oddities seen in the answers (at most ``MAX_ANOMALIES``).
        self.anomalies: list[str] = []
        #: How many oddities there were in all.
        self.anomaly_count = 0
        self._failures: list[ItemOutcome] = []
        self._outcomes: list[ItemOutcome] = []

    @property
    def items_per_second(self) -> float:
        """Final outcomes per second of the job's run time."""
        return self.total / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> bool:
        """Whether every item succeeded."""
        return self.succeeded == self.total

    def _add(self, outcome: ItemOutcome) -> None:
        status = outcome.status
        if status is OutcomeStatus.SUCCEEDED:
            self.succeeded += 1
        else:
            if status is OutcomeStatus.FAILED:
                self.failed += 1
            elif status is OutcomeStatus.INVALID:
                self.invalid += 1
            elif status is OutcomeStatus.UNKNOWN:
                self.unknown += 1
            else:
                self.not_attempted += 1
            if status is not OutcomeStatus.NOT_ATTEMPTED:
                label: int | str = (
                    outcome.error_code if outcome.error_code is not None else status.value
                )
                self.failures_by_code[label] += 1
            if self.keep_failures:
                self._failures.append(outcome)
        if self.keep_all:
            self._outcomes.append(outcome)

    def failures(self) -> list[ItemOutcome]:
        """Every item that did not succeed, in input order."""
        return sorted(self._failures, key=lambda o: o.index)

    def outcomes(self) -> list[ItemOutcome]:
        """Every outcome in input order (needs ``keep_all=True``)."""
        if not self.keep_all:
            raise RuntimeError("outcomes(): the job ran without keep_all=True")
        return sorted(self._outcomes, key=lambda o: o.index)

    def summary(self) -> dict[str, Any]:
        """The counts as a JSON-ready dict."""
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "invalid": self.invalid,
            "unknown": self.unknown,
            "not_attempted": self.not_attempted,
            "requests": self.requests,
            "retried_requests": self.retried_requests,
            "split_requests": self.split_requests,
            "elapsed_seconds": round(self.elapsed, 3),
            "items_per_second": round(self.items_per_second, 1),
            "failures_by_code": {str(k): v for k, v in self.failures_by_code.items()},
            "stop_reason": self.stop_reason,
            "anomaly_count": self.anomaly_count,
            "anomalies": list(self.anomalies),
        }

    def _row(self, outcome: ItemOutcome) -> dict[str, Any]:
        return {
            "index": outcome.index,
            "line": None,
            **self._describe(outcome.item),
            "status": outcome.status.value,
            "error_code": outcome.error_code,
            "error_message": outcome.error_message,
            "request_id": outcome.request_id,
        }

    def to_json(self, path: str | Path) -> None:
        """The summary and each non-succeeded outcome (every one with ``keep_all``), streamed."""
        rows = self.outcomes() if self.keep_all else self.failures()
        with Path(path).open("w", encoding="utf-8") as out:
            head = json.dumps(self.summary(), indent=2)
            out.write(head[:-2] + ',\n  "outcomes": [')
            for n, outcome in enumerate(rows):
                out.write(("," if n else "") + "\n    ")
                out.write(json.dumps({**self._row(outcome), "item": self._wire(outcome.item)}))
            out.write("\n  ]\n}\n")

    def to_csv(self, path: str | Path) -> None:
        """One row per non-succeeded outcome (every one with ``keep_all``), streamed."""
        rows = self.outcomes() if self.keep_all else self.failures()
        columns = failure_columns([c for c in self._describe(None) if c != "line"])
        with Path(path).open("w", encoding="utf-8", newline="") as out:
            write_csv(out, columns, (self._row(o) for o in rows))

    def __repr__(self) -> str:
        return (
            f"<BulkReport total={self.total} succeeded={self.succeeded} failed={self.failed} "
            f"invalid={self.invalid} unknown={self.unknown} not_attempted={self.not_attempted}"
            f"{' stopped: ' + self.stop_reason if self.stop_reason else ''}>"
        )


def failure_columns(ref_columns: Sequence[str]) -> list[str]:
    """The one layout of a failures CSV, for the library's reports and the command line.

    ``line`` is the input file's line where the item came from one (empty otherwise).
    """
    return ["index", "line", *ref_columns, "status", "error_code", "error_message", "request_id"]


#: Leading characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value made safe for a spreadsheet: text that would run as a formula is quoted with '."""
    if isinstance(value, str):
        if value.startswith(_FORMULA_START):
            value = "'" + value
        return excerpt(value, limit=MAX_QUOTED * 4)
    return value


def write_csv(out: IO[str], columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Rows as CSV under ``columns``, every text cell escaped by ``csv_cell``."""
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(column)) for column in columns])


# -- pacing --------------------------------------------------------------------------


class _Pacer:
    """Shared pace of a job's workers: a 429 pause, AIMD concurrency and rate."""

    def __init__(self, clock: Clock, concurrency: int, rate_limit: float | None) -> None:
        self.clock = clock
        self.max_concurrency = concurrency
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.max_rate = rate_limit
        self.rate = rate_limit
        self.tokens = 1.0
        self.stamp = clock.monotonic()
        self.pause_until = 0.0
        self.lock = anyio.Lock()
        self.successes = 0

    async def wait_turn(self) -> None:
        """Wait out a 429 pause, then for a token of the rate limit."""
        while (wait := self.pause_until - self.clock.monotonic()) > 0:
            await self.clock.sleep(wait)
        if self.rate is None:
            return
        async with self.lock:
            while True:
                now = self.clock.monotonic()
                self.tokens = min(1.0, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                await self.clock.sleep((1.0 - self.tokens) / self.rate)

    def pause(self, seconds: float) -> None:
        """Every worker waits ``seconds`` (a ``Retry-After``) before its next request."""
        self.pause_until = max(self.pause_until, self.clock.monotonic() + seconds)

    def slow_down(self, pause: float) -> None:
        """A 429: every worker waits ``pause``; concurrency and rate halve."""
        self.pause(pause)
        self.limiter.total_tokens = max(1, int(self.limiter.total_tokens) // 2)
        if self.rate is not None and self.max_rate is not None:
            self.rate = max(self.max_rate / 64, self.rate / 2)
        self.successes = 0

    def speed_up(self) -> None:
        """A success: after a window of them, one more worker and a tenth more rate."""
        self.successes += 1
        if self.successes < self.limiter.total_tokens:
            return
        self.successes = 0
        if self.limiter.total_tokens < self.max_concurrency:
            self.limiter.total_tokens = int(self.limiter.total_tokens) + 1
        if self.rate is not None and self.max_rate is not None and self.rate < self.max_rate:
            self.rate = min(self.max_rate, self.rate + self.max_rate / 10)


# -- the job ---------------------------------------------------------------------------


class _Gate:
    """Counts held items; waits only when the limit is reached (no checkpoint per item)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.peak = 0
        self._event: anyio.Event | None = None

    @property
    def full(self) -> bool:
        return self.count >= self.limit

    async def take(self) -> None:
        while self.count >= self.limit:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()
        self.count += 1
        self.peak = max(self.peak, self.count)

    def give(self, count: int = 1) -> None:
        self.count -= count
        if self._event is not None:
            self._event.set()
            self._event = None


async def _send(stream: MemoryObjectSendStream[Any], item: Any) -> None:
    # anyio's send() checkpoints on every call; per item, that is a loop turn.
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        # The other side closed because the job is being cancelled: the caller
        # must see its own cancellation, not this symptom of it.
        await anyio.lowlevel.checkpoint_if_cancelled()
        raise


async def receive_fast(stream: MemoryObjectReceiveStream[Any]) -> Any:
    """``receive()`` without a checkpoint when an item is already there."""
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        return await stream.receive()


@attrs.define(eq=False)
class _Chunk:
    items: list[tuple[int, Any]]
    attempt: int = 0
    split: bool = False
    last_error: CapillaryError | None = None
    #: An attempt failed in a way that may have applied it: a later refusal cannot undo that.
    maybe_applied: bool = False


class _Poke:
    """Wakes the chunker to look at released keys."""


_POKE = _Poke()
_END = object()


class Job(Generic[ItemT, ResultT]):
    """One run of the engine over one input."""

    def __init__(
        self,
        spec: BulkSpec[ItemT, ResultT],
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        clock: Clock,
        retry: RetryPolicy,
        chunk_size: int,
        concurrency: int,
        rate_limit: float | None = None,
        flush_after: float | None = 1.0,
        fail_fast: bool = False,
        keep_all: bool = False,
        keep_failures: bool = True,
        on_progress: Callable[[Progress], object] | None = None,
        retry_budget: RetryBudget | None = None,
        on_send: Callable[[list[Any]], Awaitable[object]] | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size: must be at least 1")
        if concurrency < 1:
            raise ValueError("concurrency: must be at least 1")
        if rate_limit is not None and not rate_limit >= MIN_RATE:
            # Slower than this is a typo, and a job that would wait for days.
            raise ValueError(
                f"rate_limit: must be at least {MIN_RATE} requests per second "
                "(one every 17 minutes)"
            )
        if flush_after is not None and not flush_after > 0:
            raise ValueError("flush_after: must be a positive number of seconds, or None")
        if spec.max_chunk_size is not None:
            chunk_size = min(chunk_size, spec.max_chunk_size)
        self.spec = spec
        self.items = items
        self.clock = clock
        self.retry = retry
        self.chunk_size = chunk_size
        self.concurrency = concurrency
        self.flush_after = flush_after
        self.fail_fast = fail_fast
        self.on_progress = on_progress
        self.on_send = on_send
        self.pacer = _Pacer(clock, concurrency, rate_limit)
        self.budget = _Budget(retry_budget or RetryBudget())
        self.report = BulkReport(
            keep_all=keep_all, keep_failures=keep_failures, describe=spec.describe
        )
        self.report._wire = spec.wire
        # In flight, one chunk being built, and one waiting to retry.
        self.held_limit = chunk_size * (concurrency + 2)
        self.report.held_limit = self.held_limit
        self._held = _Gate(self.held_limit)
        self._ready: deque[_Chunk] = deque()
        self._unfinished = 0
        self._input_done = False
        self._wake = anyio.Event()
        self._released: list[Hashable] = []
        self._building: list[tuple[int, Any]] = []
        self._busy: set[Hashable] = set()
        self._deferred: dict[Hashable, deque[tuple[int, Any]]] = {}
        self._stopping = False
        self._read = 0
        self._sent = 0
        self._finalized: set[int] = set()
        self._watermark = 0
        self._started = time.perf_counter()
        self._out: MemoryObjectSendStream[ItemOutcome] | None = None
        self._inbox: MemoryObjectSendStream[Any] | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._parked: set[anyio.CancelScope] = set()
        self._drain = True

    # -- running -----------------------------------------------------------------------

    async def run(self, out: MemoryObjectSendStream[ItemOutcome]) -> None:
        """Run to the end, sending every outcome to ``out`` (closed when done)."""
        self._out = out
        self._started = time.perf_counter()
        inbox_send, inbox_receive = anyio.create_memory_object_stream[Any](self.chunk_size)
        reader_inbox = inbox_send.clone()
        self._inbox = inbox_send
        try:
            async with out, anyio.create_task_group() as tg:
                self._task_group = tg
                # The reader closes its clone when the input ends; the job's own
                # end stays open for pokes until the chunker is done.
                tg.start_soon(self._reader, reader_inbox)
                tg.start_soon(self._chunker, inbox_receive)
                for _ in range(self.concurrency):
                    tg.start_soon(self._worker)
        finally:
            for stream in (reader_inbox, inbox_send, inbox_receive, out):
                stream.close()  # also when cancelled before a task got to it
            self.report.elapsed = time.perf_counter() - self._started
            self.report.total = self._read
            self.report.peak_held = self._held.peak
        await self._report_progress()

    def _notify(self) -> None:
        self._wake.set()
        self._wake = anyio.Event()

    def stop(self, reason: str, *, drain: bool = True) -> None:
        """Send nothing more: requests in flight finish, items not sent end ``not_attempted``.

        With ``drain=False`` the rest of the input is not read at all (a journal
        knows those items are still pending), so the report covers only what
        was read.
        """
        self._drain = drain
        self._stop(reason)

    def _stop(self, reason: str) -> None:
        if not self._stopping:
            self._stopping = True
            self.report.stop_reason = reason
            logger.warning("bulk job stopping: %s", reason)
            for scope in self._parked:  # chunks waiting to retry settle now
                scope.cancel()
            self._notify()
            self._poke()

    # -- outcomes --------------------------------------------------------------------------

    async def _emit(self, outcome: ItemOutcome) -> None:
        out = self._out
        if out is None:
            raise RuntimeError("the job is not running")
        self.report._add(outcome)
        finalized = self._finalized
        finalized.add(outcome.index)
        while self._watermark in finalized:
            finalized.discard(self._watermark)
            self._watermark += 1
        await _send(out, outcome)
        self._held.give()

    async def _finish(
        self,
        items: Sequence[tuple[int, Any]],
        status: OutcomeStatus,
        error: CapillaryError | None = None,
        message: str | None = None,
        *,
        settled: bool = False,
        request_id: str | None = None,
    ) -> None:
        """End ``items`` with one status: the one verb for "these items are final"."""
        code = getattr(error, "code", None) if error is not None else None
        text = message or (f"{type(error).__name__}: {error}" if error is not None else None)
        if text is not None:
            text = excerpt(text)
        if error is not None:
            request_id = error.request_id
        for index, item in items:
            await self._emit(
                ItemOutcome(index, item, status, None, code, text, request_id, settled)
            )
        self._release_keys(items)

    def _release_keys(self, items: Sequence[tuple[int, Any]]) -> None:
        self._released.extend(self.spec.key(item) for _, item in items)
        self._poke()

    def _poke(self) -> None:
        if self._inbox is not None:
            # The chunker may be busy (it looks at released keys anyway) or gone.
            with contextlib.suppress(
                anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
            ):
                self._inbox.send_nowait(_POKE)

    def progress(self) -> Progress:
        """The counts right now."""
        report = self.report
        elapsed = time.perf_counter() - self._started
        done = (
            report.succeeded
            + report.failed
            + report.invalid
            + report.unknown
            + report.not_attempted
        )
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
            items_per_second=done / elapsed if elapsed > 0 else 0.0,
            watermark=self._watermark,
            concurrency=int(self.pacer.limiter.total_tokens),
            chunk_size=self.chunk_size,
        )

    async def _report_progress(self) -> None:
        if self.on_progress is None:
            return
        result = self.on_progress(self.progress())
        if inspect.isawaitable(result):
            await result

    # -- reading -----------------------------------------------------------------------------

    async def _reader(self, inbox: MemoryObjectSendStream[Any]) -> None:
        items = self.items
        async with inbox:
            if isinstance(items, AsyncIterable):
                iterator = aiter(items)
                try:
                    async for raw in iterator:
                        if self._stopping and not self._drain:
                            break
                        await self._take(raw, inbox)
                finally:
                    close = getattr(iterator, "aclose", None)
                    if close is not None:
                        with anyio.CancelScope(shield=True):
                            await close()
            else:
                for raw in items:
                    if self._stopping and not self._drain:
                        break
                    await self._take(raw, inbox)
            await _send(inbox, _END)

    async def _take(self, raw: Any, inbox: MemoryObjectSendStream[Any]) -> None:
        """Hold one input item: a token first, so the input is read no faster than it drains."""
        await self._held.take()
        index = self._read
        self._read += 1
        if index % 256 == 255:
            await anyio.lowlevel.checkpoint()  # stay fair to the workers on a fast input
        if self._stopping:
            await self._emit(ItemOutcome(index, raw, OutcomeStatus.NOT_ATTEMPTED))
            return
        try:
            item = self.spec.prepare(raw)
        except ValidationError as exc:
            await self._emit(
                ItemOutcome(
                    index, raw, OutcomeStatus.INVALID, None, exc.code, excerpt(str(exc)), None, True
                )
            )
            return
        await _send(inbox, (index, item))

    # -- chunking ------------------------------------------------------------------------------

    async def _chunker(self, inbox: MemoryObjectReceiveStream[Any]) -> None:
        inbox_send = self._inbox
        if inbox_send is None:
            raise RuntimeError("the job is not running")
        reader_done = False
        async with inbox:
            while True:
                if self._stopping:
                    await self._abandon()
                    if reader_done:
                        break
                self._take_released()
                building = self._building
                # A partial chunk goes early only when waiting could not help: the
                # input has ended, or every held item sits in it (nothing in flight
                # will free a token for the reader).
                if len(building) >= self.chunk_size or (
                    building and (reader_done or (self._held.full and not self._unfinished))
                ):
                    self._submit()
                    continue
                if reader_done and not building and not self._deferred:
                    break
                message: Any = None
                try:
                    message = inbox.receive_nowait()
                except anyio.WouldBlock:
                    if building and self.flush_after is not None:
                        with anyio.move_on_after(self.flush_after):
                            message = await inbox.receive()
                        if message is None:  # the input stalled: send what there is
                            self._submit()
                            continue
                    else:
                        message = await inbox.receive()
                if message is _END:
                    reader_done = True
                elif message is not _POKE:
                    await self._place(message)
        self._input_done = True
        self._inbox = None
        inbox_send.close()
        self._notify()

    def _submit(self) -> None:
        # In pieces of the current size: a 413 may have shrunk it meanwhile.
        while self._building:
            part = self._building[: self.chunk_size]
            self._building = self._building[self.chunk_size :]
            self._ready.append(_Chunk(part))
            self._unfinished += 1
        self._notify()

    async def _place(self, entry: tuple[int, Any]) -> None:
        if self._stopping:
            await self._emit(ItemOutcome(entry[0], entry[1], OutcomeStatus.NOT_ATTEMPTED))
            return
        key = self.spec.key(entry[1])
        if key in self._busy:  # a later duplicate waits until the earlier one is final
            self._deferred.setdefault(key, deque()).append(entry)
        else:
            self._busy.add(key)
            self._building.append(entry)

    def _take_released(self) -> None:
        """Free released keys; a waiting duplicate joins the chunk only while there is room."""
        later: list[Hashable] = []
        for key in self._released:
            waiting = self._deferred.get(key)
            if waiting and len(self._building) >= self.chunk_size:
                later.append(key)  # the full chunk goes first; this one next time
                continue
            self._busy.discard(key)
            if waiting:
                self._busy.add(key)
                self._building.append(waiting.popleft())
                if not waiting:
                    del self._deferred[key]
        self._released[:] = later

    async def _abandon(self) -> None:
        leftovers = self._building + [e for queue in self._deferred.values() for e in queue]
        self._building, self._deferred = [], {}
        for index, item in sorted(leftovers, key=lambda e: e[0]):
            await self._emit(ItemOutcome(index, item, OutcomeStatus.NOT_ATTEMPTED))

    # -- sending --------------------------------------------------------------------------------

    async def _next_chunk(self) -> _Chunk | None:
        while True:
            if self._ready:
                chunk = self._ready.popleft()
                if self._stopping:
                    await self._settle_unsent(chunk)
                    continue
                return chunk
            if self._input_done and self._unfinished == 0:
                return None
            await self._wake.wait()

    async def _settle_unsent(self, chunk: _Chunk) -> None:
        """A chunk the job will not send: never-sent items are not attempted."""
        if chunk.last_error is not None:
            await self._give_up(chunk, chunk.last_error)
        else:
            await self._finish(chunk.items, OutcomeStatus.NOT_ATTEMPTED)
            self._chunk_done()

    def _chunk_done(self) -> None:
        self._unfinished -= 1
        self._notify()

    async def _worker(self) -> None:
        while (chunk := await self._next_chunk()) is not None:
            await self._process(chunk)

    async def _process(self, chunk: _Chunk) -> None:
        await self.pacer.wait_turn()
        if self._stopping:
            await self._settle_unsent(chunk)
            return
        items = [item for _, item in chunk.items]
        if self.on_send is not None and chunk.attempt == 0 and not chunk.split:
            try:
                await self.on_send(items)  # e.g. a journal marks them in flight first
            except Exception as exc:  # noqa: BLE001 - whatever it was, this chunk must not go
                # Unrecorded, a request could not be told apart from one never
                # sent on a resume: nothing more goes out.
                self._stop(f"could not prepare a chunk for sending ({_describe(exc)})")
                await self._finish(chunk.items, OutcomeStatus.NOT_ATTEMPTED)
                self._chunk_done()
                return
        sent = False
        error: CapillaryError | None = None
        async with self.pacer.limiter:
            # A stop while this chunk was recorded or waited for a slot keeps it home.
            if not self._stopping:
                sent = True
                report = self.report
                report.requests += 1
                if chunk.attempt:
                    report.retried_requests += 1
                elif chunk.split:
                    report.split_requests += 1
                else:
                    self._sent += len(items)
                chunk.attempt += 1
                try:
                    result, request_id = await self.spec.send(items)
                except CapillaryError as exc:
                    error = exc
        if not sent:
            await self._settle_unsent(chunk)
            return
        if error is not None:
            await self._on_error(chunk, error)
        else:
            await self._on_result(chunk, result, request_id)
        await self._report_progress()

    async def _on_result(self, chunk: _Chunk, result: ResultT, request_id: str | None) -> None:
        self.budget.refund()
        self.pacer.speed_up()
        try:
            merged = self.spec.merge(chunk.items, result)
        except Exception:  # noqa: BLE001 - any answer we cannot read must not end the job
            # The request was processed; how, nobody can tell from this answer.
            logger.warning("bulk job: request %s: the answer could not be matched", request_id)
            self._note_anomaly(f"request {request_id}: the answer could not be matched to items")
            await self._finish(
                chunk.items,
                OutcomeStatus.UNKNOWN,
                message="the server answered, but its answer could not be read: "
                "the item may or may not have been applied",
                request_id=request_id,
            )
            self._chunk_done()
            return
        for note in merged.anomalies:
            self._note_anomaly(f"request {request_id}: {note}")
        for index, item, said, update, code, message in merged.outcomes:
            status, text = said, message
            settled = said in (OutcomeStatus.SUCCEEDED, OutcomeStatus.FAILED)
            if said is OutcomeStatus.FAILED and chunk.maybe_applied:
                # Refused now, but an earlier attempt may have landed: a refusal
                # cannot prove it did not. Only a success settles such an item.
                status, settled = OutcomeStatus.UNKNOWN, False
                text = f"refused on a retry after an attempt that may have applied it: {message}"
            text = None if text is None else excerpt(text)
            await self._emit(
                ItemOutcome(index, item, status, update, code, text, request_id, settled)
            )
        self._release_keys(chunk.items)
        self._chunk_done()

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

    async def _on_error(self, chunk: _Chunk, error: CapillaryError) -> None:
        chunk.last_error = error
        status = getattr(error, "status", None)
        if isinstance(error, (AuthenticationError, PermissionDeniedError)):
            await self._give_up(chunk, error)
            self._stop(f"the server refused the credentials: {error}")
            return
        if is_ambiguous(error):
            # Whatever happens next, these items may already have been applied.
            chunk.maybe_applied = True
            unsafe = [e for e in chunk.items if not self.spec.idempotent(e[1])]
            if unsafe:
                await self._finish(
                    unsafe,
                    OutcomeStatus.UNKNOWN,
                    error,
                    f"{type(error).__name__}: {error}; the request may have been applied and "
                    "was not repeated because repeating FIXED_DAYS / FIXED_MONTHS is not safe",
                )
                chunk.items = [e for e in chunk.items if self.spec.idempotent(e[1])]
                if not chunk.items:
                    self._chunk_done()
                    if self.fail_fast:
                        self._stop(f"fail_fast: a chunk's outcome is unknown ({error})")
                    return
        if status == 413 or isinstance(error, BadRequestError):
            if status == 413:
                # Half the refused chunk: halves of one refusal do not shrink it twice.
                size = max(1, min(self.chunk_size, len(chunk.items) // 2))
                if size < self.chunk_size:
                    self.chunk_size = size
                    logger.warning("bulk job: 413, chunk size now %d", size)
            await self._split_or_fail(chunk, error)
            return
        if not is_retryable(error):
            await self._give_up(chunk, error)
            if self.fail_fast:
                self._stop(f"fail_fast: a chunk failed ({type(error).__name__}: {error})")
            return
        retry_after = error.retry_after if isinstance(error, APIError) else None
        delay = self.retry.delay(chunk.attempt, retry_after)
        if isinstance(error, RateLimitError):
            self.pacer.slow_down(delay)
        elif retry_after is not None:  # a 503 that says how long: everyone waits
            self.pacer.pause(delay)
        if chunk.attempt >= self.retry.max_attempts:
            await self._give_up(chunk, error)
            if self.fail_fast:
                self._stop(f"fail_fast: a chunk failed after {chunk.attempt} attempts ({error})")
            return
        if not self.budget.charge(error):
            await self._give_up(chunk, error)
            self._stop(
                f"retry budget spent: the server kept failing ({type(error).__name__}: {error})"
            )
            return
        if self._task_group is None:
            raise RuntimeError("the job is not running")
        self._task_group.start_soon(self._park, chunk, delay)

    async def _park(self, chunk: _Chunk, delay: float) -> None:
        """Hold a chunk until its retry is due, without holding up a worker."""
        with anyio.CancelScope() as scope:
            self._parked.add(scope)
            try:
                await self.clock.sleep(delay)
            finally:
                self._parked.discard(scope)
        self._ready.appendleft(chunk)
        self._notify()

    async def _split_or_fail(self, chunk: _Chunk, error: CapillaryError) -> None:
        """A chunk refused as a whole: halves go again, down to the items at fault."""
        if len(chunk.items) == 1:
            # A request of this one item, refused in Capillary's own words (an
            # errors envelope with codes): the server's verdict on it. A bare
            # 400 from a gateway says nothing about the item.
            await self._give_up(chunk, error, verdict=bool(getattr(error, "codes", ())))
            return
        middle = len(chunk.items) // 2
        for half in (chunk.items[middle:], chunk.items[:middle]):
            # Each half was sent once already, as part of this chunk.
            self._ready.appendleft(
                _Chunk(half, split=True, maybe_applied=chunk.maybe_applied, last_error=error)
            )
        self._unfinished += 1  # one chunk became two
        self._notify()

    async def _give_up(
        self, chunk: _Chunk, error: CapillaryError, *, verdict: bool = False
    ) -> None:
        """The chunk's items end with its last error: unknown if it may have been applied.

        Only a refusal of a request holding just this item settles it, and not
        even that once an earlier attempt may have been applied; any other
        failure leaves the items for a later run to send again.
        """
        if chunk.maybe_applied or _maybe_applied(error):
            await self._finish(chunk.items, OutcomeStatus.UNKNOWN, error)
        else:
            await self._finish(chunk.items, OutcomeStatus.FAILED, error, settled=verdict)
        self._chunk_done()


def _describe(exc: BaseException) -> str:
    """A foreign error in our words: its kind, and an OS error's reason (never its repr)."""
    reason = exc.strerror if isinstance(exc, OSError) else None
    if reason is None and type(exc).__module__ == "sqlite3":
        reason = excerpt(str(exc), 200)  # sqlite's own short texts ("disk I/O error")
    return type(exc).__name__ + (f": {reason}" if reason else "")


def _maybe_applied(error: CapillaryError) -> bool:
    if is_ambiguous(error):
        return True
    if isinstance(error, (AuthenticationError, PermissionDeniedError)):
        return False  # refused before anything was done (a token answer, for one)
    # A 2xx whose body could not be read: processed, but nobody knows how.
    return isinstance(error, APIError) and 200 <= error.status < 300 and not error.codes
