"""Hostile servers, careless callers: secrets stay secret, odd answers end as outcomes."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import logging
import random
import re
import traceback
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from capillary_async import (
    UNSET,
    APIError,
    AuthenticationError,
    BadRequestError,
    BasicAuth,
    BearerToken,
    CapillaryClient,
    CapillaryError,
    ConnectError,
    ConnectionLostError,
    ExpiryDate,
    ExpiryUpdate,
    MockTransport,
    OAuthCredentials,
    OutcomeStatus,
    OutcomeUnknownError,
    ReadTimeoutError,
    Request,
    Response,
    ResponseTooLargeError,
    RetryPolicy,
    ServerError,
    TokenHeaderStyle,
)
from capillary_async._bulk import BulkOptions, ExpirySpec
from capillary_async._bulk._job import Job

from .conftest import FakeClock

FAR = "2030-01-01"


def item(ref: int, kind: str = "FIXED_DATE") -> ExpiryUpdate:
    value = {"FIXED_DATE": FAR, "FIXED_DAYS": 30}[kind]
    return ExpiryUpdate(
        identifier_name="id",
        identifier_value="1",
        program_id=469,
        points_awarded_ref_id=ref,
        points_awarded_ref_type="POINT_AWARDED",
        expiry_date=ExpiryDate(expiry_type=kind, expiry_value=value),
    )


def success_for(request: Request) -> Response:
    sent = json.loads(request.content or b"{}")["expiryDateUpdateRequest"]
    entries = [
        {"pointsExpiryUpdateLogs": {"paId": i["pointsAwardedRefId"], "paType": "POINT_AWARDED"}}
        for i in sent
    ]
    body = json.dumps({"currencyExpiryUpdateResponse": entries}).encode()
    return Response(status=200, headers={}, content=body)


def client_with(handler: Any, **kwargs: Any) -> CapillaryClient:
    kwargs.setdefault("retry", RetryPolicy(max_attempts=3, jitter=False))
    kwargs.setdefault("clock", FakeClock())
    kwargs.setdefault("auth", BasicAuth("till.user", "s3cret-pw"))
    return CapillaryClient(
        "https://eu.api.capillarytech.com", transport=MockTransport(handler), **kwargs
    )


# -- cancellation ---------------------------------------------------------------------------


async def test_cancelling_a_job_on_an_async_generator_raises_only_the_cancellation() -> None:
    """Cancelled at any await, a job never surfaces BrokenResourceError from its own streams.

    Seeded interleavings of a caller's timeout or early exit with a server and an
    input that sometimes yield to the loop and sometimes do not.
    """
    rng = random.Random(7)

    async def handler(request: Request) -> Response:
        for _ in range(rng.randint(0, 5)):
            await anyio.lowlevel.checkpoint()
        return success_for(request)

    async def source(n: int) -> AsyncIterator[ExpiryUpdate]:
        for ref in range(1, n + 1):
            if rng.random() < 0.3:
                await asyncio.sleep(0)
            yield item(ref)

    surprises: list[str] = []
    async with client_with(handler) as client:
        for _ in range(600):
            chunk_size, concurrency = rng.choice([1, 2, 5, 50]), rng.choice([1, 2, 8])
            leave_after = rng.randint(0, 100)

            async def run(
                chunk_size: int = chunk_size,
                concurrency: int = concurrency,
                leave_after: int = leave_after,
            ) -> None:
                if leave_after % 2:
                    await client.points.bulk_update_expiry(
                        source(300), chunk_size=chunk_size, concurrency=concurrency
                    )
                    return
                async with client.points.stream_update_expiry(
                    source(300), chunk_size=chunk_size, concurrency=concurrency
                ) as outcomes:
                    seen = 0
                    async for _ in outcomes:
                        seen += 1
                        if seen > leave_after:
                            break

            task = asyncio.ensure_future(run())
            for _ in range(rng.randint(0, 60)):
                await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:
                surprises.append(type(exc).__name__)
    assert surprises == []


# -- secrets under malformed HTTP ------------------------------------------------------------

PASSWORD = "s3cret-pw"
OAUTH_SECRET = "oauth-client-secret-42"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.tok-en.signature-value"

MALFORMED: dict[str, bytes] = {
    "bad status line": b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
    "control byte in a header": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
    "garbage instead of HTTP": b"\x00\x01garbage garbage\r\n\r\n",
    "bad chunked encoding": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    ),
    "conflicting Content-Length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}"
    ),
}


def auth_for(kind: str) -> Any:
    if kind == "basic":
        return BasicAuth("till.user", PASSWORD)
    if kind == "oauth":
        return OAuthCredentials("client-key", OAUTH_SECRET)
    return BearerToken(TOKEN, header_style=TokenHeaderStyle.BEARER)


def secret_forms(kind: str) -> list[str]:
    """Every spelling of the credential that must never appear in our text."""
    if kind == "basic":
        digest = hashlib.md5(PASSWORD.encode()).hexdigest()
        header = BasicAuth("till.user", PASSWORD).header_value
        return [PASSWORD, digest, header, header.split(" ", 1)[1], f"till.user:{digest}"]
    if kind == "oauth":
        return [OAUTH_SECRET, TOKEN]
    return [TOKEN]


class RawServer:
    """A loopback server that answers the token endpoint properly and the rest as told."""

    def __init__(self, answer: bytes | None = None) -> None:
        self.answer = answer
        self.seen_headers: list[bytes] = []
        self.server: asyncio.base_events.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            self.seen_headers.append(head)
            if b"/v3/oauth/token/generate" in head.split(b"\r\n", 1)[0]:
                data = {"data": {"accessToken": TOKEN, "ttlSeconds": 300}, "errors": None}
                payload = json.dumps(data).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
            elif self.answer is not None:
                writer.write(self.answer)
            else:  # echo every header value back, as a hostile server might
                echoed = head.decode("latin-1") + body.decode("latin-1")
                payload = json.dumps(
                    {
                        "errors": [{"code": 8941, "message": f"you sent {echoed}"}],
                        "failures": [],
                    }
                ).encode()
                writer.write(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                    + f"X-Cap-Request-Id: {echoed[-60:].strip()!s}\r\n".encode("latin-1")
                    .replace(b"\r", b" ")
                    .replace(b"\n", b" ")
                    + b"\r\n"
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def authorization_in(head: bytes) -> bytes:
    """The Authorization value of a raw request head."""
    return next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"authorization:")
    )


def texts_of(exc: BaseException) -> list[str]:
    """str and repr of an exception and of everything it chains."""
    found: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        found += [str(current), repr(current)]
        pending += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return found


def assert_clean(texts: list[str], kind: str) -> None:
    for text in texts:
        for secret in secret_forms(kind):
            assert secret not in text, f"{kind} credential in: {text[:300]}"


@pytest.mark.parametrize("kind", ["basic", "oauth", "bearer"])
@pytest.mark.parametrize("malformed", [*MALFORMED, "echo"])
async def test_no_credential_in_any_text_after_a_malformed_or_echoing_answer(
    kind: str, malformed: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG, logger="capillary_async")
    answer = None if malformed == "echo" else MALFORMED[malformed]
    texts: list[str] = []
    async with (
        RawServer(answer) as url,
        CapillaryClient(
            url,
            auth=auth_for(kind),
            retry=RetryPolicy(max_attempts=2, jitter=False),
            clock=FakeClock(),
        ) as client,
    ):
        with pytest.raises(CapillaryError) as info:
            await client.points.update_expiry([item(1, "FIXED_DAYS")])
        texts += texts_of(info.value)
        with pytest.raises(CapillaryError) as info:
            await client.points.update_expiry([item(1)])
        texts += texts_of(info.value)
        report = await client.points.bulk_update_expiry(
            [item(1), item(2, "FIXED_DAYS"), item(3)], keep_all=True, fail_fast=True
        )
    assert report.total == 3
    assert report.succeeded == 0
    for outcome in report.outcomes():
        texts.append(str(outcome.error_message))
        texts.append(repr(outcome))
    texts.append(repr(report))
    texts.append(json.dumps(report.summary()))
    report.to_json(tmp_path / "report.json")
    report.to_csv(tmp_path / "report.csv")
    texts.append((tmp_path / "report.json").read_text())
    texts.append((tmp_path / "report.csv").read_text())
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.exc_info) for record in caplog.records if record.exc_info]
    assert caplog.records  # the requests were logged
    assert_clean(texts, kind)


async def test_a_token_that_http_cannot_carry_is_refused_as_an_authentication_error() -> None:
    for bad in ("tok\r\nX-Injected: 1", "tok en", "tök", "t" * 9000):
        body = json.dumps({"data": {"accessToken": bad, "ttlSeconds": 300}}).encode()

        def handler(request: Request, body: bytes = body) -> Response:
            if request.url.endswith("/v3/oauth/token/generate"):
                return Response(status=200, headers={}, content=body)
            return success_for(request)

        async with client_with(handler, auth=OAuthCredentials("key", "secret")) as client:
            with pytest.raises(AuthenticationError) as info:
                await client.points.update_expiry([item(1)])
            assert bad not in str(info.value)
            assert "HTTP header" in str(info.value)
            report = await client.points.bulk_update_expiry([item(n) for n in range(1, 6)])
        assert report.total == 5
        assert report.not_attempted + report.failed == 5
        assert report.stop_reason is not None
        assert "credentials" in report.stop_reason
        assert bad not in report.stop_reason
    with pytest.raises(ValueError, match="visible ASCII"):
        BearerToken("tok\nen")


# -- 2xx answers of unexpected shape ------------------------------------------------------------


def entry(pa_id: Any) -> dict[str, Any]:
    return {"pointsExpiryUpdateLogs": {"paId": pa_id, "paType": "POINT_AWARDED"}}


DEEP = b'{"currencyExpiryUpdateResponse": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
ODD_ANSWERS: dict[str, Any] = {
    "deeply nested JSON": DEEP,
    "warnings: 5 beside item data": {"currencyExpiryUpdateResponse": [entry(1)], "warnings": 5},
    "errors: 7 beside item data": {"currencyExpiryUpdateResponse": [entry(1)], "errors": 7},
    "paId a list": {"currencyExpiryUpdateResponse": [entry([1]), entry(2)]},
    "paId an object": {"currencyExpiryUpdateResponse": [entry({"id": 1}), entry(2)]},
    "a 5,000-digit integer": (
        b'{"currencyExpiryUpdateResponse": [{"pointsExpiryUpdateLogs": {"paId": '
        + b"9" * 5000
        + b', "paType": "POINT_AWARDED"}}, {"pointsExpiryUpdateLogs": {"paId": 2, '
        b'"paType": "POINT_AWARDED"}}]}'
    ),
    "failures an object": {"currencyExpiryUpdateResponse": [], "failures": {"a": 1}},
    "entity a list": {"entity": [1, 2], "currencyExpiryUpdateResponse": [entry(1)]},
    "a JSON string": "just text",
}


def answering(answer: Any, status: int = 200) -> Any:
    content = answer if isinstance(answer, bytes) else json.dumps(answer).encode()

    def handler(request: Request) -> Response:
        return Response(status=status, headers={"x-cap-request-id": "odd"}, content=content)

    return handler


@pytest.mark.parametrize("shape", list(ODD_ANSWERS))
async def test_an_odd_2xx_answer_ends_as_outcomes_and_single_calls_raise_our_errors(
    shape: str,
) -> None:
    async with client_with(answering(ODD_ANSWERS[shape])) as client:
        error: CapillaryError | None = None
        try:
            result = await client.points.update_expiry([item(1), item(2)])
        except CapillaryError as exc:
            error = exc
        else:
            assert result.request_id == "odd"
        assert error is None or len(str(error)) < 2000
        report = await client.points.bulk_update_expiry(
            [item(1), item(2), item(3, "FIXED_DAYS")], keep_all=True
        )
    assert report.total == 3
    assert [o.index for o in report.outcomes()] == [0, 1, 2]
    for outcome in report.outcomes():
        # The server processed the request: nothing may be called "failed" or unsent.
        assert outcome.status in (OutcomeStatus.SUCCEEDED, OutcomeStatus.UNKNOWN), outcome
        assert len(outcome.error_message or "") < 2000
    assert len(json.dumps(report.summary())) < 10_000


async def test_a_paid_sent_back_as_a_string_is_matched_and_anomalies_are_counted_not_copied() -> (
    None
):
    strangers = [entry(10_000 + n) for n in range(150)]
    body = {"currencyExpiryUpdateResponse": [entry("1"), entry(" 2"), *strangers]}
    async with client_with(answering(body)) as client:
        report = await client.points.bulk_update_expiry(
            [item(n) for n in range(1, 101)], chunk_size=100, keep_all=True
        )
    statuses = [o.status for o in report.outcomes()]
    assert statuses[0] is OutcomeStatus.SUCCEEDED  # "1" is item 1
    assert statuses[1] is OutcomeStatus.UNKNOWN  # " 2" names no record
    assert statuses.count(OutcomeStatus.UNKNOWN) == 99
    assert report.anomaly_count == 3  # nameless, strangers, left out: one line each
    assert any("150 records this request did not send" in a for a in report.anomalies)
    many = [
        {"currencyExpiryUpdateResponse": [entry(999)]},
    ]
    async with client_with(answering(many[0])) as client:
        report = await client.points.bulk_update_expiry(
            [item(n) for n in range(1, 201)], chunk_size=1
        )
    assert report.anomaly_count == 400
    assert len(report.anomalies) == 20


# -- nothing applied twice, nothing mislabelled -----------------------------------------------


def scripted(*answers: Response | BaseException) -> Any:
    """Answers in order (the last repeats); a Response of 200 means "apply and say so"."""
    queue = list(answers)
    calls: list[Request] = []

    def handler(request: Request) -> Response:
        calls.append(request)
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, BaseException):
            raise answer
        if answer.status == 200 and not answer.content:
            return success_for(request)
        return answer

    handler.calls = calls  # type: ignore[attr-defined]
    return handler


async def test_a_500_is_ambiguous_for_fixed_days_and_never_retried() -> None:
    handler = scripted(Response(status=500))
    async with client_with(handler) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.points.update_expiry([item(1, "FIXED_DAYS")])
        assert isinstance(info.value.cause, ServerError)
        assert len(handler.calls) == 1
        with pytest.raises(ServerError):
            await client.points.update_expiry([item(1)])
        assert len(handler.calls) == 2
        report = await client.points.bulk_update_expiry(
            [item(1, "FIXED_DAYS"), item(2)], keep_all=True
        )
    assert [o.status for o in report.outcomes()] == [OutcomeStatus.UNKNOWN] * 2
    assert not any(o.settled for o in report.outcomes())


async def test_once_possibly_applied_a_later_refusal_leaves_the_item_unknown() -> None:
    handler = scripted(ReadTimeoutError("slow"), Response(status=503))
    async with client_with(handler) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.points.update_expiry([item(1)])
        assert isinstance(info.value.cause, ServerError)
    handler = scripted(ConnectionLostError("dropped"), Response(status=429))
    async with client_with(handler) as client:
        report = await client.points.bulk_update_expiry([item(1), item(2)], keep_all=True)
    assert [o.status for o in report.outcomes()] == [OutcomeStatus.UNKNOWN] * 2
    # ...while a refusal that was never preceded by an ambiguous attempt is a plain failure.
    handler = scripted(Response(status=503))
    async with client_with(handler) as client:
        report = await client.points.bulk_update_expiry([item(1)], keep_all=True)
    (outcome,) = report.outcomes()
    assert outcome.status is OutcomeStatus.FAILED
    assert not outcome.settled  # no verdict: a rerun may send it again


async def test_retry_after_is_honoured_on_503_in_single_calls_and_bulk() -> None:
    busy = Response(status=503, headers={"retry-after": "7"})
    clock = FakeClock()
    async with client_with(scripted(busy, Response(status=200)), clock=clock) as client:
        await client.points.update_expiry([item(1)])
        assert clock.sleeps == [7.0]
    clock = FakeClock()
    async with client_with(scripted(busy, Response(status=200)), clock=clock) as client:
        report = await client.points.bulk_update_expiry([item(1)])
    assert report.succeeded == 1
    assert 7.0 in clock.sleeps


async def test_settled_marks_only_the_servers_verdicts() -> None:
    refusal = Response(
        status=400, content=json.dumps({"errors": [{"code": 8941, "message": "no"}]}).encode()
    )
    per_item = {
        "currencyExpiryUpdateResponse": [entry(1)],
        "failures": [
            {"pointsAwardedRefId": 2, "pointsAwardedRefType": "POINT_AWARDED", "errorCode": 3037}
        ],
    }
    async with client_with(answering(per_item)) as client:
        report = await client.points.bulk_update_expiry([item(1), item(2), item(3)], keep_all=True)
    assert [(o.status.value, o.settled) for o in report.outcomes()] == [
        ("succeeded", True),
        ("failed", True),
        ("unknown", False),
    ]
    async with client_with(scripted(refusal)) as client:
        report = await client.points.bulk_update_expiry(
            [item(1), {"programId": "x"}], keep_all=True
        )
    assert [(o.status.value, o.settled) for o in report.outcomes()] == [
        ("failed", True),  # a request of this one item, refused
        ("invalid", True),
    ]
    async with client_with(scripted(ConnectError("refused"))) as client:
        report = await client.points.bulk_update_expiry([item(1)], keep_all=True)
    assert [(o.status.value, o.settled) for o in report.outcomes()] == [("failed", False)]


# -- bounded resources ------------------------------------------------------------------------


class BigServer(RawServer):
    """Answers every request with a large body, with or without Content-Length."""

    def __init__(self, size: int, *, declared: bool, status: int = 200) -> None:
        body = b'{"currencyExpiryUpdateResponse": [], "pad": "' + b"x" * size + b'"}'
        head = f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
        if declared:
            head += f"Content-Length: {len(body)}\r\n\r\n"
            answer = head.encode() + body
        else:
            head += "Transfer-Encoding: chunked\r\n\r\n"
            parts = [body[i : i + 65536] for i in range(0, len(body), 65536)]
            answer = head.encode() + b"".join(
                f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts
            )
            answer += b"0\r\n\r\n"
        super().__init__(answer)


@pytest.mark.parametrize("declared", [True, False])
async def test_a_response_over_max_response_bytes_is_not_read(declared: bool) -> None:
    async with (
        BigServer(3 * 1024 * 1024, declared=declared) as url,
        CapillaryClient(
            url,
            auth=BasicAuth("u", "p"),
            max_response_bytes=1024 * 1024,
            retry=RetryPolicy(max_attempts=3, jitter=False),
            clock=FakeClock(),
        ) as client,
    ):
        with pytest.raises(OutcomeUnknownError) as info:
            await client.points.update_expiry([item(1, "FIXED_DAYS")])
        assert isinstance(info.value.cause, ResponseTooLargeError)
        with pytest.raises(ResponseTooLargeError, match="max_response_bytes=1,048,576"):
            await client.points.update_expiry([item(1)])
        report = await client.points.bulk_update_expiry([item(1), item(2)], keep_all=True)
    assert [o.status for o in report.outcomes()] == [OutcomeStatus.UNKNOWN] * 2
    assert report.requests == 1  # not retried: it would only come again
    with pytest.raises(ValueError, match="max_response_bytes"):
        CapillaryClient(
            "https://eu.api.capillarytech.com", auth=BasicAuth("u", "p"), max_response_bytes=0
        )


async def test_huge_error_messages_are_quoted_in_bounded_excerpts() -> None:
    huge = "x" * 2_000_000
    refusal = Response(
        status=400,
        content=json.dumps({"errors": [{"code": 8941, "message": huge}]}).encode(),
    )
    async with client_with(scripted(refusal)) as client:
        with pytest.raises(BadRequestError) as info:
            await client.points.update_expiry([item(1)])
        assert len(str(info.value)) < 2000
        report = await client.points.bulk_update_expiry([item(n) for n in range(1, 9)])
    assert report.failed == 8
    assert all(len(o.error_message or "") < 2000 for o in report.failures())
    per_item = {
        "currencyExpiryUpdateResponse": [],
        "failures": [
            {"pointsAwardedRefId": 1, "pointsAwardedRefType": "POINT_AWARDED", "errorMessage": huge}
        ],
    }
    async with client_with(answering(per_item)) as client:
        report = await client.points.bulk_update_expiry([item(1)])
    assert len(report.failures()[0].error_message or "") < 2000


async def test_a_stream_keeps_no_outcomes_unless_asked() -> None:
    failing = {
        "currencyExpiryUpdateResponse": [],
        "failures": [
            {"pointsAwardedRefId": n, "pointsAwardedRefType": "POINT_AWARDED", "errorCode": 3037}
            for n in range(1, 101)
        ],
    }
    async with client_with(answering(failing)) as client:
        async with client.points.stream_update_expiry([item(n) for n in range(1, 101)]) as outcomes:
            seen = [o async for o in outcomes]
        assert len(seen) == 100
        assert outcomes.report.failed == 100
        assert outcomes.report.failures() == []
        async with client.points.stream_update_expiry(
            [item(n) for n in range(1, 101)], keep_failures=True
        ) as outcomes:
            _ = [o async for o in outcomes]
        assert len(outcomes.report.failures()) == 100
        report = await client.points.bulk_update_expiry([item(n) for n in range(1, 101)])
        assert len(report.failures()) == 100
        report = await client.points.bulk_update_expiry(
            [item(n) for n in range(1, 101)], keep_failures=False
        )
        assert report.failures() == []
        assert report.failed == 100


# -- reports a person opens -------------------------------------------------------------------


async def test_report_csv_cells_cannot_run_as_spreadsheet_formulas(tmp_path: Path) -> None:
    evil = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    per_item = {
        "currencyExpiryUpdateResponse": [],
        "failures": [
            {"pointsAwardedRefId": n, "pointsAwardedRefType": "POINT_AWARDED", "errorMessage": m}
            for n, m in enumerate(evil, 1)
        ],
    }
    async with client_with(answering(per_item)) as client:
        report = await client.points.bulk_update_expiry(
            [item(n) for n in range(1, 7)] + [{"identifierName": "=cmd|' /C calc'!A0"}]
        )
    report.to_csv(tmp_path / "failures.csv")
    with (tmp_path / "failures.csv").open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == [
        "index",
        "line",
        "pointsAwardedRefId",
        "pointsAwardedRefType",
        "status",
        "error_code",
        "error_message",
        "request_id",
    ]
    # Quoted; a tab or carriage return is written as an escape instead.
    assert [r["error_message"] for r in rows[:6]] == ["'" + m for m in evil[:4]] + [
        "\\x09x",
        "\\x0dx",
    ]
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row


async def test_a_failing_token_endpoint_never_makes_an_item_unknown() -> None:
    """Nothing was sent while no token could be had: the items failed, they are not unknown."""
    for answers in (
        [Response(status=502)],
        [ReadTimeoutError("slow"), Response(status=503)],
        [ConnectionLostError("dropped")],
    ):
        token_calls = scripted(*answers)
        sent: list[Request] = []

        def handler(
            request: Request, token_calls: Any = token_calls, sent: list[Request] = sent
        ) -> Response:
            if request.url.endswith("/v3/oauth/token/generate"):
                return token_calls(request)  # type: ignore[no-any-return]
            sent.append(request)
            return success_for(request)

        async with client_with(handler, auth=OAuthCredentials("key", "secret")) as client:
            with pytest.raises(CapillaryError) as info:
                await client.points.update_expiry([item(1, "FIXED_DAYS")])
            assert not isinstance(info.value, OutcomeUnknownError)
            report = await client.points.bulk_update_expiry(
                [item(1, "FIXED_DAYS"), item(2)], keep_all=True
            )
        assert sent == []
        assert [o.status for o in report.outcomes()] == [OutcomeStatus.FAILED] * 2, answers
        assert not any(o.settled for o in report.outcomes())


# -- secrets spelled otherwise -----------------------------------------------------------------


def header_of(request: Request) -> str:
    return dict(request.headers)["Authorization"]


def gson(text: str) -> str:
    """How Gson writes a string: '=' and friends as \\u escapes."""
    return text.replace("=", "\\u003d").replace("+", "\\u002b").replace("/", "\\/")


SPELLINGS: dict[str, Any] = {
    "JSON-escaped padding": lambda r: "bad " + header_of(r),
    "base64 without padding": lambda r: "bad " + header_of(r).split()[1].rstrip("="),
    "base64url": lambda r: "bad " + header_of(r).split()[1].replace("+", "-").replace("/", "_"),
    "upper-case MD5": lambda r: "bad " + hashlib.md5(PASSWORD.encode()).hexdigest().upper(),
    "user:md5": lambda r: f"bad {PADDED_USER}:" + hashlib.md5(PASSWORD.encode()).hexdigest(),
}


#: A user name whose Basic value ends in '=' padding, which JSON writers like to escape.
PADDED_USER = "till.usr"


def core_forms(user: str = "till.user") -> list[str]:
    """Spelling-independent parts of the Basic credential, lower-cased."""
    digest = hashlib.md5(PASSWORD.encode()).hexdigest()
    encoded = BasicAuth(user, PASSWORD).header_value.split()[1]
    return [digest, *(run.lower() for run in re.findall(r"[0-9A-Za-z]{8,}", encoded))]


@pytest.mark.parametrize("spelling", list(SPELLINGS))
async def test_echoed_credentials_are_redacted_however_spelled(
    spelling: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="capillary_async")
    make = SPELLINGS[spelling]

    def handler(request: Request) -> Response:
        message = make(request)
        raw = json.dumps({"errors": [{"code": 401, "message": message}]})
        if spelling == "JSON-escaped padding":
            raw = raw.replace(message, gson(message))
        return Response(status=401, headers={}, content=raw.encode())

    texts: list[str] = []
    auth = BasicAuth(PADDED_USER, PASSWORD)
    assert auth.header_value.endswith("=")
    async with client_with(handler, auth=auth) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.points.update_expiry([item(1)])
        texts += texts_of(info.value)
        report = await client.points.bulk_update_expiry([item(1)], keep_all=True)
    texts += [report.stop_reason or "", *(str(o.error_message) for o in report.outcomes())]
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        for form in core_forms(PADDED_USER):
            assert form not in text.lower(), (spelling, text[:200])


async def test_a_request_id_cannot_smuggle_the_credential_past_the_cut() -> None:
    def handler(request: Request) -> Response:
        return Response(
            status=500,
            headers={"x-cap-request-id": "r" * 72 + header_of(request)},
            content=b'{"errors": [{"code": 500, "message": "boom"}]}',
        )

    async with client_with(handler) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.points.update_expiry([item(1, "FIXED_DAYS")])
    for text in texts_of(info.value):
        for form in core_forms():
            assert form[:20] not in text.lower()


async def test_a_status_line_echoing_the_credential_stays_out_of_the_traceback() -> None:
    class StatusEcho(RawServer):
        async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            auth = authorization_in(head)
            writer.write(b"HTTP/1.1 2x0 " + auth + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

    async with (
        StatusEcho() as url,
        CapillaryClient(url, auth=auth_for("basic"), retry=RetryPolicy.disabled()) as client,
    ):
        with pytest.raises(ConnectionLostError) as info:
            await client.points.update_expiry([item(1)])
    text = "".join(traceback.format_exception(info.value))
    assert "malformed HTTP response" in text
    assert_clean([text, *texts_of(info.value)], "basic")


async def test_a_token_answer_with_errors_never_quotes_the_token() -> None:
    fresh = "eyJhbGciOiJIUzI1NiJ9.fresh-token.signature"
    body = {
        "data": {"accessToken": fresh, "ttlSeconds": 300},
        "errors": [{"code": 9, "message": f"deprecated key; token {fresh} issued"}],
    }

    def handler(request: Request) -> Response:
        return Response(status=200, headers={}, content=json.dumps(body).encode())

    async with client_with(handler, auth=OAuthCredentials("key", "a-long-oauth-secret")) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.points.update_expiry([item(1)])
    assert info.value.body is None
    for text in texts_of(info.value):
        assert "fresh-token" not in text


async def test_absurd_retry_after_and_ttl_values_neither_crash_nor_park() -> None:
    far = Response(status=503, headers={"retry-after": "Mon, 01 Jan 99999999999 00:00:00 GMT"})
    clock = FakeClock()
    async with client_with(scripted(far, Response(status=200)), clock=clock) as client:
        await client.points.update_expiry([item(1)])
        report = await client.points.bulk_update_expiry([item(2)])
    assert report.succeeded == 1
    for value in ("1e309", "inf", "nan", "-1"):
        clock = FakeClock()
        odd = Response(status=503, headers={"retry-after": value})
        async with client_with(scripted(odd, Response(status=200)), clock=clock) as client:
            await client.points.update_expiry([item(1)])
        assert 0.0 <= max(clock.sleeps) <= 120.0
    token = {"data": {"accessToken": "a-token-value", "ttlSeconds": 10**400}}

    def handler(request: Request) -> Response:
        if request.url.endswith("/v3/oauth/token/generate"):
            return Response(status=200, headers={}, content=json.dumps(token).encode())
        return success_for(request)

    clock = FakeClock()
    async with client_with(handler, auth=OAuthCredentials("key", "secret"), clock=clock) as client:
        await client.points.update_expiry([item(1)])
        clock.advance(86_400 + 1)  # a day at most: then it is asked for again
        await client.points.update_expiry([item(1)])


def envelope(status: int, code: int | None = 8015) -> Response:
    errors = [{"code": code, "message": "refused"}] if code is not None else []
    return Response(status=status, content=json.dumps({"errors": errors}).encode())


async def test_a_redirect_or_other_odd_status_leaves_the_outcome_unknown() -> None:
    for status in (303, 101, 999):
        async with client_with(scripted(Response(status=status))) as client:
            with pytest.raises(OutcomeUnknownError):
                await client.points.update_expiry([item(1, "FIXED_DAYS")])
            report = await client.points.bulk_update_expiry(
                [item(1, "FIXED_DAYS"), item(2)], keep_all=True
            )
        assert [o.status for o in report.outcomes()] == [OutcomeStatus.UNKNOWN] * 2, status


async def test_only_capillarys_own_refusal_of_one_item_settles_it() -> None:
    html_400 = Response(status=400, content=b"<html><body>400 Bad Request</body></html>")
    for answer, settled in ((envelope(400), True), (html_400, False)):
        async with client_with(scripted(answer)) as client:
            report = await client.points.bulk_update_expiry([item(1), item(2)], keep_all=True)
        assert [(o.status, o.settled) for o in report.outcomes()] == [
            (OutcomeStatus.FAILED, settled)
        ] * 2


async def test_a_refusal_after_a_possibly_applied_attempt_is_unknown() -> None:
    refusal = {
        "currencyExpiryUpdateResponse": [],
        "failures": [
            {"pointsAwardedRefId": 1, "pointsAwardedRefType": "POINT_AWARDED", "errorCode": 3037}
        ],
    }
    answer = Response(status=200, content=json.dumps(refusal).encode())
    async with client_with(scripted(ReadTimeoutError("slow"), answer)) as client:
        report = await client.points.bulk_update_expiry([item(1)], keep_all=True)
    (outcome,) = report.outcomes()
    assert (outcome.status, outcome.settled, outcome.error_code) == (
        OutcomeStatus.UNKNOWN,
        False,
        3037,
    )
    # The same refusal for a single item after a 502, and split halves of a refused chunk,
    # keep that memory too.
    async with client_with(scripted(Response(status=502), envelope(400))) as client:
        report = await client.points.bulk_update_expiry([item(1)], keep_all=True)
    assert [o.status for o in report.outcomes()] == [OutcomeStatus.UNKNOWN]
    answers = scripted(Response(status=502), envelope(400), envelope(401, None))
    async with client_with(answers) as client:
        report = await client.points.bulk_update_expiry(
            [item(n) for n in range(1, 5)], chunk_size=4, concurrency=1, keep_all=True
        )
    # Halves [1, 2] got the 401 that stopped the job; [3, 4] never went as a half, but
    # they were sent, and may have been applied, as part of the whole chunk.
    assert [o.status for o in report.outcomes()] == [OutcomeStatus.UNKNOWN] * 4
    answers = scripted(envelope(400), envelope(401, None))
    async with client_with(answers) as client:
        report = await client.points.bulk_update_expiry(
            [item(n) for n in range(1, 5)], chunk_size=4, concurrency=1, keep_all=True
        )
    assert [(o.status, o.settled) for o in report.outcomes()] == [(OutcomeStatus.FAILED, False)] * 4


async def test_an_answer_of_countless_tiny_values_is_not_parsed_into_memory() -> None:
    """Parsed, 3 MB of ``{},`` would be a million dicts; it is refused as unreadable instead."""
    body = b'{"currencyExpiryUpdateResponse": [' + b"{}," * 1_000_000 + b"{}]}"
    async with client_with(answering(body)) as client:
        tracemalloc.start()
        try:
            with pytest.raises(APIError):
                await client.points.update_expiry([item(1)])
            report = await client.points.bulk_update_expiry([item(1), item(2)], keep_all=True)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert [o.status for o in report.outcomes()] == [OutcomeStatus.UNKNOWN] * 2
    assert peak < 10 * len(body)


async def test_entries_beyond_what_a_chunk_could_need_are_counted_not_read() -> None:
    body = {
        "currencyExpiryUpdateResponse": [entry(1), entry(2)]
        + [{"pointsExpiryUpdateLogs": {"paId": n}} for n in range(1000, 40_000)]
    }
    async with client_with(answering(body)) as client:
        report = await client.points.bulk_update_expiry([item(1), item(2)], keep_all=True)
    assert report.succeeded == 2
    assert any("more entries than it could need" in a for a in report.anomalies)


def test_a_base_url_with_credentials_is_refused_without_quoting_them() -> None:
    for url in ("https://till:hunter2-password@eu.api.capillarytech.com", "https://x:99999"):
        with pytest.raises(ValueError, match="base_url") as info:
            CapillaryClient(url, auth=BasicAuth("u", "p"))
        assert "hunter2" not in str(info.value)


async def test_a_stop_while_a_chunk_is_being_recorded_keeps_it_home() -> None:
    """A Ctrl-C that lands while the journal records a chunk: that chunk does not go out."""
    sent: list[Request] = []

    def handler(request: Request) -> Response:
        sent.append(request)
        return success_for(request)

    recorded: list[int] = []

    class Hooks:
        async def before(self, index: int, raw: Any) -> None:
            return None

        async def on_send(self, items: list[Any]) -> None:
            recorded.append(len(items))
            if len(recorded) == 2:
                job.stop("interrupted", drain=False)
            await anyio.lowlevel.checkpoint()

        async def on_final(self, outcomes: Any) -> None:
            return None

    async with client_with(handler) as client:
        job: Job[Any, Any] = Job(
            ExpirySpec(client, UNSET),
            [item(n) for n in range(1, 5)],
            BulkOptions(chunk_size=2, concurrency=1),
            clock=client.clock,
            retry=client.retry,
            keep_failures=True,
            hooks=Hooks(),
        )
        send, receive = anyio.create_memory_object_stream[Any](10)
        async with receive, anyio.create_task_group() as tg:
            tg.start_soon(job.run, send)
            outcomes = [o async for batch in receive for o in batch]
    assert len(sent) == 1
    assert [o.status for o in outcomes] == [OutcomeStatus.SUCCEEDED] * 2 + [
        OutcomeStatus.NOT_ATTEMPTED
    ] * 2


async def test_a_secret_echoed_in_pieces_leaves_no_piece_in_the_traceback() -> None:
    """aiohttp quotes what one read gave it: a piece of a secret no redaction can know."""

    class SplitEcho(RawServer):
        async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            auth = authorization_in(head).split(b" ", 1)[1]  # without "Basic"
            writer.write(b"HTTP/1.1 200 OK\r\n" + auth[:12])
            await writer.drain()
            await asyncio.sleep(0.05)  # a second read for the parser
            writer.write(auth[12:] + b"\x01: x\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

    async with (
        SplitEcho() as url,
        CapillaryClient(url, auth=auth_for("basic"), retry=RetryPolicy.disabled()) as client,
    ):
        with pytest.raises(ConnectionLostError) as info:
            await client.points.update_expiry([item(1)])
    text = "".join(traceback.format_exception(info.value))
    tail = BasicAuth("till.user", PASSWORD).header_value.split()[1][12:]
    assert tail[:16] not in text
    assert_clean([text], "basic")


async def test_redaction_leaves_ordinary_answers_alone() -> None:
    """Human-chosen secrets share words with the wire format; answers must stay intact."""
    for secret in ("Customer-Loyalty!", "Currency#2024", "ExpiryUpdateReason"):
        body = {
            "currencyExpiryUpdateResponse": [
                {"customerId": 7, "currencyName": "points", **entry(1)},
            ]
        }

        def handler(request: Request, body: Any = body) -> Response:
            if request.url.endswith("/v3/oauth/token/generate"):
                token = {"data": {"accessToken": "a-token-value-1234", "ttlSeconds": 300}}
                return Response(status=200, content=json.dumps(token).encode())
            return Response(status=200, content=json.dumps(body).encode())

        async with client_with(handler, auth=OAuthCredentials("key", secret)) as client:
            report = await client.points.bulk_update_expiry([item(1)], keep_all=True)
        (outcome,) = report.outcomes()
        assert outcome.ok, (secret, outcome)
        assert outcome.update.customer_id == 7


async def test_a_live_token_stays_secret_however_many_others_come_and_go() -> None:
    tokens = iter(f"tenant-b-token-{n:04d}-abcdefghijklmnop" for n in range(1000))
    live = "tenant-a-token-7f3c9a1b2d4e5f60718293a4b5c6d7e8"

    def handler(request: Request) -> Response:
        if request.url.endswith("/v3/oauth/token/generate"):
            key = json.loads(request.content or b"{}")["key"]
            token = live if key == "a" else next(tokens)
            return Response(
                status=200,
                content=json.dumps({"data": {"accessToken": token, "ttlSeconds": 1}}).encode(),
            )
        message = f"bad request for token {live}"
        return Response(
            status=400, content=json.dumps({"errors": [{"code": 1, "message": message}]}).encode()
        )

    clock = FakeClock()
    async with client_with(handler, auth=OAuthCredentials("a", "secret-a-1"), clock=clock) as a:
        with pytest.raises(BadRequestError):
            await a.points.update_expiry([item(1)])
        async with client_with(handler, auth=OAuthCredentials("b", "secret-b-1"), clock=clock) as b:
            for _ in range(300):  # each renews B's token: more than the recent ones kept
                clock.advance(2)
                with pytest.raises(BadRequestError):
                    await b.points.update_expiry([item(1)])
        with pytest.raises(BadRequestError) as info:
            await a.points.update_redemption(
                {
                    "entity": {"type": "CUSTOMER", "identifierType": "id", "identifierValue": "1"},
                    "redemptionId": "r1",
                    "purpose": "p",
                }
            )
    assert live not in str(info.value)


async def test_a_500_that_lists_items_settles_none_of_them() -> None:
    body = {
        "currencyExpiryUpdateResponse": [],
        "failures": [
            {"pointsAwardedRefId": n, "pointsAwardedRefType": "POINT_AWARDED", "errorCode": 8015}
            for n in (1, 2)
        ],
    }
    async with client_with(answering(body, status=500)) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.points.update_expiry([item(1, "FIXED_DAYS")])
        report = await client.points.bulk_update_expiry(
            [item(1, "FIXED_DAYS"), item(2)], keep_all=True
        )
    assert [(o.status, o.settled) for o in report.outcomes()] == [
        (OutcomeStatus.UNKNOWN, False)
    ] * 2


async def test_a_consumer_can_stop_a_stream_gracefully() -> None:
    async def endless() -> AsyncIterator[ExpiryUpdate]:
        ref = 0
        while True:  # a queue-fed worker: the input never ends by itself
            ref += 1
            yield item(ref)

    sent: list[Request] = []

    def handler(request: Request) -> Response:
        sent.append(request)
        return success_for(request)

    async with client_with(handler) as client:
        async with client.points.stream_update_expiry(
            endless(), chunk_size=10, concurrency=2
        ) as outcomes:
            seen = []
            async for outcome in outcomes:
                seen.append(outcome)
                if len(seen) == 30:
                    requests_at_stop = len(sent)
                    outcomes.stop("shutting down")
        report = outcomes.report
    assert report.stop_reason == "shutting down"
    assert report.total == len(seen)  # every item read has its one outcome
    assert sorted(o.index for o in seen) == list(range(len(seen)))
    assert len(sent) <= requests_at_stop + 2  # only what was in flight
    assert {o.status for o in seen[30:]} <= {OutcomeStatus.SUCCEEDED, OutcomeStatus.NOT_ATTEMPTED}


@pytest.mark.parametrize("spelled", ["md5", "header"])  # the password itself never leaves
async def test_a_credential_echoed_in_json_escapes_is_redacted_in_the_decoded_body(
    spelled: str,
) -> None:
    """``\\u0053...`` hides a secret from a byte search; the decoded body is searched too."""
    password = "Sup3r-S3cret-pw!"
    auth = BasicAuth("till.user", password)
    secret = {"md5": hashlib.md5(password.encode()).hexdigest(), "header": ""}[spelled]

    headers: list[str] = []

    def handler(request: Request) -> Response:
        headers.append(request.headers["Authorization"])
        echoed = secret or headers[-1]
        escaped = "".join(f"\\u{ord(ch):04x}" for ch in echoed)
        body = '{"errors": [{"code": 8015, "message": "you sent ' + escaped + '"}]}'
        return Response(status=400, headers={}, content=body.encode())

    async with client_with(handler, auth=auth) as client:
        with pytest.raises(BadRequestError) as info:
            await client.points.update_expiry([item(1)])
    echoed = secret or headers[0]
    seen = json.dumps(info.value.body) + str(info.value) + repr(info.value.__dict__)
    assert echoed.lower() not in seen.lower()
    assert "<redacted>" in json.dumps(info.value.body)
