"""The SDK against the emulator over real HTTP: auth, envelopes, retries and the audit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from capillary_async import (
    BasicAuth,
    CapillaryClient,
    Entity,
    ExpiryDate,
    ExpiryUpdate,
    OAuthCredentials,
    OutcomeUnknownError,
    ReadTimeoutError,
    RedemptionUpdate,
    RetryPolicy,
    TokenHeaderStyle,
    ValidationError,
)
from capillary_async.testing import ENVELOPES, Award, Emulator, Faults, ManualTime

from .conftest import FakeClock

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
FUTURE = (NOW + timedelta(days=400)).date()


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(seed=11, customers=60, awards_per_customer=5, clock=ManualTime(NOW)) as e:
        yield e


def client_for(emu: Emulator, clock: FakeClock, **kwargs: Any) -> CapillaryClient:
    kwargs.setdefault("auth", BasicAuth("demo", "demo"))
    kwargs.setdefault("retry", RetryPolicy(max_attempts=8))
    return CapillaryClient(emu.base_url, clock=clock, **kwargs)


def update_for(emu: Emulator, award: Award, kind: str = "FIXED_DATE") -> ExpiryUpdate:
    customer = emu.store.customers[award.customer_id]
    value: Any = {"FIXED_DATE": FUTURE, "FIXED_DAYS": 30, "FIXED_MONTHS": 2, "IMMEDIATE": None}
    return ExpiryUpdate(
        identifier_name="mobile",
        identifier_value=customer.mobile,
        program_id=award.program_id,
        points_awarded_ref_id=award.ref_id,
        points_awarded_ref_type=award.ref_type,
        expiry_date=ExpiryDate(expiry_type=kind, expiry_value=value[kind]),
    )


def awards(emu: Emulator, count: int, start: int = 0) -> list[Award]:
    return list(emu.store.awards.values())[start : start + count]


async def test_both_endpoints_round_trip(emu: Emulator, clock: FakeClock) -> None:
    batch = awards(emu, 3)
    record = next(iter(emu.store.redemptions.values()))
    customer = emu.store.customers[record.customer_id]
    async with client_for(emu, clock) as client:
        result = await client.points.update_expiry([update_for(emu, a) for a in batch])
        redemption = await client.points.update_redemption(
            RedemptionUpdate(
                redemption_id=record.redemption_id,
                bill_id=1234567890123,
                purpose="corrected bill",
                entity=Entity(
                    type="CUSTOMER", identifier_type="email", identifier_value=customer.email
                ),
            )
        )
    assert [entry.ref for entry in result.updates] == [(a.ref_id, a.ref_type) for a in batch]
    logs = result.updates[0].points_expiry_update_logs
    assert logs is not None
    assert logs.new_expiry_date_iso == datetime(
        FUTURE.year, FUTURE.month, FUTURE.day, 23, 59, 59, tzinfo=timezone.utc
    )
    assert result.request_id is not None
    assert result.request_id.startswith("emu-")
    assert redemption.bill_id == 1234567890123
    assert redemption.redemption_purpose == "corrected bill"
    assert redemption.request_id is not None
    assert all(emu.audit.times_applied(*a.key) == 1 for a in batch)
    assert emu.audit.redemption_times_applied(record.redemption_id) == 1


@pytest.mark.parametrize("envelope", ENVELOPES)
@pytest.mark.parametrize("partial_status", [200, 201, 400])
async def test_every_documented_answer_form(
    emu: Emulator, clock: FakeClock, envelope: Any, partial_status: int
) -> None:
    emu.envelope = envelope
    emu.partial_status = partial_status
    good, other = awards(emu, 2)
    unknown = ExpiryUpdate(
        identifier_name="id",
        identifier_value="424242",
        program_id=469,
        points_awarded_ref_id=other.ref_id,
        points_awarded_ref_type=other.ref_type,
        expiry_date=ExpiryDate(expiry_type="FIXED_DATE", expiry_value=FUTURE),
    )
    past = attrs.evolve(
        update_for(emu, other),
        expiry_date=ExpiryDate(expiry_type="FIXED_DATE", expiry_value="2020-01-01"),
    )
    async with client_for(emu, clock) as client:
        result = await client.points.update_expiry([update_for(emu, good), unknown, past])
    assert [entry.ref for entry in result.updates] == [good.key]
    assert sorted(f.error_code or 0 for f in result.failures) == [3037, 8015]


async def test_oauth_renews_before_ttl_by_its_own_clock(emu: Emulator, clock: FakeClock) -> None:
    emu.token_ttl = 100
    async with client_for(emu, clock, auth=OAuthCredentials("demo", "demo")) as client:
        await client.points.update_expiry([update_for(emu, awards(emu, 1)[0])])
        clock.advance(79)
        await client.points.update_expiry([update_for(emu, awards(emu, 1, 1)[0])])
        assert emu.stats.by_path["/v3/oauth/token/generate"] == 1
        clock.advance(2)  # past 80 s: renewed before the server would refuse it
        await client.points.update_expiry([update_for(emu, awards(emu, 1, 2)[0])])
    assert emu.stats.by_path["/v3/oauth/token/generate"] == 2
    assert emu.stats.by_status[498] == 0


@pytest.mark.parametrize("style", list(TokenHeaderStyle))
async def test_oauth_renews_after_498(emu: Emulator, clock: FakeClock, style: Any) -> None:
    auth = OAuthCredentials("demo", "demo", header_style=style)
    async with client_for(emu, clock, auth=auth) as client:
        await client.points.update_expiry([update_for(emu, awards(emu, 1)[0])])
        emu.expire_tokens()
        result = await client.points.update_expiry([update_for(emu, awards(emu, 1, 1)[0])])
    assert len(result.updates) == 1
    assert emu.stats.by_status[498] == 1
    assert emu.stats.by_path["/v3/oauth/token/generate"] == 2


async def test_bad_oauth_pair_is_refused(emu: Emulator, clock: FakeClock) -> None:
    from capillary_async import AuthenticationError

    async with client_for(emu, clock, auth=OAuthCredentials("demo", "wrong")) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.points.update_expiry([update_for(emu, awards(emu, 1)[0])])
    assert info.value.codes == (320001,)


FAULTS = Faults(
    rate_429=0.1,
    rate_429_no_retry_after=0.05,
    rate_503=0.1,
    rate_521=0.05,
    drop_before=0.08,
    drop_after=0.08,
    retry_after=1,
)


async def test_idempotent_updates_survive_faults_applied_at_least_once(
    emu: Emulator, clock: FakeClock
) -> None:
    emu.faults = FAULTS
    batch = awards(emu, 120)
    async with client_for(emu, clock, retry=RetryPolicy(max_attempts=12)) as client:
        for award in batch:
            result = await client.points.update_expiry([update_for(emu, award)])
            assert [entry.ref for entry in result.updates] == [award.key]
    applied = [emu.audit.times_applied(*a.key) for a in batch]
    assert min(applied) >= 1
    assert sum(applied) - len(batch) == emu.stats.faults["drop_after"]  # only the ambiguous case
    assert emu.stats.faults["429"] > 0
    assert emu.stats.faults["drop_before"] > 0
    assert 1.0 in clock.sleeps  # the emulator's Retry-After: 1 was honoured


async def test_relative_updates_are_never_applied_twice_under_faults(
    emu: Emulator, clock: FakeClock
) -> None:
    emu.faults = FAULTS
    batch = awards(emu, 120)
    outcomes: dict[tuple[int, str], str] = {}
    async with client_for(emu, clock, retry=RetryPolicy(max_attempts=12)) as client:
        for award in batch:
            try:
                result = await client.points.update_expiry([update_for(emu, award, "FIXED_DAYS")])
            except OutcomeUnknownError:
                outcomes[award.key] = "unknown"
            else:
                assert [entry.ref for entry in result.updates] == [award.key]
                outcomes[award.key] = "succeeded"
    for key, outcome in outcomes.items():
        times = emu.audit.times_applied(*key)
        assert times <= 1, key
        if outcome == "succeeded":
            assert times == 1
    unknown = [k for k, v in outcomes.items() if v == "unknown"]
    assert len(unknown) == emu.stats.faults["drop_before"] + emu.stats.faults["drop_after"]
    assert sum(emu.audit.times_applied(*k) for k in unknown) == emu.stats.faults["drop_after"]


async def test_redemption_updates_are_retried_through_faults(
    emu: Emulator, clock: FakeClock
) -> None:
    emu.faults = Faults(rate_503=0.3, rate_521=0.2, drop_after=0.2)
    records = list(emu.store.redemptions.values())
    async with client_for(emu, clock, retry=RetryPolicy(max_attempts=15)) as client:
        for record in records:
            customer = emu.store.customers[record.customer_id]
            result = await client.points.update_redemption(
                {
                    "redemptionId": record.redemption_id,
                    "billNumber": f"fixed-{record.redemption_id}",
                    "entity": {
                        "type": "CUSTOMER",
                        "identifierType": "id",
                        "identifierValue": str(customer.id),
                    },
                }
            )
            assert result.bill_number == f"fixed-{record.redemption_id}"
    assert all(emu.audit.redemption_times_applied(r.redemption_id) >= 1 for r in records)
    assert all(r.bill_number == f"fixed-{r.redemption_id}" for r in records)


async def test_timeout_on_a_slow_server(emu: Emulator, clock: FakeClock) -> None:
    emu.faults = Faults(slow=1.0, slow_seconds=30)
    first, second = awards(emu, 2)
    async with client_for(
        emu, clock, retry=RetryPolicy(max_attempts=2, jitter=False), timeout=0.2
    ) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.points.update_expiry([update_for(emu, first, "FIXED_MONTHS")])
        assert isinstance(info.value.cause, ReadTimeoutError)
        with pytest.raises(ReadTimeoutError):
            await client.points.update_expiry([update_for(emu, second, "FIXED_DATE")])
    assert emu.audit.times_applied(*first.key) == 1  # applied once, and not repeated
    assert emu.audit.times_applied(*second.key) == 2  # repeated: safe for FIXED_DATE


async def test_client_side_validation_costs_no_request(emu: Emulator, clock: FakeClock) -> None:
    async with client_for(emu, clock) as client:
        with pytest.raises(ValidationError):
            await client.points.update_expiry([{"identifierName": "id"}])
    assert emu.stats.requests == 0
