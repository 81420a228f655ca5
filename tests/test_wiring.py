"""The aiohttp wiring: what goes on the wire, the pooled session, and real socket failures.

aioresponses checks the requests aiohttp is asked to make; a real server on
127.0.0.1 checks what only real sockets show (refused connections, timeouts,
cookies).
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from capillary_async import (
    AiohttpTransport,
    BasicAuth,
    CapillaryClient,
    Cluster,
    ConnectError,
    ConnectionLostError,
    ExpiryUpdateResult,
    ReadTimeoutError,
    Redemption,
    RetryPolicy,
    Timeouts,
)

from .conftest import (
    EXPIRY_ITEM,
    EXPIRY_SUCCESS,
    REDEMPTION_REQUEST,
    REDEMPTION_RESPONSE,
    mock_aiohttp,
)

EU = "https://eu.api.capillarytech.com"
NO_RETRY = RetryPolicy.disabled()


def eu_client(**kwargs: Any) -> CapillaryClient:
    kwargs.setdefault("retry", NO_RETRY)
    return CapillaryClient(Cluster.EU, auth=BasicAuth("store.server", "server123"), **kwargs)


async def test_update_redemption_over_aiohttp() -> None:
    with mock_aiohttp() as mocked:
        mocked.put(
            f"{EU}/v2/points/updateRedemption",
            payload=REDEMPTION_RESPONSE,
            headers={"X-CAP-REQUEST-ID": "r-1"},
        )
        async with eu_client() as client:
            result = await client.points.update_redemption(REDEMPTION_REQUEST)
        ((key, calls),) = mocked.requests.items()
    assert key[0] == "PUT"
    assert str(key[1]) == f"{EU}/v2/points/updateRedemption"
    kwargs = calls[0].kwargs
    assert json.loads(kwargs["data"]) == REDEMPTION_REQUEST
    assert kwargs["headers"]["Authorization"] == (
        "Basic c3RvcmUuc2VydmVyOjhhMTZhNmI3MDUwNWViMWYxZmY3Y2RjMGNkNTU1OWE3"
    )
    assert kwargs["headers"]["Content-Type"] == "application/json"
    assert kwargs["allow_redirects"] is False
    assert isinstance(kwargs["timeout"], aiohttp.ClientTimeout)
    assert isinstance(result, Redemption)
    assert result.request_id == "r-1"


async def test_update_expiry_over_aiohttp_with_partial_failure() -> None:
    body = {
        "currencyExpiryUpdateResponse": EXPIRY_SUCCESS["currencyExpiryUpdateResponse"],
        "failures": [
            {
                "pointsAwardedRefId": 1175219,
                "pointsAwardedRefType": "POINT_AWARDED",
                "errorCode": 3034,
                "errorMessage": "No points awarded found",
            }
        ],
    }
    second = {**EXPIRY_ITEM, "pointsAwardedRefId": 1175219}
    with mock_aiohttp() as mocked:
        mocked.post(f"{EU}/v2/points/updateExpiry", status=201, payload=body)
        async with eu_client() as client:
            result = await client.points.update_expiry([EXPIRY_ITEM, second])
        ((_, calls),) = mocked.requests.items()
    assert json.loads(calls[0].kwargs["data"]) == {"expiryDateUpdateRequest": [EXPIRY_ITEM, second]}
    assert isinstance(result, ExpiryUpdateResult)
    assert [f.error_code for f in result.failures] == [3034]


async def test_aiohttp_timeout_becomes_read_timeout() -> None:
    with mock_aiohttp() as mocked:
        mocked.put(f"{EU}/v2/points/updateRedemption", exception=asyncio.TimeoutError())
        async with eu_client() as client:
            with pytest.raises(ReadTimeoutError):
                await client.points.update_redemption(REDEMPTION_REQUEST)


async def test_aiohttp_disconnect_becomes_connection_lost() -> None:
    with mock_aiohttp() as mocked:
        mocked.put(
            f"{EU}/v2/points/updateRedemption",
            exception=aiohttp.ServerDisconnectedError(),
        )
        async with eu_client() as client:
            with pytest.raises(ConnectionLostError) as info:
                await client.points.update_redemption(REDEMPTION_REQUEST)
    assert info.value.sent


async def test_session_is_lazy_pooled_cookieless_and_closed() -> None:
    client = eu_client(max_connections=7)
    transport = client.transport
    assert isinstance(transport, AiohttpTransport)
    assert transport.session is None  # nothing made outside a request
    with mock_aiohttp() as mocked:
        mocked.put(f"{EU}/v2/points/updateRedemption", payload=REDEMPTION_RESPONSE)
        async with client:
            await client.points.update_redemption(REDEMPTION_REQUEST)
            session = transport.session
            assert session is not None
            assert isinstance(session.cookie_jar, aiohttp.DummyCookieJar)
            assert isinstance(session.connector, aiohttp.TCPConnector)
            assert session.connector.limit == 7
    assert session.closed


async def test_a_callers_session_lends_its_pool_and_is_left_open() -> None:
    async with aiohttp.ClientSession() as session:
        with mock_aiohttp() as mocked:
            mocked.put(f"{EU}/v2/points/updateRedemption", payload=REDEMPTION_RESPONSE)
            async with eu_client(session=session) as client:
                await client.points.update_redemption(REDEMPTION_REQUEST)
                ours = client.transport.session  # type: ignore[attr-defined]
                assert ours.connector is session.connector  # its pool, lent
        assert not session.closed
        assert not session.connector.closed  # type: ignore[union-attr]


async def test_a_client_never_closed_warns() -> None:
    client = eu_client()
    with mock_aiohttp() as mocked:
        mocked.put(f"{EU}/v2/points/updateRedemption", payload=REDEMPTION_RESPONSE)
        await client.points.update_redemption(REDEMPTION_REQUEST)
    session = client.transport.session  # type: ignore[attr-defined]
    assert session is not None
    del client
    with pytest.warns(ResourceWarning, match="CapillaryClient was not closed"):
        gc.collect()
    await session.close()


# -- a real server on loopback ------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_refused_connection_is_a_connect_error_and_retried(clock: Any) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    client = CapillaryClient(
        url,
        auth=BasicAuth("u", "p"),
        retry=RetryPolicy(max_attempts=3, jitter=False),
        clock=clock,
    )
    async with client:
        with pytest.raises(ConnectError) as info:
            await client.points.update_expiry([{**EXPIRY_ITEM}])
    assert not info.value.sent
    assert clock.sleeps == [0.5, 1.0]


async def test_slow_server_is_a_read_timeout(serve: Any) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    base = await serve(slow)
    async with CapillaryClient(
        base, auth=BasicAuth("u", "p"), retry=NO_RETRY, timeout=Timeouts(connect=5, total=0.05)
    ) as client:
        with pytest.raises(ReadTimeoutError):
            await client.request("GET", "/slow")
    release.set()


async def test_cookies_are_never_sent(serve: Any) -> None:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.json_response(REDEMPTION_RESPONSE)
        response.set_cookie("CT", "session-token")
        return response

    base = await serve(handler)
    async with CapillaryClient(base, auth=BasicAuth("u", "p")) as client:
        await client.points.update_redemption(REDEMPTION_REQUEST)
        await client.points.update_redemption(REDEMPTION_REQUEST)
    assert seen == [None, None]


async def test_real_round_trip_reads_status_headers_and_body(serve: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        assert request.method == "POST"
        assert request.headers["Authorization"].startswith("Basic ")
        body = await request.json()
        assert body == {"expiryDateUpdateRequest": [EXPIRY_ITEM]}
        return web.json_response(EXPIRY_SUCCESS, status=200, headers={"X-Cap-Requestid": "rq-9"})

    base = await serve(handler)
    async with CapillaryClient(base, auth=BasicAuth("u", "p")) as client:
        result = await client.points.update_expiry([EXPIRY_ITEM])
    assert result.request_id == "rq-9"
    assert result.updates[0].customer_id == 172440986
