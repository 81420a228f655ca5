"""``deadline``: one bound for a whole single call, retries, backoff and pace waits included.

Real time, in tenths of a second: the deadline is what a web handler waits.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from capillary_async import (
    BasicAuth,
    CapillaryClient,
    DeadlineExceededError,
    MockTransport,
    OutcomeUnknownError,
    Request,
    Response,
    RetryPolicy,
)

from .test_hostile import item, success_for

FAST_RETRIES = RetryPolicy(max_attempts=50, backoff_base=0.02, backoff_cap=0.02, jitter=False)


def client(handler: Any, **kwargs: Any) -> CapillaryClient:
    kwargs.setdefault("retry", FAST_RETRIES)
    return CapillaryClient(
        "https://eu.api.capillarytech.com",
        auth=BasicAuth("till.user", "s3cret-pw"),
        transport=MockTransport(handler),
        **kwargs,
    )


def unavailable(request: Request) -> Response:
    return Response(status=503, headers={}, content=b'{"errors": [{"code": 4001}]}')


async def hang(request: Request) -> Response:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def test_the_deadline_bounds_retries_and_backoff() -> None:
    started = time.monotonic()
    async with client(unavailable, deadline=0.3) as capillary:
        with pytest.raises(DeadlineExceededError) as info:
            await capillary.points.update_expiry([item(1)])
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 1.5  # not 50 attempts and their backoff
    assert info.value.attempts >= 2
    assert not info.value.sent  # every attempt was refused: nothing applied
    assert "deadline of 0.3 s ran out after" in str(info.value)
    # ``timeout`` alone bounds each attempt only; the call is not cut.
    three = RetryPolicy(max_attempts=3, backoff_base=0.01, jitter=False)
    async with client(unavailable, retry=three) as capillary:
        with pytest.raises(Exception, match="service unavailable"):
            await capillary.points.update_expiry([item(1)], timeout=0.01)


async def test_a_non_idempotent_call_cut_in_flight_is_unknown() -> None:
    async with client(hang) as capillary:
        with pytest.raises(OutcomeUnknownError) as info:
            await capillary.points.update_expiry([item(1, "FIXED_DAYS")], deadline=0.1)
    cause = info.value.cause
    assert isinstance(cause, DeadlineExceededError)
    assert (cause.attempts, cause.sent) == (1, True)
    assert "the last one was sent and no answer came" in str(info.value)
    async with client(hang) as capillary:  # FIXED_DATE is safe to repeat: a plain timeout
        with pytest.raises(DeadlineExceededError) as late:
            await capillary.points.update_expiry([item(1)], deadline=0.1)
    assert late.value.sent


async def test_pace_waits_count_against_the_deadline() -> None:
    async with client(success_for, rate_limit=1.0) as capillary:
        await capillary.points.update_expiry([item(1)])  # takes the one slot of this second
        with pytest.raises(DeadlineExceededError) as info:
            await capillary.points.update_expiry([item(2)], deadline=0.1)
    assert info.value.attempts == 0
    assert not info.value.sent
    assert "waiting for the pace" in str(info.value)


async def test_the_deadline_comes_from_the_client_with_options_or_the_call() -> None:
    async with client(unavailable, deadline=0.1) as capillary:
        derived = capillary.with_options(
            deadline=None, retry=RetryPolicy(max_attempts=2, backoff_base=0.01, jitter=False)
        )
        with pytest.raises(Exception, match="service unavailable"):  # no deadline: retries end
            await derived.points.update_expiry([item(1)])
        with pytest.raises(DeadlineExceededError):
            await derived.with_options(retry=FAST_RETRIES).request("GET", "/v2/x", deadline=0.1)
    async with client(hang, deadline=0.1) as capillary:
        with pytest.raises(DeadlineExceededError):
            await capillary.check()  # the client's deadline bounds the probe too
    for bad in (0, -1, float("inf"), float("nan"), True, "5"):
        with pytest.raises(ValueError, match="deadline: must be a positive number"):
            client(unavailable, deadline=bad)
