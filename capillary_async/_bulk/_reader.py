"""The reader of a job: the input pulled lazily, one held-item token per item.

A mixin of ``Job``. An item the input hands over always gets exactly one
outcome; a stop is checked before the next item is taken, and a pending read of
an async input (a queue that waits) is abandoned rather than waited on.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import anyio
import attrs

from .._exceptions import ValidationError, excerpt
from ._chunker import Chunker
from ._files import InputRow
from ._flow import Chunk, Gate, Signal
from ._options import BulkOptions
from ._outcomes import ItemOutcome, OutcomeStatus
from ._report import BulkReport
from ._specs import BulkSpec

if TYPE_CHECKING:
    from ._job import JobHooks

__all__ = ["Reading"]

ItemT = TypeVar("ItemT")
INVALID, NOT_ATTEMPTED = OutcomeStatus.INVALID, OutcomeStatus.NOT_ATTEMPTED
#: Longest the reader holds the event loop without a checkpoint (a slow synchronous input).
_FAIR = 0.005


class Reading(Generic[ItemT]):
    """Reading the input into the chunker, and stopping that promptly."""

    spec: BulkSpec[ItemT, Any]
    items: Iterable[Any] | AsyncIterable[Any]
    options: BulkOptions
    hooks: JobHooks | None
    chunker: Chunker[ItemT]
    _held: Gate
    report: BulkReport
    _changed: Signal
    _stopping: bool
    _drain: bool
    _read: int
    _lines: dict[int, int]
    _input_done: bool
    #: The pending read of an async input, if one is pending.
    _reading: anyio.CancelScope | None
    #: How long a draining stop waits for the input's next item.
    _patience: float
    #: When the reader last let the event loop run.
    _yielded: float

    if TYPE_CHECKING:

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
        ) -> ItemOutcome: ...

        async def _final(
            self,
            outcomes: Sequence[ItemOutcome],
            *,
            chunk: Chunk | None = None,
            placed: bool = True,
        ) -> None: ...

    async def _reader(self) -> None:
        items = self.items
        # Until the input says it has ended: a stop, an abort or an error leave it unread.
        self.report.input_complete = False
        try:
            if isinstance(items, AsyncIterable):
                await self._read_async(aiter(items))
            else:
                sync_iterator = iter(items)
                try:
                    # The stop is checked before each item is taken out of the input:
                    # an item it hands over always gets its outcome.
                    while self._drain or not self._stopping:
                        try:
                            raw = next(sync_iterator)
                        except StopIteration:
                            self.report.input_complete = True
                            break
                        took = self._took(raw)
                        if took is not True:
                            await self._take(raw, took)
                finally:
                    close_sync = getattr(sync_iterator, "close", None)
                    if close_sync is not None:
                        close_sync()  # a file reader closes its file now, not at collection
        finally:
            self._input_done = True
            self._changed.set()

    async def _read_async(self, iterator: AsyncIterator[Any]) -> None:
        """Read an async input; a pending read is abandoned when the job stops.

        A queue-fed input may wait for ever: each read runs in a cancel scope
        that ``stop()`` cancels (or, draining, gives a deadline), so a stop
        never waits on the input. anyio does not cancel a read that has already
        produced its item, so an item taken out of the input is never dropped.
        """
        try:
            while self._drain or not self._stopping:
                with anyio.CancelScope() as scope:
                    self._reading = scope
                    if self._stopping:  # draining: read on while the input keeps up
                        scope.deadline = anyio.current_time() + self._patience
                    try:
                        raw = await anext(iterator)
                    except StopAsyncIteration:
                        self.report.input_complete = True
                        return
                    except Exception:
                        if self._stopping:  # the abandoned read failed: the input ends here
                            return
                        raise
                    finally:
                        self._reading = None
                if scope.cancelled_caught:
                    return
                await self._take(raw)
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()

    def _took(self, raw: Any) -> Literal[True] | ValidationError | None:
        """Hold one item of a synchronous input now, if nothing about it needs an await.

        The common case of a bulk job, without a coroutine per item: a token is
        free, no checkpoint is due, a journal (if any) holds nothing of it, and
        it is valid (True). Anything else goes through ``_take``, which does it all: None,
        or the item's refusal, found here and not looked for twice.
        """
        held = self._held
        index = self._read
        if (
            self._stopping
            or held.count >= held.limit
            or index % 256 == 255
            or self.options.dry_run
            or (type(raw) is InputRow and raw.error is not None)
        ):
            return None
        if time.perf_counter() - self._yielded > _FAIR:
            return None
        if self.hooks is not None:  # a journal: only when it holds nothing of this item
            fresh = getattr(self.hooks, "fresh", None)
            if fresh is None or not fresh(index, raw):
                return None
        try:
            item = self._prepare(raw)
        except ValidationError as exc:
            return exc
        held.count += 1
        held.peak = max(held.peak, held.count)
        self._read = index + 1
        if type(raw) is InputRow:
            self._lines[index] = raw.line
        self.chunker.add(index, item)
        self._changed.set()
        return True

    async def _take(self, raw: Any, refusal: ValidationError | None = None) -> None:
        """Hold one input item: a token first, so the input is read no faster than it drains.

        ``refusal``: the item was found invalid already (by ``_took``).
        """
        await self._held.take()
        index = self._read
        self._read += 1
        # Stay fair to the workers on a fast input, and let a stop in on a slow one.
        now = time.perf_counter()
        if index % 256 == 255 or now - self._yielded > _FAIR:
            self._yielded = now
            await anyio.lowlevel.checkpoint()
        if isinstance(raw, InputRow):
            self._lines[index] = raw.line
        if self.hooks is not None:
            earlier = await self.hooks.before(index, raw)
            if earlier is not None:
                self._lines.pop(index, None)
                await self._final([earlier], placed=False)
                return
        data = raw.data if isinstance(raw, InputRow) else raw
        if self._stopping:
            await self._final([self._outcome(index, data, NOT_ATTEMPTED)], placed=False)
            return
        try:
            if refusal is not None:
                raise refusal
            item = self._prepare(raw)
        except ValidationError as exc:
            outcome = self._outcome(index, data, INVALID, None, exc.code, excerpt(str(exc)))
            await self._final([attrs.evolve(outcome, settled=True)], placed=False)
            return
        if self.options.dry_run:
            await self._final([self._outcome(index, item, NOT_ATTEMPTED)], placed=False)
            return
        self.chunker.add(index, item)
        self._changed.set()

    def _prepare(self, raw: Any) -> ItemT:
        prepare: Callable[[Any], ItemT] = self.spec.prepare
        if not isinstance(raw, InputRow):
            return prepare(raw)
        where = f"line {raw.line}"
        if raw.error is not None:
            raise ValidationError("", raw.error)  # the reader's words name the line
        try:
            return prepare(raw.data)
        except ValidationError as exc:
            field = f"{where}: {exc.field}" if exc.field else where
            raise ValidationError(field, exc.reason, code=exc.code) from None
        except RecursionError:  # the reader bounds nesting; a row must never end the job
            raise ValidationError(where, "nested too deeply to read") from None
