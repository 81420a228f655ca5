from __future__ import annotations

import contextlib
import inspect
import json
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import aiohttp
import anyio
import pytest
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core

from capillary_async import (
    BasicAuth,
    CapillaryClient,
    MockTransport,
    Request,
    Response,
    RetryPolicy,
)


@contextlib.contextmanager
def open_db(path: Any) -> Iterator[sqlite3.Connection]:
    """A connection that commits and is closed (``sqlite3.connect`` as a context only commits)."""
    db = sqlite3.connect(path)
    try:
        with db:
            yield db
    finally:
        db.close()


class FakeClock:
    """A clock whose sleeps return at once and move time forward."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()

    def advance(self, seconds: float) -> None:
        self.now += seconds


def reply(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> Response:
    content = b"" if body is None else json.dumps(body).encode()
    return Response(
        status=status,
        headers={k.lower(): v for k, v in (headers or {}).items()},
        content=content,
    )


Answer = Response | BaseException | Callable[[Request], Response]


class Script:
    """A mock server: answers in order (the last one repeats) and records requests."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]

    def paths(self) -> list[str]:
        return [r.url.split("://", 1)[1].split("/", 1)[1] for r in self.requests]


BASE = "https://eu.api.capillarytech.com"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(clock: FakeClock) -> Callable[..., CapillaryClient]:
    """A client on a scripted transport, with deterministic backoff and the fake clock."""

    def make(script: Script, **kwargs: Any) -> CapillaryClient:
        kwargs.setdefault("auth", BasicAuth("till.user", "password"))
        kwargs.setdefault("retry", RetryPolicy(jitter=False))
        kwargs.setdefault("clock", clock)
        return CapillaryClient(BASE, transport=MockTransport(script), **kwargs)

    return make


EXPIRY_ITEM: dict[str, Any] = {
    "identifierName": "id",
    "identifierValue": "172440986",
    "programId": 469,
    "pointsAwardedRefId": 117521910,
    "pointsAwardedRefType": "POINT_AWARDED",
    "expiryUpdateReasonType": "EARLY_EXPIRY",
    "expiryUpdateReasonNote": "Customer made a purchase above $100",
    "standardMeta": {
        "who_raised": "Naman",
        "who_approved": "Admin",
        "reason_for_trigger": "Extend points expiry",
    },
    "customMeta": {"abc": "xyz"},
    "expiryDate": {"expiryType": "FIXED_DATE", "expiryValue": "2025-08-09"},
}

EXPIRY_SUCCESS: dict[str, Any] = {
    "currencyExpiryUpdateResponse": [
        {
            "customerId": 172440986,
            "programId": 469,
            "currencyName": "POINTS",
            "pointsExpiryUpdateLogs": {
                "paType": "POINT_AWARDED",
                "paId": 117521910,
                "expiryUpdateReasonType": "EARLY_EXPIRY",
                "expiryUpdateReasonNote": "xyz",
                "oldExpiryDate": "2026-08-09 23:59:59",
                "oldExpiryDateISO": "2026-08-09T23:59:59Z",
                "newExpiryDate": "2026-08-09 23:59:59",
                "newExpiryDateISO": "2026-08-09T23:59:59Z",
                "eventLogId": 41420339,
                "eventDate": "2026-01-07 10:35:28",
                "eventDateISO": "2026-01-07T10:35:28Z",
                "standardMeta": {
                    "reason_for_trigger": "test",
                    "who_approved": "Admin",
                    "who_raised": "Naman",
                },
                "customMeta": {"abc": "xyz"},
            },
        }
    ]
}

REDEMPTION_REQUEST: dict[str, Any] = {
    "redemptionId": "Fnpztw",
    "billNumber": "txn-79",
    "purpose": "Update redemption details",
    "entity": {"type": "CUSTOMER", "identifierType": "mobile", "identifierValue": "919731013853"},
    "customFields": {"card_number": "123456"},
}

REDEMPTION_RESPONSE: dict[str, Any] = {
    "id": 26503632,
    "programId": 973,
    "pointsRedeemed": 101.0,
    "billId": -1,
    "billNumber": "txn-79",
    "validationCode": "NS3U05",
    "notes": "Redeemed to transfer points to the friend",
    "redemptionTime": 1750951708000,
    "pointsRedemptionTime": 1750931908000,
    "tillId": 75152721,
    "tillName": "",
    "pointDeductionList": [],
    "redemptionId": "Fnpztw",
    "customFields": [{"name": "card_number", "value": "123456"}],
    "customerId": 564332013,
    "redemptionPurpose": "testUpdate",
    "redemptionDate": "2025-06-26T15:28:28Z",
    "warnings": [],
}


class _NullStreamWriter:
    output_size = 0


class _CompatClientResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.x predates aiohttp 3.14's required ``stream_writer`` argument.

    (pnuckowski/aioresponses#289; aiohttp 3.14 is a security release, so the
    fix belongs here rather than in a pin.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if _NEEDS_STREAM_WRITER:
            kwargs.setdefault("stream_writer", _NullStreamWriter())
        super().__init__(*args, **kwargs)


_NEEDS_STREAM_WRITER = (
    "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters
)


@contextlib.contextmanager
def mock_aiohttp() -> Iterator[aioresponses]:
    """aioresponses, made to work with every supported aiohttp."""
    with (
        mock.patch.object(aioresponses_core, "ClientResponse", _CompatClientResponse),
        aioresponses() as mocked,
    ):
        yield mocked
