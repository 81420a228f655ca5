"""Sample updateExpiry input that matches an emulator's records, bad rows included."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ._store import Store

__all__ = ["BAD_KINDS", "flatten", "sample_expiry_updates", "write_csv", "write_jsonl"]

#: The ways real input files go wrong, as sample rows can.
BAD_KINDS = ("unknown_customer", "unknown_award", "past_date", "malformed")

CSV_COLUMNS = (
    "identifierName",
    "identifierValue",
    "programId",
    "pointsAwardedRefId",
    "pointsAwardedRefType",
    "expiryUpdateReasonType",
    "expiryUpdateReasonNote",
    "expiryDate.expiryType",
    "expiryDate.expiryValue",
    "standardMeta.who_raised",
    "standardMeta.who_approved",
    "standardMeta.reason_for_trigger",
)


def sample_expiry_updates(
    store: Store,
    count: int,
    *,
    seed: int = 0,
    bad: float = 0.0,
    now: datetime,
) -> Iterator[dict[str, Any]]:
    """``count`` wire-format items, one per points-awarded record while records last.

    Valid items extend a record by 90 days past its current expiry (FIXED_DATE,
    always in the future). A share ``bad`` of the items is broken in one of
    the ``BAD_KINDS`` ways, spread evenly; ``malformed`` items carry a program
    id that is not a number. Deterministic for a given store, seed and ``now``.
    """
    rng = random.Random(seed)
    awards = list(store.awards.values())
    if not awards:
        raise ValueError("store: no points-awarded records to sample from")
    customers = store.customers
    names = ("id", "mobile", "externalId", "email")
    for n in range(count):
        award = awards[n % len(awards)]
        customer = customers[award.customer_id]
        name = names[n % len(names)]
        new_expiry = (max(award.expiry, now) + timedelta(days=90)).date().isoformat()
        item: dict[str, Any] = {
            "identifierName": name,
            "identifierValue": customer.identifiers()[name],
            "programId": award.program_id,
            "pointsAwardedRefId": award.ref_id,
            "pointsAwardedRefType": award.ref_type,
            "expiryUpdateReasonType": "EXTEND_EXPIRY",
            "expiryUpdateReasonNote": "Goodwill extension",
            "standardMeta": {
                "who_raised": "ops",
                "who_approved": "Admin",
                "reason_for_trigger": "Extend points expiry",
            },
            "expiryDate": {"expiryType": "FIXED_DATE", "expiryValue": new_expiry},
        }
        if bad and rng.random() < bad:
            _spoil(item, BAD_KINDS[rng.randrange(len(BAD_KINDS))], now)
        yield item


def _spoil(item: dict[str, Any], kind: str, now: datetime) -> None:
    if kind == "unknown_customer":
        item["identifierName"] = "id"
        item["identifierValue"] = "999999999"
    elif kind == "unknown_award":
        item["pointsAwardedRefId"] = 900_000_000 + item["pointsAwardedRefId"] % 1_000_000
    elif kind == "past_date":
        item["expiryDate"] = {
            "expiryType": "FIXED_DATE",
            "expiryValue": (now - timedelta(days=30)).date().isoformat(),
        }
    else:
        item["programId"] = "not-a-number"


def flatten(item: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested wire fields as dotted CSV columns (``expiryDate.expiryType``)."""
    flat: dict[str, Any] = {}
    for key, value in item.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def write_jsonl(path: str | Path, items: Iterable[Mapping[str, Any]]) -> int:
    """One JSON object a line; returns the number of lines written."""
    written = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(item, separators=(",", ":")) + "\n")
            written += 1
    return written


def write_csv(path: str | Path, items: Iterable[Mapping[str, Any]]) -> int:
    """A header of wire names (dotted for nested fields) and one row an item."""
    written = 0
    with Path(path).open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="raise")
        writer.writeheader()
        for item in items:
            writer.writerow(flatten(item))
            written += 1
    return written
