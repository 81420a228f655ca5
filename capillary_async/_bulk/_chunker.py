"""Packing items into chunks: a plain object, no tasks, no awaits.

Two items with the same key (the same points-awarded record) must never be in
one request, and a later one must not overtake an earlier one still in flight:
the server would apply them in an unknown order. So a key is *busy* from the
moment its item joins a chunk until that item is final (``release``); a later
item with a busy key waits, in input order, and joins a chunk once released.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

__all__ = ["Chunker"]

ItemT = TypeVar("ItemT")


class Chunker(Generic[ItemT]):
    """Items in, chunks of at most ``size`` out; duplicates of a busy key wait.

    ``add`` an item, ``take`` full chunks, ``flush`` the partial one when
    waiting would not help, ``release`` items once final (a waiting duplicate
    may then join), ``abandon`` everything held when the job stops.
    """

    def __init__(self, size: int, key: Callable[[ItemT], Hashable]) -> None:
        if size < 1:
            raise ValueError("chunk size: must be at least 1")
        #: The largest chunk; may shrink while running (a 413), never grows.
        self.size = size
        self._key = key
        self._building: list[tuple[int, ItemT]] = []
        #: Busy keys, and the index of the item holding each.
        self._busy: dict[Hashable, int] = {}
        self._waiting: dict[Hashable, deque[tuple[int, ItemT]]] = {}
        self._waiting_count = 0
        self._released: dict[Hashable, None] = {}  # ordered, each key once

    def __len__(self) -> int:
        """Items held: in the chunk being built and waiting for a busy key."""
        return len(self._building) + self._waiting_count

    @property
    def building(self) -> int:
        """Items in the chunk being built."""
        return len(self._building)

    def add(self, index: int, item: ItemT) -> None:
        key = self._key(item)
        if key in self._busy:
            self._waiting.setdefault(key, deque()).append((index, item))
            self._waiting_count += 1
        else:
            self._busy[key] = index
            self._building.append((index, item))

    def release(self, entries: Iterable[tuple[int, ItemT]]) -> None:
        """These items are final: their keys are free (if they held them)."""
        busy = self._busy
        for index, item in entries:
            key = self._key(item)
            if busy.get(key) == index:
                self._released[key] = None

    def take(self) -> list[tuple[int, ItemT]] | None:
        """A full chunk, if there is one."""
        self._admit()
        if len(self._building) < self.size:
            return None
        chunk = self._building[: self.size]
        self._building = self._building[self.size :]
        return chunk

    def flush(self) -> list[list[tuple[int, ItemT]]]:
        """Whatever is being built, now, in chunks of at most ``size``."""
        self._admit()
        chunks = []
        while self._building:
            chunks.append(self._building[: self.size])
            self._building = self._building[self.size :]
        return chunks

    def abandon(self) -> list[tuple[int, ItemT]]:
        """Everything held and not yet in a chunk, in input order; the chunker is empty after."""
        left = self._building + [e for queue in self._waiting.values() for e in queue]
        for index, item in left:
            key = self._key(item)
            if self._busy.get(key) == index:
                del self._busy[key]
        self._building, self._waiting, self._waiting_count = [], {}, 0
        return sorted(left, key=lambda entry: entry[0])

    def _admit(self) -> None:
        """Free released keys; a waiting duplicate joins the chunk only while there is room."""
        if not self._released:
            return
        later: dict[Hashable, None] = {}
        for key in self._released:
            waiting = self._waiting.get(key)
            if waiting and len(self._building) >= self.size:
                later[key] = None  # the full chunk goes first; this one next time
                continue
            del self._busy[key]
            if waiting:
                index, item = waiting.popleft()
                self._waiting_count -= 1
                self._busy[key] = index
                self._building.append((index, item))
                if not waiting:
                    del self._waiting[key]
        self._released = later
