"""A queue-fed worker's stop: prompt whatever the input does, and no item taken is lost.

Also: a chunk still waiting for a pace slot is not sent after a stop, and a
journal does not count it as in flight.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from capillary_async import OutcomeStatus, Request, Response, RetryPolicy, SystemClock

from .test_hostile import client_with, item, success_for


class GateLimiter:
    """A pace that lets ``free`` requests through, then makes every other one wait."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.waiting = 0
        self.opened = anyio.Event()

    async def acquire(self, *, priority: bool = False) -> None:
        if self.free > 0:
            self.free -= 1
            return
        self.waiting += 1
        await self.opened.wait()

    async def throttled(self, seconds: float | None, *, slow_down: bool) -> None:
        return None

    async def aclose(self) -> None:
        return None


class Feed:
    """The README's worker input, counting what it hands over."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self.queue = queue
        self.taken = 0

    async def __call__(self) -> AsyncIterator[Any]:
        while (entry := await self.queue.get()) is not None:
            self.taken += 1
            yield entry


def recording(sent: list[Request]) -> Any:
    def handler(request: Request) -> Response:
        sent.append(request)
        return success_for(request)

    return handler


async def test_stop_ends_a_job_whose_queue_is_waiting() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for ref in range(1, 16):
        queue.put_nowait(item(ref))
    feed = Feed(queue)
    sent: list[Request] = []
    seen = []
    async with client_with(recording(sent)) as client:
        with anyio.fail_after(5):  # a guard: the stop is prompt, nothing sleeps
            async with client.points.stream_update_expiry(
                feed(), chunk_size=5, flush_after=0.01
            ) as outcomes:
                async for outcome in outcomes:
                    seen.append(outcome)
                    if len(seen) == 15:  # the queue is empty now, and waits
                        outcomes.stop("shutting down")
    assert [o.status for o in seen] == [OutcomeStatus.SUCCEEDED] * 15
    assert outcomes.report.total == feed.taken == 15
    assert outcomes.report.stop_reason == "shutting down"


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_stop_gives_every_item_taken_from_the_input_one_outcome(kind: str) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for ref in range(1, 501):
        queue.put_nowait(item(ref))
    queue.put_nowait(None)
    feed = Feed(queue)
    taken = [0]

    def sync_feed() -> Iterator[Any]:
        while (entry := queue.get_nowait()) is not None:
            taken[0] += 1
            yield entry

    sent: list[Request] = []
    seen = []
    async with client_with(recording(sent)) as client:
        source = feed() if kind == "async" else sync_feed()
        async with client.points.stream_update_expiry(
            source, chunk_size=10, concurrency=2
        ) as outcomes:
            async for outcome in outcomes:
                seen.append(outcome)
                if len(seen) == 30:
                    outcomes.stop("shutting down")
    handed_over = feed.taken if kind == "async" else taken[0]
    assert len(seen) == outcomes.report.total == handed_over
    assert sorted(o.index for o in seen) == list(range(handed_over))
    assert queue.qsize() == 501 - handed_over  # the rest stays queued, for the next worker
    assert outcomes.report.input_complete is False  # and the report says so
    applied = sum(len(json.loads(r.content or b"")["expiryDateUpdateRequest"]) for r in sent)
    assert applied == sum(o.status is OutcomeStatus.SUCCEEDED for o in seen)


async def test_drain_reads_a_waiting_queue_until_it_goes_quiet() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for ref in range(1, 101):
        queue.put_nowait(item(ref))
    feed = Feed(queue)
    seen = []
    async with client_with(recording([])) as client:
        with anyio.fail_after(5):
            async with client.points.stream_update_expiry(
                feed(), chunk_size=10, concurrency=1, flush_after=0.02
            ) as outcomes:
                async for outcome in outcomes:
                    seen.append(outcome)
                    if len(seen) == 10:
                        outcomes.stop("shutting down", drain=True)
    assert feed.taken == len(seen) == 100  # drained: every queued item has its outcome
    assert queue.empty()
    assert {o.status for o in seen[20:]} == {OutcomeStatus.NOT_ATTEMPTED}


async def test_a_stop_keeps_chunks_waiting_for_a_pace_slot_home() -> None:
    limiter = GateLimiter(free=1)
    sent: list[Request] = []
    seen = []
    async with client_with(recording(sent), limiter=limiter) as client:
        with anyio.fail_after(5):
            async with client.points.stream_update_expiry(
                [item(ref) for ref in range(1, 41)], chunk_size=5, concurrency=4
            ) as outcomes:
                async for outcome in outcomes:
                    seen.append(outcome)
                    if len(seen) == 5:
                        while limiter.waiting < 3:  # the other workers wait for a slot
                            await anyio.lowlevel.checkpoint()
                        outcomes.stop("shutting down")
    assert len(sent) == 1
    assert [o.status for o in seen[:5]] == [OutcomeStatus.SUCCEEDED] * 5
    assert {o.status for o in seen[5:]} == {OutcomeStatus.NOT_ATTEMPTED}
    assert outcomes.report.requests == 1


def journal_states(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
    finally:
        db.close()


async def test_rows_waiting_for_a_pace_slot_are_not_in_flight_in_the_journal(
    tmp_path: Path,
) -> None:
    """Aborted while chunks wait for the pace: only the chunk sent could have been applied."""
    journal = tmp_path / "job.db"
    rows = [item(ref, "FIXED_DAYS") for ref in range(1, 41)]
    limiter = GateLimiter(free=1)
    sent: list[Request] = []
    client = client_with(recording(sent), limiter=limiter)
    async with (
        client,
        client.points.stream_update_expiry(
            rows, chunk_size=5, concurrency=4, journal=journal
        ) as outcomes,
    ):
        async for outcome in outcomes:
            assert outcome.ok
            if outcome.index == 4:
                while limiter.waiting < 3:
                    await anyio.lowlevel.checkpoint()
                break  # leaving the block aborts the job, as a second Ctrl-C does
    assert len(sent) == 1
    states = journal_states(journal)
    assert states.get("in_flight", 0) == states.get("unknown", 0) == 0
    assert states["succeeded"] == 5

    again: list[Request] = []
    async with client_with(recording(again)) as client:
        report = await client.points.bulk_update_expiry(rows, chunk_size=5, journal=journal)
    assert (report.succeeded, report.unknown, report.resumed) == (40, 0, 5)
    assert report.input_complete
    refs = [
        entry["pointsAwardedRefId"]
        for r in sent + again
        for entry in json.loads(r.content or b"")["expiryDateUpdateRequest"]
    ]
    assert sorted(refs) == list(range(1, 41))  # each row applied exactly once


# -- found by a hostile review ----------------------------------------------------------------


def refused(request: Request) -> Response:
    return Response(status=401, headers={}, content=b'{"errors": [{"code": 401}]}')


@pytest.mark.parametrize("kind", ["endless", "busy queue"])
async def test_the_jobs_own_stop_leaves_an_endless_input_of_a_stream_unread(kind: str) -> None:
    """A 401 stops the job; draining a generator that never ends would never end."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def busy() -> AsyncIterator[Any]:
        ref = 0
        while True:  # a producer that keeps the queue from ever going quiet
            ref += 1
            queue.put_nowait(item(ref))
            yield await queue.get()

    def endless() -> Iterator[Any]:
        ref = 0
        while True:
            ref += 1
            yield item(ref)

    async with client_with(refused) as client:
        with anyio.fail_after(5):
            source = endless() if kind == "endless" else busy()
            async with client.points.stream_update_expiry(source, chunk_size=5) as outcomes:
                seen = [o async for o in outcomes]
    report = outcomes.report
    assert "refused the credentials" in (report.stop_reason or "")
    assert len(seen) == report.total < 100
    assert all(o.resendable for o in seen)  # none applied: a worker requeues them all
    assert report.input_complete is False


async def test_a_bulk_call_still_reads_a_finite_generator_to_the_end_after_a_401() -> None:
    async with client_with(refused) as client:
        report = await client.points.bulk_update_expiry(
            (item(n) for n in range(1, 201)), chunk_size=5
        )
    assert report.total == 200
    assert report.input_complete


async def test_an_input_that_raises_when_its_read_is_abandoned_still_stops_gracefully() -> None:
    taken = [0]

    async def consumer() -> AsyncIterator[Any]:
        ref = 0
        while True:
            ref += 1
            if ref > 12:
                try:
                    await anyio.sleep_forever()
                except anyio.get_cancelled_exc_class():
                    raise ConnectionError("the broker's consumer was closed") from None
            taken[0] += 1
            yield item(ref)

    sent: list[Request] = []
    async with client_with(recording(sent)) as client:
        with anyio.fail_after(5):
            async with client.points.stream_update_expiry(
                consumer(), chunk_size=4, flush_after=0.01
            ) as outcomes:
                seen = []
                async for outcome in outcomes:
                    seen.append(outcome)
                    if len(seen) == 12:
                        outcomes.stop("shutting down")
    assert len(seen) == taken[0] == 12
    assert outcomes.report.input_complete is False


async def test_leaving_a_stream_early_reports_the_input_unread() -> None:
    async with (
        client_with(recording([])) as client,
        client.points.stream_update_expiry(
            [item(n) for n in range(1, 501)], chunk_size=5
        ) as outcomes,
    ):
        async for _ in outcomes:
            break  # an abort, as a second Ctrl-C
    assert outcomes.report.input_complete is False


async def test_a_stop_reaches_a_job_whose_synchronous_input_is_slow() -> None:
    def slow() -> Iterator[Any]:
        for ref in range(1, 201):
            time.sleep(0.003)  # a slow file system, say
            yield item(ref)

    client = client_with(recording([]))
    async with client, client.points.stream_update_expiry(slow(), chunk_size=100) as outcomes:
        async for _ in outcomes:  # the first chunk's outcomes: 100 items read
            outcomes.stop("shutting down")
    assert outcomes.report.total < 150  # the stop got in: the rest was not read


async def test_rows_waiting_to_retry_after_a_429_are_not_in_flight_in_the_journal(
    tmp_path: Path,
) -> None:
    """The 429 proves the attempt was not applied: an abort then leaves them to resend."""
    journal = tmp_path / "job.db"
    rows = [item(ref, "FIXED_DAYS") for ref in range(1, 11)]
    answers: list[Request] = []

    def limited(request: Request) -> Response:
        answers.append(request)
        return Response(status=429, headers={"retry-after": "60"}, content=b"")

    # The real clock: the retry waits its 60 s, and the job is aborted meanwhile.
    client = client_with(limited, retry=RetryPolicy(max_attempts=5), clock=SystemClock())
    async with (
        client,
        client.points.stream_update_expiry(rows, chunk_size=10, concurrency=1, journal=journal),
    ):
        while not answers:
            await anyio.lowlevel.checkpoint()
        for _ in range(50):  # the chunk is parked for its retry
            await anyio.lowlevel.checkpoint()
    assert len(answers) == 1
    states = journal_states(journal)
    assert states.get("in_flight", 0) == states.get("unknown", 0) == 0, states
    again: list[Request] = []
    async with client_with(recording(again)) as client:
        report = await client.points.bulk_update_expiry(rows, chunk_size=10, journal=journal)
    assert (report.succeeded, report.unknown) == (10, 0)
    assert len(again) == 1
