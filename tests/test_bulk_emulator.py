"""Bulk jobs against the emulator under faults, with its audit as the witness."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from capillary_async import (
    BasicAuth,
    CapillaryClient,
    Entity,
    OutcomeStatus,
    RedemptionUpdate,
    RetryPolicy,
)
from capillary_async.testing import Emulator, Faults, ManualTime

from .conftest import FakeClock

NOW = datetime(2026, 5, 1, 9, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(
        seed=21, customers=2500, awards_per_customer=4, clock=ManualTime(NOW)
    ) as emulator:
        yield emulator


def item_for(emu: Emulator, award: Any, kind: str, value: str | None) -> dict[str, Any]:
    customer = emu.store.customers[award.customer_id]
    expiry: dict[str, Any] = {"expiryType": kind}
    if value is not None:
        expiry["expiryValue"] = value
    return {
        "identifierName": "id",
        "identifierValue": str(customer.id),
        "programId": award.program_id,
        "pointsAwardedRefId": award.ref_id,
        "pointsAwardedRefType": award.ref_type,
        "expiryDate": expiry,
    }


async def test_10000_items_under_faults_are_all_accounted_for(
    emu: Emulator, clock: FakeClock
) -> None:
    awards = list(emu.store.awards.values())
    later = (NOW + timedelta(days=500)).date().isoformat()
    latest = (NOW + timedelta(days=600)).date().isoformat()
    items: list[tuple[str, dict[str, Any]]] = []
    for n, award in enumerate(awards[:9000]):
        if n % 2:
            items.append(("relative", item_for(emu, award, "FIXED_DAYS", "30")))
        else:
            items.append(("absolute", item_for(emu, award, "FIXED_DATE", later)))
    for n in range(300):
        bad = item_for(emu, awards[n], "FIXED_DATE", later)
        if n % 2:
            bad["programId"] = "not-a-number"
        else:
            bad["expiryDate"] = {"expiryType": "FIXED_WEEKS", "expiryValue": "2"}
        items.append(("invalid", bad))
    for n in range(200):
        items.append(
            (
                "unknown_ref",
                {
                    **item_for(emu, awards[n], "FIXED_DATE", later),
                    "pointsAwardedRefId": 900_000_000 + n,
                },
            )
        )
        items.append(
            (
                "unknown_customer",
                {**item_for(emu, awards[n], "FIXED_DATE", later), "identifierValue": "1"},
            )
        )
        items.append(("past", item_for(emu, awards[9000 + n], "FIXED_DATE", "2020-01-01")))
    random.Random(5).shuffle(items)
    # Repeat 100 FIXED_DATE records with a later date, each somewhere after its
    # first occurrence, as a real file would.
    rng = random.Random(6)
    duplicated = [awards[n] for n in range(0, 200, 2)]
    for award in duplicated:
        first = next(
            n
            for n, (kind, i) in enumerate(items)
            if kind == "absolute" and i["pointsAwardedRefId"] == award.ref_id
        )
        position = rng.randint(first + 1, len(items))
        items.insert(position, ("duplicate", item_for(emu, award, "FIXED_DATE", latest)))
    assert len(items) == 10_000

    emu.faults = Faults(
        rate_429=0.03, rate_503=0.05, drop_before=0.03, drop_after=0.03, retry_after=0.01
    )
    async with CapillaryClient(
        emu.base_url,
        auth=BasicAuth("demo", "demo"),
        retry=RetryPolicy(max_attempts=10),
        clock=clock,
    ) as client:
        report = await client.points.bulk_update_expiry(
            (item for _, item in items), chunk_size=50, concurrency=8, keep_all=True
        )

    assert report.total == 10_000
    assert (
        report.succeeded + report.failed + report.invalid + report.unknown + report.not_attempted
        == 10_000
    )
    outcomes = report.outcomes()
    assert [o.index for o in outcomes] == list(range(10_000))
    assert report.stop_reason is None
    assert report.invalid == 300
    faults = emu.stats.faults
    assert min(faults["429"], faults["503"], faults["drop_before"], faults["drop_after"]) > 0
    assert report.retried_requests > 0

    by_kind: dict[str, Counter[OutcomeStatus]] = {}
    for (kind, item), outcome in zip(items, outcomes, strict=True):
        by_kind.setdefault(kind, Counter())[outcome.status] += 1
        key = (item["pointsAwardedRefId"], item["pointsAwardedRefType"])
        times = emu.audit.times_applied(*key)
        if kind in ("absolute", "duplicate"):
            assert outcome.status is OutcomeStatus.SUCCEEDED, outcome
            assert times >= 1  # no valid idempotent item applied zero times
        elif kind == "relative":
            assert times <= 1, (key, times)  # never applied twice
            if outcome.status is OutcomeStatus.SUCCEEDED:
                assert times == 1
            else:
                assert outcome.status is OutcomeStatus.UNKNOWN
        elif kind == "invalid":
            assert outcome.status is OutcomeStatus.INVALID
            assert outcome.error_code in (8934, 8941)
        else:
            expected = {"unknown_ref": 3034, "unknown_customer": 8015, "past": 3037}[kind]
            assert outcome.error_code == expected, outcome
            # Refused; unknown only when an earlier attempt of its chunk may have landed.
            assert outcome.status is OutcomeStatus.FAILED or (
                outcome.status is OutcomeStatus.UNKNOWN and not outcome.settled
            ), outcome
            by_kind.setdefault("refused", Counter())[outcome.status] += 1
    assert by_kind["relative"][OutcomeStatus.SUCCEEDED] > 4000
    assert by_kind["refused"][OutcomeStatus.FAILED] > by_kind["refused"][OutcomeStatus.UNKNOWN]
    # a repeated record ends with the later item's date: duplicates went in input order
    for award in duplicated:
        assert award.expiry.date().isoformat() == latest
        assert emu.audit.times_applied(*award.key) >= 2


async def test_bulk_redemptions_against_the_emulator(emu: Emulator, clock: FakeClock) -> None:
    emu.faults = Faults(rate_503=0.2, drop_after=0.1)
    records = list(emu.store.redemptions.values())
    items: list[Any] = []
    for record in records:
        customer = emu.store.customers[record.customer_id]
        items.append(
            RedemptionUpdate(
                redemption_id=record.redemption_id,
                bill_number=f"fixed-{record.redemption_id}",
                entity=Entity(
                    type="CUSTOMER", identifier_type="id", identifier_value=str(customer.id)
                ),
            )
        )
    entity = {"type": "CUSTOMER", "identifierType": "id", "identifierValue": "100000"}
    items.append({"redemptionId": "nope00", "purpose": "x", "entity": entity})
    items.append({"redemptionId": "nope01", "purpose": "x"})  # no entity: invalid, 1219
    async with CapillaryClient(
        emu.base_url,
        auth=BasicAuth("demo", "demo"),
        retry=RetryPolicy(max_attempts=12),
        clock=clock,
    ) as client:
        report = await client.points.bulk_update_redemption(items, concurrency=4, keep_all=True)
    outcomes = report.outcomes()
    assert [o.status for o in outcomes[: len(records)]] == [OutcomeStatus.SUCCEEDED] * len(records)
    assert outcomes[0].update.bill_number == f"fixed-{records[0].redemption_id}"
    assert (outcomes[-2].status, outcomes[-2].error_code) == (OutcomeStatus.FAILED, 8015)
    assert (outcomes[-1].status, outcomes[-1].error_code) == (OutcomeStatus.INVALID, 1219)
    assert all(emu.audit.redemption_times_applied(r.redemption_id) >= 1 for r in records)
    assert all(r.bill_number == f"fixed-{r.redemption_id}" for r in records)
    assert report.requests >= len(records) + 1
