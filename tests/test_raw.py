"""Raw responses: the same call, the answer itself (status, headers, request id, timing)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from capillary_async import (
    APIError,
    BadRequestError,
    BasicAuth,
    CapillaryClient,
    ExpiryUpdateResult,
    RawResponse,
    Redemption,
    RetryPolicy,
)
from capillary_async.testing import Emulator, Faults, sample_expiry_updates


def client_for(emu: Emulator, **kwargs: Any) -> CapillaryClient:
    return CapillaryClient(emu.base_url, auth=BasicAuth("demo", "demo"), **kwargs)


async def test_raw_responses_of_both_endpoints_and_of_request() -> None:
    async with Emulator(seed=7) as emu, client_for(emu) as client:
        rows = list(sample_expiry_updates(emu.store, 3, now=emu.clock.now()))
        raw = await client.points.with_raw_response.update_expiry(rows)
        assert isinstance(raw, RawResponse)
        assert raw.status in (200, 201)
        assert raw.request_id is not None
        assert raw.request_id.startswith("emu-")
        assert raw.headers["content-type"].startswith("application/json")
        assert raw.attempts == 1
        assert raw.elapsed > 0
        result = raw.parse()
        assert isinstance(result, ExpiryUpdateResult)
        assert result.request_id == raw.request_id
        assert raw.parse() is result  # parsed once
        assert len(result.updates) + len(result.failures) == 3

        record = next(iter(emu.store.redemptions.values()))
        mobile = emu.store.customers[record.customer_id].mobile
        entity = {"type": "CUSTOMER", "identifierType": "mobile", "identifierValue": mobile}
        update = {"redemptionId": record.redemption_id, "billNumber": "raw-1", "entity": entity}
        redemption = await client.points.with_raw_response.update_redemption(update)
        assert isinstance(redemption.parse(), Redemption)
        assert redemption.status == 200

        body = await client.with_raw_response.request(
            "POST", "/v2/points/updateExpiry", json={"expiryDateUpdateRequest": rows[:1]}
        )
        assert body.parse() == body.body
        assert "emu-" in repr(body)


async def test_an_error_after_retries_carries_the_last_answers_headers() -> None:
    async with Emulator(seed=7) as emu:
        emu.faults = Faults(rate_503=1.0)
        retry = RetryPolicy(max_attempts=3, backoff_base=0.001, jitter=False)
        async with client_for(emu, retry=retry) as client:
            with pytest.raises(APIError) as info:
                await client.points.with_raw_response.update_expiry(
                    list(sample_expiry_updates(emu.store, 1, now=emu.clock.now()))
                )
    assert info.value.status == 503
    assert info.value.headers["x-cap-request-id"].startswith("emu-")


async def test_an_api_error_carries_the_answers_headers() -> None:
    async with Emulator(seed=7) as emu, client_for(emu) as client:
        with pytest.raises(BadRequestError) as info:
            await client.request("POST", "/v2/points/updateExpiry", json={})
    headers = info.value.headers
    assert headers["content-type"].startswith("application/json")
    assert headers["x-cap-request-id"] == info.value.request_id
    assert json.dumps(dict(headers))  # plain text, fit for a log
