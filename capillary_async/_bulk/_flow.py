"""Small flow-control parts of the scheduler: the held-item gate, a cheap signal, chunks."""

from __future__ import annotations

from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from .._exceptions import CapillaryError

__all__ = ["Chunk", "Gate", "Signal", "send_fast"]

Entry = tuple[int, Any]


class Gate:
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


class Signal:
    """An event that costs nothing to set while nobody waits for it."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def set(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    def waiter(self) -> anyio.Event:
        if self._event is None:
            self._event = anyio.Event()
        return self._event


async def send_fast(stream: MemoryObjectSendStream[Any], item: Any) -> None:
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


@attrs.define(eq=False)
class Chunk:
    items: list[Entry]
    attempt: int = 0
    split: bool = False
    last_error: CapillaryError | None = None
    #: An attempt failed in a way that may have applied it: a later refusal cannot undo that.
    maybe_applied: bool = False
    #: Its items are marked in flight in the journal (until a failure proves them unsent).
    marked: bool = False
