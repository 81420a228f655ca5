"""After a failed attempt: ``decide`` says retry, split, give up or stop; this carries it out.

A mixin of ``Job``: the half of the scheduler that handles failures, kept apart
so the happy path reads on its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from .. import _otel
from .._config import Clock, RetryPolicy
from .._exceptions import APIError, CapillaryError
from .._limiter import Limiter
from .._logs import get_logger
from .._retry import Action, Decision, OnRetry, RetryEvent, decide, notify, wrong_endpoint
from ._chunker import Chunker
from ._flow import Chunk, Signal
from ._options import BulkOptions
from ._outcomes import ItemOutcome, OutcomeStatus
from ._pacing import Budget, Pacer
from ._specs import BulkSpec

if TYPE_CHECKING:
    from ._job import JobHooks

__all__ = ["Recovery"]

logger = get_logger("bulk")

FAILED, UNKNOWN = OutcomeStatus.FAILED, OutcomeStatus.UNKNOWN
#: Answers in a row that cannot be read before a job stops: its URL is most likely wrong.
UNREADABLE_IN_A_ROW = 3
_NOT_REPEATED = (
    "{}; the request may have been applied and was not repeated because repeating "
    "FIXED_DAYS / FIXED_MONTHS is not safe"
)


class Recovery:
    """Retries off the worker path, bisection of refused chunks, giving up, stopping."""

    hooks: JobHooks | None
    on_retry: OnRetry | None
    span: Any
    _unreadable: int
    spec: BulkSpec[Any, Any]
    options: BulkOptions
    clock: Clock
    retry: RetryPolicy
    chunker: Chunker[Any]
    pacer: Pacer
    limiter: Limiter
    budget: Budget
    _ready: deque[Chunk]
    _unfinished: int
    _work: Signal
    _task_group: anyio.abc.TaskGroup | None
    _parked: set[anyio.CancelScope]

    if TYPE_CHECKING:

        @property
        def chunk_size(self) -> int: ...

        def stop(self, reason: str, *, drain: bool | None = None) -> None: ...

        def _ended(
            self,
            entries: Sequence[tuple[int, Any]],
            status: OutcomeStatus,
            error: CapillaryError | None = None,
            message: str | None = None,
            *,
            settled: bool = False,
        ) -> list[ItemOutcome]: ...

        async def _final(
            self,
            outcomes: Sequence[ItemOutcome],
            *,
            chunk: Chunk | None = None,
            placed: bool = True,
        ) -> None: ...

    def _decide(self, chunk: Chunk, error: CapillaryError, *, idempotent: bool) -> Decision:
        return decide(
            error,
            chunk.attempt,
            idempotent=idempotent,
            policy=self.retry,
            applied_before=chunk.maybe_applied,
            splittable=len(chunk.items) > 1,
        )

    def _unreadable_answer(self) -> None:
        """One more answer that could not be read; a run of them is a wrong URL, not bad luck."""
        self._unreadable += 1
        if self._unreadable >= UNREADABLE_IN_A_ROW:
            self.stop(
                f"{UNREADABLE_IN_A_ROW} answers in a row could not be read as Capillary's "
                "(another shape, an HTML page): is the base URL right? Nothing more is sent"
            )

    async def _on_error(self, chunk: Chunk, error: CapillaryError) -> None:
        chunk.last_error = error
        if isinstance(error, APIError) and 200 <= error.status < 300 and not error.codes:
            self._unreadable_answer()
        idempotent = self.spec.idempotent
        unsafe = [e for e in chunk.items if not idempotent(e[1])]
        if unsafe and self._decide(chunk, error, idempotent=False).not_repeated:
            # Whatever happens next, these may already have been applied.
            message = _NOT_REPEATED.format(f"{type(error).__name__}: {error}")
            await self._final(self._ended(unsafe, UNKNOWN, error, message))
            chunk.items = [e for e in chunk.items if idempotent(e[1])]
            if not chunk.items:
                await self._final([], chunk=chunk)
                if self.options.fail_fast:
                    self.stop(f"fail_fast: a chunk's outcome is unknown ({error})")
                return
        decision = self._decide(chunk, error, idempotent=True)
        chunk.maybe_applied = decision.maybe_applied
        waits = decision.action in (Action.RETRY, Action.SPLIT)
        if chunk.marked and waits and not decision.maybe_applied and self.hooks is not None:
            # Certainly not applied (a 429, a 503, a refusal of the whole chunk):
            # while it waits, a journal must not count it as in flight.
            await self.hooks.on_unsent(chunk.items)
            chunk.marked = False
        if decision.pause:  # a 429, or a 503 that says how long: every request waits
            _otel.job_event(
                self.span, "pause", seconds=decision.delay, slow_down=decision.slow_down
            )
            await self.limiter.throttled(decision.delay, slow_down=decision.slow_down)
        if decision.slow_down:
            self.pacer.slow_down()
        if getattr(error, "status", None) == 413:
            # Half the refused chunk: halves of one refusal do not shrink it twice.
            size = max(1, min(self.chunk_size, len(chunk.items) // 2))
            if size < self.chunk_size:
                self.chunker.size = size
                logger.warning("bulk job: 413, chunk size now %d", size)
        action = decision.action
        if action is Action.SPLIT:
            self._split(chunk, error)
        elif action is Action.RETRY:
            if not self.budget.charge(error):
                await self._give_up(chunk, error, decision)
                self.stop(
                    f"retry budget spent: the server kept failing ({type(error).__name__}: {error})"
                )
                return
            if self._task_group is None:
                raise RuntimeError("the job is not running")
            event = RetryEvent(
                method=self.spec.method,
                path=self.spec.path,
                attempt=chunk.attempt,
                delay=decision.delay,
                error=error,
                request_id=error.request_id,
                items=len(chunk.items),
            )
            await notify(self.on_retry, event)
            _otel.job_event(
                self.span,
                "retry",
                items=len(chunk.items),
                delay=decision.delay,
                reason=type(error).__name__,
            )
            self._task_group.start_soon(self._park, chunk, decision.delay)
        else:
            await self._give_up(chunk, error, decision)
            if action is Action.STOP and wrong_endpoint(error):
                self.stop(f"the endpoint is not there, check the base URL or cluster: {error}")
            elif action is Action.STOP:
                self.stop(f"the server refused the credentials: {error}")
            elif self.options.fail_fast:
                self.stop(f"fail_fast: a chunk failed after {chunk.attempt} attempts ({error})")

    async def _give_up(self, chunk: Chunk, error: CapillaryError, decision: Decision) -> None:
        """The chunk's items end with its last error: unknown if it may have been applied."""
        if decision.action is Action.UNKNOWN or decision.maybe_applied:
            outcomes = self._ended(chunk.items, UNKNOWN, error)
        else:
            outcomes = self._ended(chunk.items, FAILED, error, settled=decision.verdict)
        await self._final(outcomes, chunk=chunk)

    async def _park(self, chunk: Chunk, delay: float) -> None:
        """Hold a chunk until its retry is due, without holding up a worker."""
        with anyio.CancelScope() as scope:
            self._parked.add(scope)
            try:
                await self.clock.sleep(delay)
            finally:
                self._parked.discard(scope)
        self._ready.appendleft(chunk)
        self._work.set()

    def _split(self, chunk: Chunk, error: CapillaryError) -> None:
        """A chunk refused as a whole: halves go again, down to the items at fault."""
        middle = len(chunk.items) // 2
        for half in (chunk.items[middle:], chunk.items[:middle]):
            # Each half was sent once already, as part of this chunk.
            self._ready.appendleft(
                Chunk(
                    half,
                    split=True,
                    maybe_applied=chunk.maybe_applied,
                    last_error=error,
                    marked=chunk.marked,
                )
            )
        self._unfinished += 1  # one chunk became two
        self._work.set()
