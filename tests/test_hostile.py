"""Hostile servers, careless callers: secrets stay secret, odd answers end as outcomes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from capillary_async import (
    AuthenticationError,
    BasicAuth,
    BearerToken,
    CapillaryClient,
    CapillaryError,
    ExpiryDate,
    ExpiryUpdate,
    MockTransport,
    OAuthCredentials,
    Request,
    Response,
    RetryPolicy,
    TokenHeaderStyle,
)

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
