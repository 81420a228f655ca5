"""The client's one pace: GCRA, the cooldown every request waits out, adaptive rate, priority."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import anyio
import pytest

from capillary_async import (
    BasicAuth,
    CapillaryClient,
    Limiter,
    LocalLimiter,
    MockTransport,
    Request,
    Response,
    RetryPolicy,
)
from capillary_async._limiter import (
    MAX_COOLDOWN,
    MIN_SHARE,
    Dispatcher,
    FallbackPace,
    LocalPace,
    bounded,
)

from .conftest import FakeClock, reply


async def test_the_pace_hands_out_slots_one_interval_apart() -> None:
    clock = FakeClock()
    pace = LocalPace(clock, 10.0)
    assert [round(await pace.reserve(), 6) for _ in range(4)] == [0.0, 0.1, 0.2, 0.3]
    clock.advance(1.0)  # idle time is not saved up: no burst after a quiet second
    assert [round(await pace.reserve(), 6) for _ in range(2)] == [0.0, 0.1]


async def test_a_cooldown_holds_every_slot_and_a_429_halves_an_adaptive_rate() -> None:
    clock = FakeClock()
    pace = LocalPace(clock, 40.0, adaptive=True)
    await pace.throttled(2.0, slow_down=False)  # a 503 with Retry-After: a pause, same rate
    assert await pace.reserve() == pytest.approx(2.0)
    assert pace.rate == 40.0
    await pace.throttled(None, slow_down=True)  # a 429 without Retry-After
    assert pace.rate == 20.0
    for _ in range(10):
        await pace.throttled(0.0, slow_down=True)
    assert pace.rate == 40.0 * MIN_SHARE  # never below 1/64 of the ceiling
    clock.advance(5.0)  # grows back by a tenth of the ceiling per second
    assert pace.rate == pytest.approx(40.0 * MIN_SHARE + 20.0)
    clock.advance(60.0)
    assert pace.rate == 40.0


def test_a_fixed_rate_does_not_adapt_and_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        LocalLimiter(0)
    with pytest.raises(ValueError, match="adaptive"):
        LocalLimiter(None, adaptive=True)
    with pytest.raises(ValueError, match="rate_limit or limiter"):
        CapillaryClient("https://eu.api.capillarytech.com", auth=BasicAuth("u", "p"),
                        rate_limit=5, limiter=LocalLimiter(5))  # fmt: skip
    with pytest.raises(TypeError, match="limiter"):
        CapillaryClient(
            "https://eu.api.capillarytech.com",
            auth=BasicAuth("u", "p"),
            limiter=object(),  # type: ignore[arg-type]
        )
    assert isinstance(LocalLimiter(3.0), Limiter)


async def test_a_429_on_one_call_pauses_the_next_call_of_the_client() -> None:
    clock = FakeClock()
    answers = [reply(429, {"errors": [{"code": 429, "message": "slow"}]}, {"Retry-After": "7"})]

    def handler(request: Request) -> Response:
        return answers.pop(0) if answers else reply(200, {"ok": True})

    async with CapillaryClient(
        "https://eu.api.capillarytech.com",
        auth=BasicAuth("u", "p"),
        transport=MockTransport(handler),
        clock=clock,
        retry=RetryPolicy(max_attempts=1),
    ) as client:
        with pytest.raises(Exception, match="429"):
            await client.request("GET", "/v2/a")
        started = clock.now
        assert await client.request("GET", "/v2/b") == {"ok": True}
    assert clock.now - started == pytest.approx(7.0)  # the other call waited the Retry-After


async def test_a_bulk_jobs_429_pauses_single_calls_too_and_rate_limit_paces_all() -> None:
    clock = FakeClock()
    sent: list[tuple[str, float]] = []

    def handler(request: Request) -> Response:
        sent.append((request.url.rsplit("/", 1)[-1], clock.now))
        if len(sent) == 1:
            return reply(429, {"errors": [{"code": 429, "message": "slow"}]}, {"Retry-After": "3"})
        body = json.loads(request.content or b"{}")
        items = body.get("expiryDateUpdateRequest", [])
        logs = [
            {"pointsExpiryUpdateLogs": {"paId": i["pointsAwardedRefId"], "paType": "POINT_AWARDED"}}
            for i in items
        ]
        return reply(200, {"currencyExpiryUpdateResponse": logs} if items else {"ok": True})

    item: dict[str, Any] = {
        "identifierName": "id",
        "identifierValue": "1",
        "programId": 1,
        "pointsAwardedRefId": 1,
        "pointsAwardedRefType": "POINT_AWARDED",
        "expiryDate": {"expiryType": "FIXED_DATE", "expiryValue": "2030-01-01"},
    }
    async with CapillaryClient(
        "https://eu.api.capillarytech.com",
        auth=BasicAuth("u", "p"),
        transport=MockTransport(handler),
        clock=clock,
        rate_limit=2.0,
    ) as client:
        report = await client.points.bulk_update_expiry([item], chunk_size=1)
        assert report.succeeded == 1
        await client.request("GET", "/v2/after")
    times = [at for _, at in sent]
    assert times[1] - times[0] == pytest.approx(3.0)  # the job's retry waited the cooldown
    assert times[2] - times[1] == pytest.approx(0.5)  # and the single call, one slot at 2/s


async def test_single_calls_go_first_while_bulk_work_saturates_the_limit() -> None:
    """With bulk requests always waiting, a single call waits at most one token interval."""
    rate = 50.0
    interval = 1 / rate
    limiter = LocalLimiter(rate)
    waits: dict[bool, list[float]] = {True: [], False: []}

    async def bulk_worker(stop: anyio.Event) -> None:
        while not stop.is_set():
            await limiter.acquire(priority=False)

    async def single_calls(priority: bool) -> None:
        for _ in range(20 if priority else 3):
            await anyio.sleep(0.013)
            started = time.perf_counter()
            await limiter.acquire(priority=priority)
            waits[priority].append(time.perf_counter() - started)

    for priority in (True, False):
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            for _ in range(16):  # a job with 16 workers, always waiting for a slot
                tg.start_soon(bulk_worker, stop)
            await single_calls(priority)
            stop.set()
    first = sorted(waits[True])
    p99 = first[int(0.99 * (len(first) - 1))]
    # One interval, and a little for the event loop's own timer slack.
    assert p99 <= interval * 1.25, (p99, first)
    # Without priority the same calls queue behind the job's workers.
    assert sorted(waits[False])[len(waits[False]) // 2] > 4 * interval


async def test_odd_pauses_and_a_clock_that_steps_back_stay_bounded() -> None:
    clock = FakeClock()
    pace = LocalPace(clock, 10.0, adaptive=True)
    await pace.throttled(float("inf"), slow_down=False)
    assert await pace.reserve() == pytest.approx(MAX_COOLDOWN)  # not for ever
    fresh = LocalPace(clock, 10.0)
    await fresh.throttled(float("nan"), slow_down=False)
    assert await fresh.reserve() == pytest.approx(1.0)  # NaN is "no header": the default
    await fresh.throttled(-5.0, slow_down=False)
    clock.now -= 3600  # the clock stepped back an hour
    assert 0 <= await fresh.reserve() <= MAX_COOLDOWN
    assert 10.0 / 64 <= pace.rate <= 10.0
    with pytest.raises(ValueError, match="max_retry_after"):
        RetryPolicy(max_retry_after=float("inf"))


async def test_a_slow_rate_stays_slow_past_the_longest_pause() -> None:
    """Intervals longer than the 600 s a pause is bounded by are kept, not reset."""
    clock = FakeClock()
    limiter = LocalLimiter(0.001, clock=clock)  # one request every 1000 s
    for _ in range(20):
        await limiter.acquire()
    assert clock.sleeps == [pytest.approx(1000.0)] * 19
    pace = LocalPace(clock, 0.05, adaptive=True)
    for _ in range(6):  # six 429s: down to 0.05 / 64, a slot every 1280 s
        await pace.throttled(None, slow_down=True)
    assert await pace.reserve() == pytest.approx(1.0)  # the cooldown
    assert await pace.reserve() == pytest.approx(1.0 + 1280.0)  # not full speed again
    share = LocalPace(clock, 0.0005)  # a fallback's share of a slow rate
    clock.sleeps.clear()
    for _ in range(3):
        await Dispatcher(share, clock).acquire()
    assert clock.sleeps == [pytest.approx(2000.0)] * 2
    clock.now -= 7200  # a clock that stepped back further than an interval still resets
    assert await share.reserve() == 0.0


def test_a_rate_too_slow_to_be_meant_is_refused_naming_the_option() -> None:
    for rate in (0.0005, float("nan"), float("inf"), -1.0, True, "5"):
        with pytest.raises(ValueError, match=r"^rate_limit: .* at least 0\.001"):
            LocalLimiter(rate)  # type: ignore[arg-type]
    assert LocalLimiter(0.001).rate == 0.001
    with pytest.raises(ValueError, match="rate_limit"):
        CapillaryClient("https://eu.api.capillarytech.com", auth=BasicAuth("u", "p"),
                        rate_limit=0.0001)  # fmt: skip


async def test_a_store_call_that_misbehaves_on_cancellation_never_cancels_the_caller() -> None:
    """redis-py's cluster client on Python 3.10 let a timeout's cancellation escape.

    The caller's task (a user's request) then ended cancelled. A bounded call
    runs in a task of its own: whatever the library does with cancellation,
    the caller gets a result, its error, or ``TimeoutError``.
    """

    async def swallows_cancellation() -> float:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # turned into "still working"
        return 1.0

    async def cancels_itself() -> float:
        raise asyncio.CancelledError  # a cancellation nobody asked for

    async def fails() -> float:
        raise OSError("refused")

    async def answers() -> float:
        return 0.25

    with anyio.fail_after(5):
        with pytest.raises(TimeoutError):
            await bounded(swallows_cancellation, 0.02)
        with pytest.raises(ConnectionError, match="cancelled inside the client library"):
            await bounded(cancels_itself, 1.0)
        with pytest.raises(OSError, match="refused"):
            await bounded(fails, 1.0)
        assert await bounded(answers, 1.0) == 0.25
        await asyncio.sleep(0.1)  # the caller goes on; the abandoned call ends on its own


async def test_cancelling_the_caller_cancels_the_bounded_call() -> None:
    started, ended = asyncio.Event(), asyncio.Event()

    async def slow() -> float:
        started.set()
        try:
            await asyncio.sleep(10)
        finally:
            ended.set()
        return 0.0

    with anyio.fail_after(5):
        task = asyncio.ensure_future(bounded(slow, 30))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await ended.wait()


async def test_a_call_left_running_holds_back_the_next_one() -> None:
    """A library that ignores cancellation must not pile up calls, one per probe."""
    started = 0
    release = asyncio.Event()

    class Stubborn(FallbackPace):
        async def remote(self, mode: str, pause: float = 0.0, slow: bool = False) -> float:
            nonlocal started
            started += 1
            while not release.is_set():  # deaf to cancellation, as a hung client can be
                try:
                    await asyncio.sleep(0.01)
                except asyncio.CancelledError:
                    continue
            return 0.0

    clock = FakeClock()
    pace = Stubborn("p", 100.0, False, clock, 1, logging.getLogger("test"))
    pace.timeout = pace.probe_timeout = 0.01
    with anyio.fail_after(5):
        await pace.reserve()  # abandoned: the pace falls back
        for _ in range(5):
            clock.advance(2.0)  # a probe is due each time
            await pace.reserve()
        assert started == 1  # the first call never ended: no second one was started
        assert pace.local is not None
        release.set()  # now it ends, and the next probe rejoins
        while pace._still_stuck():
            await asyncio.sleep(0.01)
        clock.advance(2.0)
        await pace.reserve()
    assert started == 2
    assert pace.local is None
