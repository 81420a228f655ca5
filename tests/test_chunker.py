"""The Chunker as a plain object: chunk bounds, busy keys, waiting duplicates, release, abandon.

No event loop: every rule is visible from ``add``, ``take``, ``flush``,
``release`` and ``abandon`` alone. Items are ``(key, tag)`` tuples.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capillary_async._bulk._chunker import Chunker

Item = tuple[str, str]
Entry = tuple[int, Item]


def chunker(size: int) -> Chunker[Item]:
    return Chunker(size, key=lambda item: item[0])


def fill(c: Chunker[Item], *keys: str, start: int = 0) -> list[Entry]:
    """Add one item per key, indexed from ``start``; the entries added."""
    entries = [(start + n, (key, f"#{start + n}")) for n, key in enumerate(keys)]
    for index, item in entries:
        c.add(index, item)
    return entries


def indices(chunk: Iterable[Entry] | None) -> list[int]:
    assert chunk is not None
    return [index for index, _ in chunk]


# -- construction and size bounds ------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -1])
def test_a_chunk_size_below_one_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        chunker(size)


def test_an_empty_chunker_has_nothing() -> None:
    c = chunker(3)
    assert (len(c), c.building, c.size) == (0, 0, 3)
    assert c.take() is None
    assert c.flush() == []
    assert c.abandon() == []


def test_take_returns_only_full_chunks_of_exactly_size() -> None:
    c = chunker(3)
    fill(c, "a", "b")
    assert c.take() is None
    assert (len(c), c.building) == (2, 2)
    fill(c, "c", "d", "e", "f", "g", start=2)
    assert indices(c.take()) == [0, 1, 2]
    assert indices(c.take()) == [3, 4, 5]
    assert c.take() is None
    assert (len(c), c.building) == (1, 1)


def test_flush_returns_the_partial_chunk_in_input_order() -> None:
    c = chunker(5)
    entries = fill(c, "a", "b", "c")
    assert c.flush() == [entries]
    assert (len(c), c.building) == (0, 0)
    assert c.flush() == []


def test_a_shrunk_size_bounds_take() -> None:
    c = chunker(4)
    fill(c, "a", "b", "c", "d", "e")
    c.size = 2
    assert indices(c.take()) == [0, 1]
    assert indices(c.take()) == [2, 3]
    assert c.take() is None
    assert c.building == 1


def test_a_shrunk_size_bounds_flush() -> None:
    c = chunker(4)
    fill(c, "a", "b", "c")
    c.size = 2
    assert [indices(chunk) for chunk in c.flush()] == [[0, 1], [2]]
    c.size = 1
    fill(c, "d", "e", "f", start=3)
    assert [indices(chunk) for chunk in c.flush()] == [[3], [4], [5]]


# -- busy keys and waiting duplicates ----------------------------------------------------------


def test_a_duplicate_never_joins_the_chunk_holding_its_key() -> None:
    c = chunker(3)
    fill(c, "a", "a", "b", "c")
    assert (len(c), c.building) == (4, 3)  # the second "a" waits
    assert indices(c.take()) == [0, 2, 3]
    assert c.take() is None
    assert c.flush() == []  # the first "a" is in flight: the second cannot go
    assert (len(c), c.building) == (1, 0)


def test_a_waiting_duplicate_joins_once_the_earlier_one_is_released() -> None:
    c = chunker(2)
    first, second, other = fill(c, "a", "a", "b")
    chunk = c.take()
    assert chunk == [first, other]
    c.release(chunk)
    assert c.flush() == [[second]]
    assert len(c) == 0


def test_duplicates_of_one_key_come_one_at_a_time_in_input_order() -> None:
    c = chunker(4)
    entries = fill(c, "a", "a", "a", "a")
    handed: list[list[Entry]] = []
    for _ in range(4):
        chunks = c.flush()
        assert len(chunks) == 1
        assert len(chunks[0]) == 1  # never two "a" at once, even with room
        handed.append(chunks[0])
        assert c.flush() == []  # not before the one in flight is released
        c.release(chunks[0])
    assert handed == [[entry] for entry in entries]
    assert len(c) == 0


def test_a_released_key_with_nothing_waiting_is_free_for_a_new_item() -> None:
    c = chunker(2)
    (first,) = fill(c, "a")
    (chunk,) = c.flush()
    c.release(chunk)
    assert c.flush() == []  # frees "a": nothing was waiting for it
    (later,) = fill(c, "a", start=1)
    assert c.building == 1  # straight into the chunk being built: nothing holds "a"
    assert c.flush() == [[later]]
    assert first != later


def test_an_item_added_after_release_but_before_take_still_goes_in_order() -> None:
    c = chunker(3)
    (first,) = fill(c, "a")
    (chunk,) = c.flush()
    c.release(chunk)
    second, third = fill(c, "a", "a", start=1)
    assert c.flush() == [[second]]
    assert c.flush() == []
    c.release([second])
    assert c.flush() == [[third]]
    assert first not in (second, third)


def test_a_released_duplicate_does_not_overfill_a_full_chunk() -> None:
    c = chunker(2)
    first, dup = fill(c, "a", "a")
    (chunk,) = c.flush()
    assert chunk == [first]
    fill(c, "b", "c", start=2)  # the chunk being built is now full
    c.release([first])
    assert indices(c.take()) == [2, 3]  # exactly size: the duplicate did not squeeze in
    assert (len(c), c.building) == (1, 0)
    assert c.take() is None  # the next take admits it, but one item is not a full chunk
    assert c.building == 1
    assert c.flush() == [[dup]]


def test_a_released_duplicate_joins_while_there_is_room() -> None:
    c = chunker(3)
    first, dup = fill(c, "a", "a")
    (chunk,) = c.flush()
    assert chunk == [first]
    fill(c, "b", "c", start=2)
    c.release(chunk)
    assert c.take() == [(2, ("b", "#2")), (3, ("c", "#3")), dup]


def test_released_duplicates_fill_the_room_left_and_the_rest_wait() -> None:
    c = chunker(2)
    fill(c, "a", "b", "a", "b", "c")  # 2 and 3 wait for a and b
    held = c.take()
    assert held is not None
    assert indices(held) == [0, 1]
    c.release(held)  # both free; only one of the two duplicates fits next to "c"
    assert indices(c.take()) == [4, 2]
    assert indices(c.flush()[0]) == [3]
    assert len(c) == 0


def test_a_duplicate_waits_behind_a_shrunk_full_chunk() -> None:
    c = chunker(3)
    first, dup = fill(c, "a", "a")
    (chunk,) = c.flush()
    fill(c, "b", "c", start=2)
    c.size = 2  # the two being built already fill a chunk
    c.release(chunk)
    assert indices(c.take()) == [2, 3]
    assert c.flush() == [[dup]]
    assert first == chunk[0]


# -- release of entries that do not hold their key ---------------------------------------------


def test_release_with_a_wrong_index_frees_nothing() -> None:
    c = chunker(2)
    first, dup = fill(c, "a", "a")
    (chunk,) = c.flush()
    c.release([(99, first[1]), (dup[0], first[1])])
    assert c.flush() == []
    assert len(c) == 1
    c.release(chunk)
    assert c.flush() == [[dup]]


def test_release_of_a_waiting_item_does_not_free_the_key_in_flight() -> None:
    c = chunker(2)
    first, dup, third = fill(c, "a", "a", "a")
    (chunk,) = c.flush()
    assert chunk == [first]
    c.release([dup, third])
    assert c.flush() == []
    assert len(c) == 2
    c.release(chunk)
    assert c.flush() == [[dup]]


def test_releasing_twice_never_lets_two_of_one_key_in_flight() -> None:
    c = chunker(3)
    first, second, third = fill(c, "a", "a", "a")
    assert c.flush() == [[first]]
    c.release([first])
    assert c.flush() == [[second]]
    c.release([first])  # again: "a" is now held by the second, which is in flight
    assert c.flush() == []
    c.release([first, first])
    assert c.take() is None
    assert c.flush() == []
    assert len(c) == 1
    c.release([second])
    assert c.flush() == [[third]]


def test_releasing_twice_before_the_next_take_frees_once() -> None:
    c = chunker(3)
    first, second, third = fill(c, "a", "a", "a")
    assert c.flush() == [[first]]
    c.release([first])
    c.release([first])
    assert c.flush() == [[second]]
    assert c.flush() == []
    assert len(c) == 1  # the third still waits
    c.release([second])
    assert c.flush() == [[third]]


def test_release_of_an_item_with_a_never_seen_key_is_harmless() -> None:
    c = chunker(2)
    fill(c, "a")
    c.release([(0, ("zzz", "#0")), (7, ("a", "#7"))])
    assert c.flush() == [[(0, ("a", "#0"))]]


# -- abandon -----------------------------------------------------------------------------------


def test_abandon_returns_building_and_waiting_in_index_order() -> None:
    c = chunker(3)
    entries = fill(c, "a", "b", "a", "c", "b", "d", "a", "e")
    handed = c.take()
    assert indices(handed) == [0, 1, 3]
    assert (len(c), c.building) == (5, 2)  # 5 and 7 build; 2, 4 and 6 wait
    left = c.abandon()
    assert left == [entries[i] for i in (2, 4, 5, 6, 7)]
    assert (len(c), c.building) == (0, 0)
    assert c.take() is None
    assert c.flush() == []


def test_keys_held_in_flight_stay_busy_after_abandon() -> None:
    c = chunker(2)
    first, dup = fill(c, "a", "a")
    (chunk,) = c.flush()
    assert c.abandon() == [dup]
    (later,) = fill(c, "a", start=2)
    assert c.flush() == []  # the one in flight still holds "a"
    c.release(chunk)
    assert c.flush() == [[later]]
    assert first == chunk[0]


def test_keys_of_abandoned_items_are_free_again() -> None:
    c = chunker(2)
    fill(c, "a", "b")
    assert indices(c.abandon()) == [0, 1]
    c.release([(0, ("a", "#0"))])  # the engine releases what it ended: no effect
    new = fill(c, "a", "b", start=2)
    assert c.take() == new


def test_abandon_with_a_release_pending_leaves_the_chunker_usable() -> None:
    c = chunker(1)
    first, dup = fill(c, "a", "a")
    assert c.take() == [first]
    c.release([first])
    assert c.abandon() == [dup]
    assert len(c) == 0
    (later,) = fill(c, "a", start=2)
    assert c.take() == [later]


# -- a property: random operations keep every rule ---------------------------------------------

KEYS = "abcd"

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.text(KEYS, min_size=1, max_size=6)),
        st.tuples(st.just("take"), st.just(0)),
        st.tuples(st.just("flush"), st.just(0)),
        st.tuples(st.just("release"), st.integers(0, 7)),
        st.tuples(st.just("bogus"), st.integers(0, 7)),
        st.tuples(st.just("shrink"), st.integers(1, 4)),
        st.tuples(st.just("abandon"), st.integers(0, 5)),  # 0 only: a rare stop
    ),
    min_size=5,
    max_size=60,
)


class Model:
    """What the chunker has been given and has handed out, checked at every step."""

    def __init__(self, size: int) -> None:
        self.c: Chunker[Item] = chunker(size)
        self.added: dict[int, Item] = {}
        self.handed: dict[int, int] = {}  # index -> times handed out
        self.abandoned: dict[int, int] = {}
        self.in_flight: dict[int, Item] = {}  # handed out, not released
        self.released: list[Entry] = []
        self.last_of_key: dict[str, int] = {}

    def add(self, key: str) -> None:
        index = len(self.added)
        item = (key, f"#{index}")
        self.added[index] = item
        self.c.add(index, item)

    def hand_out(self, chunk: list[Entry]) -> None:
        assert 1 <= len(chunk) <= self.c.size
        keys = [item[0] for _, item in chunk]
        assert len(set(keys)) == len(keys), f"duplicate key in one chunk: {chunk}"
        busy = {item[0] for item in self.in_flight.values()}
        for index, item in chunk:
            assert self.added[index] == item
            assert item[0] not in busy, f"{item[0]!r} handed out while in flight"
            # Items of one key go in input order (abandoned ones are skipped).
            assert index > self.last_of_key.get(item[0], -1)
            self.last_of_key[item[0]] = index
            self.handed[index] = self.handed.get(index, 0) + 1
            self.in_flight[index] = item

    def release(self, pick: int) -> None:
        if not self.in_flight:
            return
        ordered = sorted(self.in_flight.items())
        start = pick % len(ordered)
        entries = ordered[start : start + 1 + pick // 3]
        for index, _ in entries:
            del self.in_flight[index]
        self.released.extend(entries)
        self.c.release(entries)

    def bogus(self, pick: int) -> None:
        """A release that holds nothing: again, a wrong index, a waiting or abandoned item."""
        candidates: list[Entry] = list(self.released)
        candidates += [(i + 1000, item) for i, item in self.in_flight.items()]
        candidates += [(i, self.added[i]) for i in self.abandoned]
        candidates += [
            (i, item)
            for i, item in self.added.items()
            if i not in self.handed and i not in self.abandoned and self._waiting(i)
        ]
        if candidates:
            self.c.release([candidates[pick % len(candidates)]])

    def _waiting(self, index: int) -> bool:
        """Whether an unhanded item is waiting for a busy key (not in the chunk being built)."""
        key = self.added[index][0]
        return any(
            item[0] == key and i < index
            for i, item in self.added.items()
            if i not in self.abandoned and (i not in self.handed or i in self.in_flight)
        )

    def abandon(self) -> None:
        left = self.c.abandon()
        assert [i for i, _ in left] == sorted(i for i, _ in left)
        for index, item in left:
            assert self.added[index] == item
            assert index not in self.handed
            assert index not in self.abandoned
            self.abandoned[index] = 1
        assert (len(self.c), self.c.building) == (0, 0)

    def check_counts(self) -> None:
        held = len(self.added) - len(self.handed) - len(self.abandoned)
        assert len(self.c) == held
        assert 0 <= self.c.building <= held

    def drain(self) -> None:
        """Release everything handed out and flush, until nothing is held."""
        for _ in range(len(self.added) + 2):
            self.release_all()
            for chunk in self.c.flush():
                self.hand_out(chunk)
            self.check_counts()
            if not len(self.c) and not self.in_flight:
                break
        self.release_all()
        assert len(self.c) == 0
        assert self.c.flush() == []

    def release_all(self) -> None:
        entries = sorted(self.in_flight.items())
        self.in_flight.clear()
        self.c.release(entries)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 4), ops=operations)
def test_random_operations_keep_every_rule(size: int, ops: list[tuple[str, Any]]) -> None:
    model = Model(size)
    for op, arg in ops:
        if op == "add":
            for key in arg:
                model.add(key)
        elif op == "take":
            chunk = model.c.take()
            if chunk is not None:
                assert len(chunk) == model.c.size
                model.hand_out(chunk)
        elif op == "flush":
            for chunk in model.c.flush():
                model.hand_out(chunk)
            assert model.c.building == 0
        elif op == "release":
            model.release(arg)
        elif op == "bogus":
            model.bogus(arg)
        elif op == "shrink":
            model.c.size = min(model.c.size, arg)
        elif arg == 0:
            model.abandon()
        model.check_counts()
    model.drain()
    for index in model.added:
        assert model.handed.get(index, 0) + model.abandoned.get(index, 0) == 1, index
