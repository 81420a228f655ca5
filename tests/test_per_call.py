"""Per-call options: headers on every typed call, and ``with_options`` sharing one pool."""

from __future__ import annotations

import gc
from typing import Any

import aiohttp
import pytest

from capillary_async import (
    BulkOptions,
    CapillaryClient,
    MockTransport,
    OAuthCredentials,
    Request,
    Response,
    RetryPolicy,
)
from capillary_async.testing import Emulator, sample_expiry_updates

from .test_hostile import client_with, item, success_for

TENANT = "X-CAP-API-ATTRIBUTION-ENTITY-CODE"


def recording(seen: list[Request]) -> Any:
    def handler(request: Request) -> Response:
        seen.append(request)
        if request.url.endswith("updateRedemption"):
            return Response(status=200, headers={}, content=b'{"id": 1}')
        return success_for(request)

    return handler


async def test_typed_calls_take_headers_merged_over_the_clients() -> None:
    seen: list[Request] = []
    headers = {TENANT: "client-wide", "X-Other": "kept"}
    async with client_with(recording(seen), headers=headers) as client:
        await client.points.update_expiry([item(1)], headers={TENANT: "store-7"})
        await client.points.update_redemption(
            {
                "redemptionId": "NZVAt9",
                "billNumber": "b-1",
                "entity": {"type": "CUSTOMER", "identifierType": "mobile", "identifierValue": "9"},
            },
            headers={TENANT: "store-8"},
        )
        await client.points.bulk_update_expiry(
            [item(n) for n in range(1, 5)], chunk_size=2, headers={TENANT: "store-9"}
        )
        nightly = BulkOptions(chunk_size=2, headers={TENANT: "store-10"})
        async with client.points.stream_update_expiry(
            [item(n) for n in range(5, 7)], options=nightly
        ) as outcomes:
            assert all([o.ok async for o in outcomes])
        await client.points.update_expiry([item(9)])  # the client's own again
    tenants = [request.headers[TENANT] for request in seen]
    assert tenants == ["store-7", "store-8", "store-9", "store-9", "store-10", "client-wide"]
    assert all(request.headers["X-Other"] == "kept" for request in seen)


def test_headers_http_cannot_carry_are_refused_naming_the_option() -> None:
    with pytest.raises(ValueError, match="headers: the value of X-A holds control characters"):
        BulkOptions(headers={"X-A": "one\r\nInjected: yes"})
    with pytest.raises(TypeError, match="headers: expected a mapping"):
        BulkOptions(headers=[("X-A", "1")])  # type: ignore[arg-type]


async def test_a_bad_per_call_header_is_refused_before_sending() -> None:
    seen: list[Request] = []
    async with client_with(recording(seen)) as client:
        with pytest.raises(ValueError, match="headers: the value of X-A"):
            await client.points.update_expiry([item(1)], headers={"X-A": "a\nb"})
    assert seen == []


async def test_with_options_shares_the_pool_the_tokens_and_the_limiter() -> None:
    async with Emulator(seed=5) as emu:
        rows = list(sample_expiry_updates(emu.store, 40, now=emu.clock.now()))
        client = CapillaryClient(emu.base_url, auth=OAuthCredentials("demo", "demo"))
        async with client:
            await client.points.update_expiry(rows[:1])
            for n in range(1, 40):  # one per web request, as a handler would make it
                per_request = client.with_options(
                    headers={TENANT: f"store-{n}"}, timeout=5, retry=RetryPolicy.disabled()
                )
                assert per_request.transport is client.transport
                assert per_request.limiter is client.limiter
                assert per_request.timeout.total == 5
                async with per_request:  # nothing to close: it owns nothing
                    await per_request.points.update_expiry(rows[n : n + 1])
            assert not client.closed
            gc.collect()
            sessions = [o for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession)]
            open_sessions = [s for s in sessions if not s.closed]
            assert open_sessions == [client.transport.session]  # type: ignore[attr-defined]
        assert client.closed
        assert per_request.closed
        assert emu.stats.by_path["/v3/oauth/token/generate"] == 1  # one token for them all
        assert emu.stats.by_path["/v2/points/updateExpiry"] == 40


def test_with_options_checks_what_it_is_given() -> None:
    client = CapillaryClient(
        "https://eu.api.capillarytech.com",
        auth=OAuthCredentials("k", "s"),
        transport=MockTransport(success_for),
    )
    with pytest.raises(ValueError, match="max_response_bytes"):
        client.with_options(max_response_bytes=0)
    with pytest.raises(TypeError, match="retry: expected a RetryPolicy"):
        client.with_options(retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="headers"):
        client.with_options(headers={"X-A": "\x00"})
    derived = client.with_options(max_response_bytes=1024, headers={"X-A": "1"})
    assert derived.max_response_bytes == 1024
    assert client.max_response_bytes != 1024
    assert "X-A" not in client._headers  # the original is untouched


async def test_per_call_headers_reach_a_real_server() -> None:
    import aiohttp.web

    from capillary_async import BasicAuth

    from .loopback import serving

    seen: list[str] = []

    async def answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(request.headers.get(TENANT, ""))
        return aiohttp.web.json_response({"currencyExpiryUpdateResponse": [], "failures": []})

    async with serving(answer) as url:
        client = CapillaryClient(url, auth=BasicAuth("demo", "demo"), headers={TENANT: "app"})
        async with client:
            await client.points.update_expiry([item(1)], headers={TENANT: "store-1"})
            await client.with_options(headers={TENANT: "store-2"}).points.update_expiry([item(2)])
            await client.points.update_expiry([item(3)])
    assert seen == ["store-1", "store-2", "app"]
