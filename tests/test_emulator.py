"""The emulator over real HTTP with plain aiohttp: codes, shapes, envelopes, faults, audit."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from capillary_async.testing import (
    ENVELOPES,
    Emulator,
    Faults,
    ManualTime,
    sample_expiry_updates,
    write_csv,
    write_jsonl,
)

from .conftest import EXPIRY_ITEM, EXPIRY_SUCCESS, REDEMPTION_RESPONSE

BASIC = "Basic " + base64.b64encode(b"demo:" + hashlib.md5(b"demo").hexdigest().encode()).decode()
SEED_TIME = datetime(2025, 1, 7, 10, 35, 28, tzinfo=timezone.utc)


class Raw:
    """Plain aiohttp calls, so the emulator is tested independently of the SDK."""

    def __init__(self, emulator: Emulator, session: aiohttp.ClientSession) -> None:
        self.emulator = emulator
        self.session = session

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        headers = {"Authorization": BASIC} if headers is None else headers
        async with self.session.request(
            method, self.emulator.base_url + path, json=body, headers=headers
        ) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None, dict(response.headers)

    async def expiry(self, *items: Any, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        body = {"expiryDateUpdateRequest": list(items)}
        return await self.call("POST", "/v2/points/updateExpiry", body, **kwargs)

    async def redemption(self, body: Any, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        return await self.call("PUT", "/v2/points/updateRedemption", body, **kwargs)


def seed_records(emulator: Emulator) -> None:
    """The customers, record and redemptions the documentation's examples name."""
    store = emulator.store
    store.add_customer(172440986, mobile="919777785302")
    store.add_customer(564332013, mobile="919731013853")
    store.add_award(
        117521910,
        customer_id=172440986,
        expiry=datetime(2026, 8, 9, 23, 59, 59, tzinfo=timezone.utc),
    )
    store.add_redemption("NZVAt9", customer_id=172440986, purpose="old")
    store.add_redemption(
        "Fnpztw",
        customer_id=564332013,
        custom_fields={"card_number": "000"},
        external_reference_number="ext-79",
    )


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(seed=None, clock=ManualTime(SEED_TIME)) as emulator:
        seed_records(emulator)
        yield emulator


@pytest.fixture
async def raw(emu: Emulator) -> AsyncIterator[Raw]:
    async with aiohttp.ClientSession() as session:
        yield Raw(emu, session)


def keys(value: Any) -> Any:
    """The shape of a JSON value: its keys, recursively."""
    if isinstance(value, dict):
        return {k: keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [keys(v) for v in value[:1]]
    return type(value).__name__


def item(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(EXPIRY_ITEM)
    data.update(changes)
    return data


# -- the documentation's examples ---------------------------------------------------------


async def test_seed_expiry_example_gets_the_seed_shape(raw: Raw, emu: Emulator) -> None:
    status, body, headers = await raw.expiry(EXPIRY_ITEM)
    assert status == 200
    assert keys(body) == keys(EXPIRY_SUCCESS)
    logs = body["currencyExpiryUpdateResponse"][0]["pointsExpiryUpdateLogs"]
    assert logs["oldExpiryDate"] == "2026-08-09 23:59:59"
    assert logs["oldExpiryDateISO"] == "2026-08-09T23:59:59Z"
    assert logs["newExpiryDateISO"] == "2025-08-09T23:59:59Z"
    assert logs["eventDateISO"] == "2025-01-07T10:35:28Z"
    assert logs["standardMeta"] == EXPIRY_ITEM["standardMeta"]
    assert logs["customMeta"] == {"abc": "xyz"}
    assert headers["X-CAP-REQUEST-ID"].startswith("emu-")
    assert emu.audit.times_applied(117521910) == 1
    assert emu.audit.requests_for(117521910) == [headers["X-CAP-REQUEST-ID"]]


@pytest.mark.parametrize(
    "request_body",
    [
        {
            "redemptionId": "NZVAt9",
            "billNumber": "billnumber333",
            "billId": 12345678901,
            "purpose": "testing123",
            "entity": {
                "type": "CUSTOMER",
                "identifierType": "mobile",
                "identifierValue": "919777785302",
            },
        },
        {
            "redemptionId": "Fnpztw",
            "billNumber": "txn-79",
            "purpose": "Update redemption details",
            "entity": {
                "type": "CUSTOMER",
                "identifierType": "mobile",
                "identifierValue": "919731013853",
            },
            "customFields": {"card_number": "123456"},
        },
    ],
    ids=["NZVAt9", "Fnpztw"],
)
async def test_seed_redemption_examples_get_the_seed_shape(
    raw: Raw, emu: Emulator, request_body: dict[str, Any]
) -> None:
    status, body, _ = await raw.redemption(request_body)
    assert status == 200
    expected = keys(REDEMPTION_RESPONSE)
    if "customFields" not in request_body:
        expected.pop("customFields")  # the seed's first answer has none either
    assert keys(body) == expected
    assert body["redemptionId"] == request_body["redemptionId"]
    assert body["billNumber"] == request_body["billNumber"]
    assert body["redemptionPurpose"] == request_body["purpose"]
    if "billId" in request_body:
        assert body["billId"] == 12345678901
    else:
        assert body["customFields"] == [{"name": "card_number", "value": "123456"}]
    assert emu.audit.redemption_times_applied(request_body["redemptionId"]) == 1


async def test_redemption_found_by_external_reference_number(raw: Raw) -> None:
    body = {
        "externalReferenceNumber": "ext-79",
        "purpose": "p",
        "entity": {"type": "CUSTOMER", "identifierType": "id", "identifierValue": "564332013"},
    }
    status, answer, _ = await raw.redemption(body)
    assert (status, answer["redemptionId"]) == (200, "Fnpztw")


# -- updateExpiry per-item failures and refusals --------------------------------------------


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"identifierValue": "0000"}, 8015),
        ({"pointsAwardedRefId": 1175219}, 3034),
        ({"programId": 470}, 3034),
        ({"expiryDate": {"expiryType": "FIXED_DATE", "expiryValue": "2025-01-06"}}, 3037),
        ({"identifierName": None}, 8932),
        ({"identifierName": "phone"}, 8932),
        ({"identifierValue": ""}, 8933),
        ({"programId": "x"}, 8934),
        ({"standardMeta": {"who": "x"}}, 8935),
        ({"pointsAwardedRefId": None}, 8937),
        ({"pointsAwardedRefType": None}, 8938),
        ({"expiryDate": None}, 8942),
        ({"expiryDate": {"expiryType": "FIXED_DATE", "expiryValue": "09/08/2025"}}, 8942),
        ({"expiryDate": {"expiryType": "FIXED_DAYS", "expiryValue": "-1"}}, 8942),
    ],
)
async def test_per_item_failure_codes(
    raw: Raw, emu: Emulator, changes: dict[str, Any], code: int
) -> None:
    bad = {k: v for k, v in item(**changes).items() if v is not None}
    status, body, _ = await raw.expiry(bad, item())
    assert status == 201
    assert [f["errorCode"] for f in body["failures"]] == [code]
    assert set(body["failures"][0]) == {
        "pointsAwardedRefId",
        "pointsAwardedRefType",
        "errorCode",
        "errorMessage",
    }
    assert len(body["currencyExpiryUpdateResponse"]) == 1  # the good item still applied
    assert emu.audit.times_applied(117521910) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pointsAwardedRefType": "POINTS"}, "POINT_AWARDED_CUSTOMER_PROMOTION"),
        ({"expiryDate": {"expiryType": "FIXED_WEEKS", "expiryValue": "2"}}, "FIXED_MONTHS"),
        ({"expiryUpdateReasonType": "LATER"}, "EXTEND_EXPIRY"),
    ],
)
async def test_enum_violation_refuses_the_whole_request(
    raw: Raw, emu: Emulator, changes: dict[str, Any], message: str
) -> None:
    status, body, headers = await raw.expiry(item(), item(**changes))
    assert status == 400
    assert body["errors"][0]["code"] == 8941
    assert body["errors"][0]["status"] is False
    assert message in body["errors"][0]["message"]
    assert "X-CAP-REQUEST-ID" in headers
    assert emu.audit.times_applied(117521910) == 0


@pytest.mark.parametrize("body", [{}, {"expiryDateUpdateRequest": []}, [1], "x"])
async def test_empty_request_is_8931(raw: Raw, body: Any) -> None:
    status, answer, _ = await raw.call("POST", "/v2/points/updateExpiry", body)
    assert (status, answer["errors"][0]["code"]) == (400, 8931)


async def test_too_many_items_is_a_clear_400(raw: Raw, emu: Emulator) -> None:
    emu.max_items = 3
    status, body, _ = await raw.expiry(*[item()] * 4)
    assert status == 400
    assert "at most 3 per request" in body["errors"][0]["message"]
    assert emu.audit.times_applied(117521910) == 0
    status, _, _ = await raw.expiry(*[item()] * 3)
    assert status == 200
    assert emu.audit.times_applied(117521910) == 3


@pytest.mark.parametrize("envelope", ENVELOPES)
@pytest.mark.parametrize("partial_status", [200, 201, 400])
async def test_envelopes_and_partial_status(
    raw: Raw, emu: Emulator, envelope: Any, partial_status: int
) -> None:
    emu.envelope = envelope
    emu.partial_status = partial_status
    status, body, _ = await raw.expiry(item(), item(pointsAwardedRefId=5))
    assert status == partial_status
    if envelope == "entity":
        assert set(body) == {"entity", "errors", "warnings"}
        inner = body["entity"]
        updates, failures = inner["updateCurrencyExpiryDateResponse"], inner["failures"]
    else:
        assert set(body) == {envelope, "failures"}
        updates, failures = body[envelope], body["failures"]
    assert [u["pointsExpiryUpdateLogs"]["paId"] for u in updates] == [117521910]
    assert [f["errorCode"] for f in failures] == [3034]
    status, _, _ = await raw.expiry(item())
    assert status == 200  # no failure: plain success


async def test_relative_expiries_use_the_clock_and_cluster_timezone() -> None:
    clock = ManualTime(datetime(2026, 1, 31, 10, 0, 0, tzinfo=timezone.utc))
    async with (
        Emulator(seed=None, clock=clock, timezone="+05:30") as emu,
        aiohttp.ClientSession() as s,
    ):
        seed_records(emu)
        raw = Raw(emu, s)
        answers = {}
        for kind, value in [("FIXED_MONTHS", "1"), ("FIXED_DAYS", "30"), ("IMMEDIATE", None)]:
            expiry = {"expiryType": kind, **({"expiryValue": value} if value else {})}
            _, body, _ = await raw.expiry(item(expiryDate=expiry))
            answers[kind] = body["currencyExpiryUpdateResponse"][0]["pointsExpiryUpdateLogs"]
    assert answers["FIXED_MONTHS"]["newExpiryDateISO"] == "2026-02-28T23:59:59+05:30"
    assert answers["FIXED_DAYS"]["newExpiryDateISO"] == "2026-03-02T23:59:59+05:30"
    assert answers["IMMEDIATE"]["newExpiryDateISO"] == "2026-01-31T15:30:00+05:30"
    assert answers["IMMEDIATE"]["newExpiryDate"] == "2026-01-31 15:30:00"
    assert answers["FIXED_DAYS"]["eventDateISO"] == "2026-01-31T15:30:00+05:30"


# -- updateRedemption refusals -------------------------------------------------------------

ENTITY = {"type": "CUSTOMER", "identifierType": "mobile", "identifierValue": "919731013853"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"billNumber": "b", "entity": ENTITY}, 749),
        ({"redemptionId": "Fnpztw", "externalReferenceNumber": "x", "purpose": "p"}, 749),
        ({"redemptionId": "Fnpztw", "entity": ENTITY}, 748),
        ({"redemptionId": "Fnpztw", "purpose": "p"}, 1219),
        ({"redemptionId": "Fnpztw", "purpose": "p", "entity": {"type": "CUSTOMER"}}, 1219),
        ({"redemptionId": "Fnpztw", "purpose": "p", "entity": {**ENTITY, "type": "GROUP"}}, 1212),
        ({"redemptionId": "nope", "purpose": "p", "entity": ENTITY}, 8015),
        (
            {
                "redemptionId": "Fnpztw",
                "purpose": "p",
                "entity": {**ENTITY, "identifierValue": "1"},
            },
            8015,
        ),
        ({"redemptionId": "Fnpztw", "billId": "12345.67", "entity": ENTITY}, 750),
        ({"redemptionId": "Fnpztw", "billId": -12345, "entity": ENTITY}, 750),
        ({"redemptionId": "Fnpztw", "purpose": "x" * 256, "entity": ENTITY}, 750),
        ({"redemptionId": "Fnpztw", "customFields": {"other": "1"}, "entity": ENTITY}, 750),
    ],
)
async def test_redemption_refusal_codes(
    raw: Raw, emu: Emulator, body: dict[str, Any], code: int
) -> None:
    status, answer, headers = await raw.redemption(body)
    assert status == 400
    assert answer == {
        "errors": [{"status": False, "code": code, "message": answer["errors"][0]["message"]}]
    }
    assert "X-CAP-REQUEST-ID" in headers
    assert emu.audit.redemption_times_applied("Fnpztw") == 0


# -- auth ------------------------------------------------------------------------------


async def test_basic_auth_is_checked(raw: Raw) -> None:
    digest = hashlib.md5(b"nope").hexdigest().encode()
    wrong = "Basic " + base64.b64encode(b"demo:" + digest).decode()
    for headers in ({}, {"Authorization": wrong}, {"Authorization": "Basic !!"}):
        status, body, response_headers = await raw.expiry(item(), headers=headers)
        assert status == 401
        assert body["errors"][0]["code"] == 401
        assert "X-CAP-REQUEST-ID" in response_headers


async def test_oauth_token_flow_and_expiry(raw: Raw, emu: Emulator) -> None:
    status, body, headers = await raw.call(
        "POST", "/v3/oauth/token/generate", {"key": "demo", "secret": "wrong"}, headers={}
    )
    assert (status, body["data"], body["errors"][0]["code"]) == (401, None, 320001)
    assert body["errors"][0]["message"] == "Invalid client key and secret"
    emu.token_ttl = 60
    status, body, headers = await raw.call(
        "POST", "/v3/oauth/token/generate", {"key": "demo", "secret": "demo"}, headers={}
    )
    assert status == 200
    assert body["errors"] is None
    assert body["data"]["ttlSeconds"] == 60
    assert "X-CAP-REQUEST-ID" in headers
    token = body["data"]["accessToken"]
    for style in ({"X-CAP-API-OAUTH-TOKEN": token}, {"Authorization": f"Bearer {token}"}):
        status, _, _ = await raw.expiry(item(), headers=style)
        assert status == 200
    status, _, _ = await raw.expiry(item(), headers={"X-CAP-API-OAUTH-TOKEN": "forged"})
    assert status == 401
    emu.clock.advance(61)  # type: ignore[attr-defined]
    status, body, _ = await raw.expiry(item(), headers={"X-CAP-API-OAUTH-TOKEN": token})
    assert status == 498
    assert body["errors"][0]["message"].startswith("Token expired at")


# -- faults, latency, rate limits ------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "status", "retry_after"),
    [
        (Faults(rate_429=1.0, retry_after=2), 429, "2"),
        (Faults(rate_429_no_retry_after=1.0), 429, None),
        (Faults(rate_500=1.0), 500, None),
        (Faults(rate_503=1.0), 503, None),
        (Faults(rate_521=1.0), 521, None),
    ],
)
async def test_status_faults_are_not_applied(
    raw: Raw, emu: Emulator, faults: Faults, status: int, retry_after: str | None
) -> None:
    emu.faults = faults
    answer_status, body, headers = await raw.expiry(item())
    assert answer_status == status
    assert headers.get("Retry-After") == retry_after
    assert "X-CAP-REQUEST-ID" in headers
    assert body["errors"]
    assert emu.audit.times_applied(117521910) == 0


async def test_dropped_connections_before_and_after_applying(raw: Raw, emu: Emulator) -> None:
    emu.faults = Faults(drop_before=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await raw.expiry(item())
    assert emu.audit.times_applied(117521910) == 0
    emu.faults = Faults(drop_after=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await raw.expiry(item())
    assert emu.audit.times_applied(117521910) == 1
    assert emu.stats.faults == {"drop_before": 1, "drop_after": 1}


async def test_slow_answer_is_applied_and_outlasts_a_client_timeout(
    raw: Raw, emu: Emulator
) -> None:
    emu.faults = Faults(slow=1.0, slow_seconds=30)
    with pytest.raises(asyncio.TimeoutError):
        async with raw.session.post(
            emu.base_url + "/v2/points/updateExpiry",
            json={"expiryDateUpdateRequest": [item()]},
            headers={"Authorization": BASIC},
            timeout=aiohttp.ClientTimeout(total=0.1),
        ) as response:
            await response.read()
    assert emu.audit.times_applied(117521910) == 1


async def test_faults_are_reproducible_from_the_seed() -> None:
    faults = Faults(rate_503=0.3, rate_429=0.2, drop_before=0.1)

    async def sequence() -> list[int]:
        statuses = []
        async with (
            Emulator(seed=42, customers=1, faults=faults) as emu,
            aiohttp.ClientSession() as s,
        ):
            raw = Raw(emu, s)
            for _ in range(30):
                try:
                    statuses.append((await raw.expiry({}))[0])
                except aiohttp.ServerDisconnectedError:
                    statuses.append(0)
        return statuses

    first, second = await sequence(), await sequence()
    assert first == second
    assert {0, 201, 429, 503} <= set(first)


async def test_rate_limit_answers_429_with_retry_after(raw: Raw, emu: Emulator) -> None:
    emu.rate_limit = 2.0
    statuses = []
    for _ in range(6):
        status, _, headers = await raw.expiry(item())
        statuses.append(status)
        if status == 429:
            assert int(headers["Retry-After"]) >= 1
    assert statuses[:2] == [200, 200]
    assert 429 in statuses
    assert emu.stats.faults["rate_limited"] == statuses.count(429)


async def test_latency_and_peak_concurrency(raw: Raw, emu: Emulator) -> None:
    emu.latency = 0.05
    results = await asyncio.gather(*(raw.expiry(item()) for _ in range(5)))
    assert [status for status, _, _ in results] == [200] * 5
    assert emu.stats.peak_concurrent == 5
    assert emu.stats.requests == 5
    assert emu.stats.items == 5
    assert emu.audit.times_applied(117521910) == 5
    assert len({h["X-CAP-REQUEST-ID"] for _, _, h in results}) == 5


def test_fault_rates_are_checked() -> None:
    with pytest.raises(ValueError, match="at most 1"):
        Faults(rate_500=0.6, rate_503=0.6)


# -- seeding and samples -------------------------------------------------------------------


def test_seeding_is_deterministic() -> None:
    clock = ManualTime()
    one, two = Emulator(seed=7, clock=clock), Emulator(seed=7, clock=clock)
    assert one.store.awards == two.store.awards
    assert one.store.redemptions == two.store.redemptions
    assert len(one.store.customers) == 100
    assert len(one.store.awards) == 500
    assert Emulator(seed=8, clock=clock).store.awards != one.store.awards


async def test_sample_files_match_the_records(tmp_path: Path) -> None:
    async with (
        Emulator(seed=3, customers=20, awards_per_customer=2) as emu,
        aiohttp.ClientSession() as s,
    ):
        now = emu.clock.now()
        items = list(sample_expiry_updates(emu.store, 40, seed=3, bad=0.25, now=now))
        assert items == list(sample_expiry_updates(emu.store, 40, seed=3, bad=0.25, now=now))
        assert write_jsonl(tmp_path / "in.jsonl", items) == 40
        assert write_csv(tmp_path / "in.csv", items) == 40
        lines = (tmp_path / "in.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == items
        header = (tmp_path / "in.csv").read_text().splitlines()[0]
        assert "expiryDate.expiryType" in header
        assert "standardMeta.who_raised" in header
        raw = Raw(emu, s)
        _, body, _ = await raw.expiry(*[i for i in items if i["programId"] != "not-a-number"])
    bad = sum(1 for i in items if i["programId"] == "not-a-number")
    failures = body.get("failures", [])
    assert 0 < len(failures) + bad < 40
    assert len(body["currencyExpiryUpdateResponse"]) + len(failures) + bad == 40
    assert {f["errorCode"] for f in failures} <= {8015, 3034, 3037}


# -- how it runs -----------------------------------------------------------------------------


async def test_pytest_fixture_serves_a_seeded_emulator(capillary_emulator: Emulator) -> None:
    assert capillary_emulator.base_url.startswith("http://127.0.0.1:")
    assert len(capillary_emulator.store.awards) == 500


def test_command_line_serves_until_interrupted(tmp_path: Path) -> None:
    sample = tmp_path / "sample.jsonl"
    command = [
        sys.executable,
        "-m",
        "capillary_async.testing",
        "--port",
        "0",
        "--seed",
        "7",
        "--customers",
        "5",
        "--latency-ms",
        "1-2",
        "--fault-503",
        "0.1",
        "--write-sample",
        str(sample),
        "--sample-count",
        "10",
    ]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            banner = "".join(process.stderr.readline() for _ in range(3))
            match = re.search(r"on (http://127\.0\.0\.1:\d+)", banner)
            assert match, banner
            assert "demo / demo" in banner
            assert len(sample.read_text().splitlines()) == 10

            async def probe() -> int:
                url = match.group(1) + "/v3/oauth/token/generate"
                async with (
                    aiohttp.ClientSession() as s,
                    s.post(url, json={"key": "demo", "secret": "demo"}) as response,
                ):
                    return response.status

            assert asyncio.run(probe()) == 200
        finally:
            process.terminate()
            process.wait(timeout=10)


async def test_stop_ends_pending_slow_answers_promptly(emu: Emulator) -> None:
    emu.faults = Faults(slow=1.0, slow_seconds=600)
    async with aiohttp.ClientSession() as s:
        pending = asyncio.ensure_future(Raw(emu, s).expiry(item()))
        while emu.stats.concurrent == 0:
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await emu.stop()
        done, _ = await asyncio.wait({pending}, timeout=5)
        assert loop.time() - started < 5
        assert done == {pending}  # answered or cut off, but not left hanging for 600 s
        if pending.exception() is None:
            assert pending.result()[0] == 200


def test_emulator_reports_where_it_runs() -> None:
    emulator = Emulator(seed=None)
    with pytest.raises(RuntimeError, match="not running"):
        _ = emulator.base_url
    assert "stopped" in repr(emulator)
    assert emulator.credentials == {"username": "demo", "client_key": "demo"}
    with pytest.raises(ValueError, match="timezone"):
        Emulator(seed=None, timezone="IST")
    assert Emulator(seed=None, timezone="+05:30").tz.utcoffset(None) == timedelta(
        hours=5, minutes=30
    )


async def test_stats_endpoint_reports_the_audit(raw: Raw, emu: Emulator) -> None:
    await raw.expiry(item(), item(pointsAwardedRefId=5))
    emu.faults = Faults(rate_503=1.0)
    await raw.expiry(item())
    async with raw.session.get(emu.base_url + "/_emulator/stats") as response:
        stats = await response.json()
    assert stats["requests"] == 2
    assert stats["items"] == 2
    assert stats["expiry_applications"] == 1
    assert stats["records_changed"] == 1
    assert stats["faults"] == {"503": 1}
    assert stats["statuses"] == {"201": 1, "503": 1}


async def test_a_client_that_goes_away_is_one_line_not_a_traceback(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emu.latency = 0.2
    caplog.set_level(logging.INFO)

    async def ask(session: aiohttp.ClientSession) -> None:
        async with session.post(
            emu.base_url + "/v2/points/updateExpiry",
            json={"expiryDateUpdateRequest": [EXPIRY_ITEM]},
            headers={"Authorization": BASIC},
        ) as response:
            await response.read()

    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ask(session), 0.05)
    for _ in range(100):  # the emulator notices when its handler wakes up
        if emu.stats.gone:
            break
        await asyncio.sleep(0.01)
    assert emu.stats.gone == 1
    noted = [r for r in caplog.records if r.name == "capillary_async.emulator"]
    assert [r.getMessage().split(" (")[0] for r in noted] == [
        "a client went away before its answer"
    ]
    assert not [r for r in caplog.records if r.exc_info or r.name.startswith("aiohttp")]
