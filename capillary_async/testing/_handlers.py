"""The two points endpoints' logic, as Capillary documents it.

It reads raw JSON with its own rules (never the SDK's models), so the SDK's
validation is tested against an independent reading of the docs. A mixin of
``Emulator``: the HTTP plumbing stays in ``_server``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Literal

from ._clock import EmulatorClock, _add_months, _iso, _legacy
from ._store import REF_TYPES, Award, Customer, Stats, Store, end_of_day

Envelope = Literal["currencyExpiryUpdateResponse", "updateCurrencyExpiryDateResponse", "entity"]
ENVELOPES: tuple[Envelope, ...] = (
    "currencyExpiryUpdateResponse",
    "updateCurrencyExpiryDateResponse",
    "entity",
)

IDENTIFIER_NAMES = frozenset({"mobile", "id", "externalId", "email"})
EXPIRY_TYPES = ("FIXED_DATE", "FIXED_DAYS", "FIXED_MONTHS", "IMMEDIATE")
REASON_TYPES = ("EARLY_EXPIRY", "EXTEND_EXPIRY")
CATEGORY_TYPES = ("REGULAR", "PROMISED")
ENTITY_TYPES = frozenset({"CUSTOMER", "USERGROUP2", "FLEET"})
STANDARD_META_KEYS = frozenset({"who_raised", "who_approved", "reason_for_trigger"})
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DIGITS = re.compile(r"[0-9]+")


# -- responses ----------------------------------------------------------------------


class _Refusal(Exception):  # noqa: N818 - internal control flow, not an error
    """A request refused as a whole: answered with a v2 ``errors`` envelope."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _errors(code: int, message: str) -> dict[str, Any]:
    return {"errors": [{"status": False, "code": code, "message": message}]}


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < 2**63 else None  # a Java long, as Capillary stores ids
    if isinstance(value, str) and len(value) <= 19 and _DIGITS.fullmatch(value):
        number = int(value)
        return number if 0 < number < 2**63 else None
    return None


class _ItemFailure(Exception):  # noqa: N818 - internal control flow
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- the endpoints ----------------------------------------------------------------------


class _PointsHandlers:
    """updateExpiry and updateRedemption on ``Emulator``'s state and settings."""

    store: Store
    stats: Stats
    clock: EmulatorClock
    tz: tzinfo
    envelope: Envelope
    partial_status: int
    max_items: int
    _event_log_ids: Iterator[int]

    # -- updateExpiry ---------------------------------------------------------------------

    def _update_expiry(self, body: Any, request_id: str) -> tuple[int, Any]:
        items = body.get("expiryDateUpdateRequest") if isinstance(body, Mapping) else None
        if not isinstance(items, list) or not items:
            raise _Refusal(8931, "Points expiry update request is invalid or empty")
        if len(items) > self.max_items:
            raise _Refusal(
                8931,
                f"Too many items in expiryDateUpdateRequest: {len(items)}, "
                f"at most {self.max_items} per request",
            )
        for item in items:
            _check_enums(item)
        self.stats.items += len(items)
        now = self.clock.now().astimezone(self.tz)
        updates: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for item in items:
            try:
                updates.append(self._apply_expiry(item, now, request_id))
            except _ItemFailure as failure:
                source = item if isinstance(item, Mapping) else {}
                failures.append(
                    {
                        "pointsAwardedRefId": source.get("pointsAwardedRefId"),
                        "pointsAwardedRefType": source.get("pointsAwardedRefType"),
                        "errorCode": failure.code,
                        "errorMessage": failure.message,
                    }
                )
        status = self.partial_status if failures else 200
        return status, self._expiry_envelope(updates, failures)

    def _expiry_envelope(
        self, updates: list[dict[str, Any]], failures: list[dict[str, Any]]
    ) -> dict[str, Any]:
        if self.envelope == "entity":
            return {
                "entity": {"updateCurrencyExpiryDateResponse": updates, "failures": failures},
                "errors": [],
                "warnings": [],
            }
        payload: dict[str, Any] = {self.envelope: updates}
        if failures:
            payload["failures"] = failures
        return payload

    def _find(self, item: Mapping[str, Any]) -> tuple[Customer, Award]:
        """Validate an item's fields and find its customer and record (or fail it)."""
        name = item.get("identifierName")
        if name not in IDENTIFIER_NAMES:
            raise _ItemFailure(8932, "Identifier name is required for the points expiry update")
        value = item.get("identifierValue")
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise _ItemFailure(8933, "Identifier value is required for the points expiry update")
        program_id = _positive_int(item.get("programId"))
        if program_id is None:
            raise _ItemFailure(8934, "Program ID is required for points expiry update")
        meta = item.get("standardMeta")
        if meta is not None and (
            not isinstance(meta, Mapping)
            or not set(meta) <= STANDARD_META_KEYS
            or not all(isinstance(v, str) for v in meta.values())
        ):
            raise _ItemFailure(8935, "Invalid standard meta key")
        ref_id = _positive_int(item.get("pointsAwardedRefId"))
        if ref_id is None:
            raise _ItemFailure(8937, "Points awarded reference ID is required")
        ref_type = item.get("pointsAwardedRefType")
        if ref_type is None:
            raise _ItemFailure(8938, "Points awarded reference type is required")
        customer = self.store.find_customer(name, value)
        if customer is None:
            raise _ItemFailure(8015, "Customer not found for the given identifiers")
        award = self.store.awards.get((ref_id, ref_type))
        if award is None or award.customer_id != customer.id or award.program_id != program_id:
            raise _ItemFailure(
                3034, f"No points awarded found for reference type {ref_type} and ID {ref_id}"
            )
        return customer, award

    def _new_expiry(self, item: Mapping[str, Any], now: datetime) -> datetime:
        expiry = item.get("expiryDate")
        if not isinstance(expiry, Mapping) or expiry.get("expiryType") is None:
            raise _ItemFailure(8942, "Points expiry date is mandatory")
        kind, value = expiry["expiryType"], expiry.get("expiryValue")
        if kind == "IMMEDIATE":
            return now.replace(microsecond=0)
        if kind == "FIXED_DATE":
            if not isinstance(value, str) or not _DATE.fullmatch(value):
                raise _ItemFailure(8942, "Points expiry date is mandatory")
            try:
                day = date.fromisoformat(value)
            except ValueError:
                raise _ItemFailure(8942, "Points expiry date is mandatory") from None
            new = datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=self.tz)
        else:
            count = _positive_int(value)
            if count is None:
                raise _ItemFailure(8942, "Points expiry date is mandatory")
            if kind == "FIXED_DAYS":
                new = end_of_day(now + timedelta(days=count), self.tz)
            else:
                new = end_of_day(_add_months(now, count), self.tz)
        if new <= now:
            raise _ItemFailure(3037, "Invalid expiry date: Expiry date must be in the future")
        return new

    def _apply_expiry(self, item: Any, now: datetime, request_id: str) -> dict[str, Any]:
        if not isinstance(item, Mapping):
            raise _ItemFailure(8931, "Points expiry update request is invalid or empty")
        customer, award = self._find(item)
        new = self._new_expiry(item, now)
        old = award.expiry.astimezone(self.tz)
        award.expiry = new
        self.store.audit.expiry_applied[award.key] += 1
        self.store.audit.record(request_id, "expiry", award.key)
        logs: dict[str, Any] = {"paType": award.ref_type, "paId": award.ref_id}
        for key in ("expiryUpdateReasonType", "expiryUpdateReasonNote"):
            if item.get(key) is not None:
                logs[key] = item[key]
        logs.update(
            {
                "oldExpiryDate": _legacy(old),
                "oldExpiryDateISO": _iso(old),
                "newExpiryDate": _legacy(new),
                "newExpiryDateISO": _iso(new),
                "eventLogId": next(self._event_log_ids),
                "eventDate": _legacy(now),
                "eventDateISO": _iso(now.replace(microsecond=0)),
            }
        )
        for key in ("standardMeta", "customMeta"):
            if item.get(key) is not None:
                logs[key] = item[key]
        return {
            "customerId": customer.id,
            "programId": award.program_id,
            "currencyName": award.currency_name,
            "pointsExpiryUpdateLogs": logs,
        }

    # -- updateRedemption --------------------------------------------------------------------

    def _update_redemption(self, body: Any, request_id: str) -> tuple[int, Any]:
        if not isinstance(body, Mapping):
            raise _Refusal(750, "Redemption update failed: the body must be a JSON object")
        redemption_id = body.get("redemptionId") or None
        external = body.get("externalReferenceNumber") or None
        if (redemption_id is None) == (external is None):
            raise _Refusal(749, "Exactly one redemption identifier needed to identify redemption.")
        fields = ("billId", "billNumber", "purpose", "customFields")
        if all(body.get(key) is None for key in fields):
            raise _Refusal(748, "No metadata update requested.")
        entity = body.get("entity")
        if not isinstance(entity, Mapping) or not all(
            entity.get(key) for key in ("type", "identifierType", "identifierValue")
        ):
            raise _Refusal(1219, "Entity details not set/invalid.")
        if entity["type"] not in ENTITY_TYPES:
            raise _Refusal(1212, "Entity type passed is not valid.")
        bill_id = body.get("billId")
        if bill_id is not None and _positive_int(bill_id) is None:
            raise _Refusal(750, "Redemption update failed: billId must be a positive whole number")
        purpose = body.get("purpose")
        if purpose is not None and (not isinstance(purpose, str) or len(purpose) > 255):
            raise _Refusal(750, "Redemption update failed: purpose must be at most 255 characters")
        custom = body.get("customFields")
        if custom is not None and (
            not isinstance(custom, Mapping) or not all(isinstance(v, str) for v in custom.values())
        ):
            raise _Refusal(750, "Redemption update failed: customFields must map names to strings")
        record = self.store.find_redemption(redemption_id, external)
        customer = self.store.find_customer(
            str(entity["identifierType"]), str(entity["identifierValue"])
        )
        if (
            record is None
            or entity["type"] != "CUSTOMER"
            or customer is None
            or customer.id != record.customer_id
        ):
            raise _Refusal(8015, "Invalid or malformed identifier provided in request body.")
        for name in custom or {}:
            if name not in record.custom_fields:
                raise _Refusal(
                    750,
                    f"Redemption update failed: custom field {name!r} was not set when the "
                    "points were redeemed",
                )
        if bill_id is not None:
            record.bill_id = int(bill_id)
        if body.get("billNumber") is not None:
            record.bill_number = str(body["billNumber"])
        if purpose is not None:
            record.purpose = purpose
        if custom:
            record.custom_fields.update(custom)
        self.store.audit.redemption_applied[record.redemption_id] += 1
        self.store.audit.record(request_id, "redemption", record.redemption_id)
        return 200, self._redemption_body(record)

    def _redemption_body(self, record: Any) -> dict[str, Any]:
        redeemed_at = datetime.fromtimestamp(record.redemption_time_ms / 1000, tz=self.tz)
        payload: dict[str, Any] = {
            "id": record.id,
            "programId": record.program_id,
            "pointsRedeemed": record.points_redeemed,
            "billId": record.bill_id,
            "billNumber": record.bill_number,
            "validationCode": record.validation_code,
            "notes": record.notes,
            "redemptionTime": record.redemption_time_ms,
            "pointsRedemptionTime": record.redemption_time_ms - 19_800_000,
            "tillId": record.till_id,
            "tillName": record.till_name,
            "pointDeductionList": [],
            "redemptionId": record.redemption_id,
            "customerId": record.customer_id,
            "redemptionPurpose": record.purpose,
            "redemptionDate": _iso(redeemed_at),
            "warnings": [],
        }
        if record.custom_fields:
            payload["customFields"] = [
                {"name": name, "value": value} for name, value in record.custom_fields.items()
            ]
        return payload


def _check_enums(item: Any) -> None:
    """Enum violations refuse the whole request (8941), as the docs show."""
    if not isinstance(item, Mapping):
        return
    expiry = item.get("expiryDate")
    checks: list[tuple[Any, tuple[str, ...]]] = [
        (item.get("pointsAwardedRefType"), REF_TYPES),
        (item.get("expiryUpdateReasonType"), REASON_TYPES),
        (item.get("pointCategoryType"), CATEGORY_TYPES),
        (expiry.get("expiryType") if isinstance(expiry, Mapping) else None, EXPIRY_TYPES),
    ]
    for value, allowed in checks:
        if value is not None and value not in allowed:
            raise _Refusal(8941, f"Valid values are: [{', '.join(allowed)}]")
