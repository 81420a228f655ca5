"""Running a job for the length of an ``async with`` block, its outcomes as an async iterator."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .. import _otel
from .._config import Clock, RetryPolicy
from .._exceptions import JournalMismatchError
from .._limiter import Limiter
from .._retry import OnRetry
from ._job import Job
from ._options import BulkOptions
from ._outcomes import ItemOutcome, Progress
from ._report import BulkReport
from ._specs import BulkSpec

if TYPE_CHECKING:
    from ._resume import Resumer

if sys.version_info < (3, 11):  # pragma: no cover - anyio brings the backport
    from exceptiongroup import BaseExceptionGroup

__all__ = ["OutcomeStream", "open_job"]


async def receive_fast(
    stream: MemoryObjectReceiveStream[list[ItemOutcome]],
) -> list[ItemOutcome]:
    """``receive()`` without a checkpoint when a batch is already there."""
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        return await stream.receive()


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one error in a (nested) group, counting repeats of the same error once."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        else:
            leaves.append(current)
    if leaves and all(
        type(leaf) is type(leaves[0]) and str(leaf) == str(leaves[0]) for leaf in leaves
    ):
        return leaves[-1]
    return None


class OutcomeStream:
    """The outcomes of a running bulk job, one per input item, as chunks complete.

    ``report`` holds the running counts (final once iteration ends) and
    ``progress()`` the current ``Progress``.
    """

    def __init__(
        self, receive: MemoryObjectReceiveStream[list[ItemOutcome]], job: Job[Any, Any]
    ) -> None:
        self._receive = receive
        self._job = job
        self.exhausted = False
        #: The job hands outcomes over in batches (one per chunk); this one is being read.
        self._batch: list[ItemOutcome] = []
        self._next = 0

    @property
    def report(self) -> BulkReport:
        """The job's report; complete once the stream is exhausted."""
        return self._job.report

    def progress(self) -> Progress:
        """Counts so far."""
        return self._job.progress()

    def stop(self, reason: str = "stopped by the caller", *, drain: bool = False) -> None:
        """End the job gracefully: requests in flight finish, nothing more is sent.

        Keep iterating to collect the outcomes still to come; the iteration ends
        promptly, whatever the input is doing. Every item the input handed over
        gets exactly one outcome: items read but not sent (chunks still being
        built, or waiting for a slot of the pace or for a retry) end
        ``not_attempted``, so a queue-fed worker can requeue exactly those. The
        rest of the input is left unread: the stop is checked before each item
        is taken, and a pending read of an async input (a queue that waits) is
        abandoned, which for an ``asyncio.Queue`` loses nothing. A synchronous
        input is never waited on (its ``next()`` cannot be interrupted, so it
        must not block).

        With ``drain=True`` the input is read on, each item ending
        ``not_attempted``, until it ends or makes the job wait ``flush_after``
        seconds (1 s when that is None) for its next item: a queue that has gone
        quiet is then abandoned as above, not waited on for ever.
        """
        self._job.stop(reason, drain=drain)

    def __aiter__(self) -> OutcomeStream:
        return self

    async def __anext__(self) -> ItemOutcome:
        batch, at = self._batch, self._next
        if at < len(batch):
            self._next = at + 1
            return batch[at]
        while True:
            try:
                batch = await receive_fast(self._receive)
            except anyio.EndOfStream:
                self.exhausted = True
                raise StopAsyncIteration from None
            if batch:
                self._batch, self._next = batch, 1
                return batch[0]

    async def batches(self) -> AsyncIterator[list[ItemOutcome]]:
        """The outcomes a batch at a time (about a chunk each), as the job hands them over.

        The same outcomes in the same order as iterating one by one, with an
        await per batch rather than per item: for consumers that count, or
        write rows in bulk. Use one way of reading a stream, not both.
        """
        if self._next < len(self._batch):
            rest, self._batch, self._next = self._batch[self._next :], [], 0
            yield rest
        while True:
            try:
                batch = await receive_fast(self._receive)
            except anyio.EndOfStream:
                self.exhausted = True
                return
            if batch:
                yield batch

    async def _exhaust(self) -> None:
        """Read to the end without handing outcomes out one by one (a bulk call's report)."""
        async for _ in self.batches():
            pass


@contextlib.asynccontextmanager
async def open_job(
    spec: BulkSpec[Any, Any],
    items: Iterable[Any] | AsyncIterable[Any],
    options: BulkOptions,
    *,
    clock: Clock,
    retry: RetryPolicy,
    keep_failures: bool,
    target: str,
    limiter: Limiter | None = None,
    preflight: Callable[[], Awaitable[None]] | None = None,
    drain_on_stop: bool = False,
    on_retry: OnRetry | None = None,
) -> AsyncIterator[OutcomeStream]:
    """Run a job in a task group for as long as the caller's ``async with`` block.

    Leaving the block early cancels the job: requests in flight are abandoned
    cleanly and no task outlives the block. With a journal, every outcome is
    recorded on its way to the caller, and an interrupted job resumes.
    """
    resumer: Resumer | None = None
    if options.journal is not None:
        from ._resume import Resumer  # SQLite only for jobs that keep a journal

        resumer = await Resumer.open(options, spec=spec, items=items, target=target)
    try:
        if preflight is not None:  # after the journal's lock: a second run sends nothing
            await preflight()
        job: Job[Any, Any] = Job(
            spec,
            items,
            options,
            clock=clock,
            retry=retry,
            keep_failures=keep_failures,
            limiter=limiter,
            hooks=resumer,
            drain_on_stop=drain_on_stop,
            on_retry=on_retry,
        )
        # No buffer: a batch is handed over only to a reader that has finished the last
        # one, so what is read ahead of the caller stays the held items plus one batch.
        send, receive = anyio.create_memory_object_stream[list[ItemOutcome]](0)
        job.span = _otel.start_job(spec.kind, spec.method, spec.path)
        try:
            async with anyio.create_task_group() as tg:
                if resumer is not None:
                    resumer.attach(job)
                    tg.start_soon(resumer.saver)
                with _otel.using(job.span):  # the job's requests are its span's children
                    tg.start_soon(_run, job, send, resumer)
                stream = OutcomeStream(receive, job)
                try:
                    yield stream
                finally:
                    if not stream.exhausted:
                        tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Task groups wrap what they raise; callers should get their own error back.
            sole = _sole_error(group)
            if sole is None:
                raise
            raise sole from None
        finally:
            send.close()  # the job closes it, unless cancelled before it started
            receive.close()
            _otel.end_job(job.span, job.report)
    finally:
        if resumer is not None:
            with anyio.CancelScope(shield=True):
                await resumer.close()
    if resumer is not None and resumer.mismatch is not None:
        # After the caller's block: every outcome so far is recorded, nothing of the
        # other items was sent, and the caller learns why the job ended there.
        raise JournalMismatchError(resumer.mismatch)


async def _run(
    job: Job[Any, Any], send: MemoryObjectSendStream[list[ItemOutcome]], resumer: Resumer | None
) -> None:
    try:
        await job.run(send)
    finally:
        if resumer is not None:
            resumer.job_over()
