"""updateExpiry's models: the strict request items and the lenient answer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import attrs

from ._enums import (
    ExpiryType,
    ExpiryUpdateReasonType,
    IdentifierName,
    PointCategoryType,
    PointsAwardedRefType,
)
from ._exceptions import ValidationError
from ._models_common import (
    _DIGITS,
    JAVA_LONG_MAX,
    JSONValue,
    _as_sent,
    _digits_to_long,
    _enum,
    _kind,
    _lenient_enum,
    _not_on_wire,
    _optional_str,
    _positive_long,
    _quote,
    _read_datetime,
    _read_int,
    _required_str,
    _string_map,
    _too_large,
    _utf8,
)

# -- named converters: mypy's attrs plugin types __init__ from these ---------


def _identifier_name(value: IdentifierName | str) -> IdentifierName:
    # The updateExpiry page gives 8932 for an invalid identifierName as well as a missing one.
    return _enum(IdentifierName, value, "identifier_name", 8932, invalid=8932)


def _identifier_value(value: str | int) -> str:
    return _required_str(value, "identifier_value", 8933)


def _program_id(value: int | str) -> int:
    return _positive_long(value, "program_id", 8934)


def _points_awarded_ref_id(value: int | str) -> int:
    return _positive_long(value, "points_awarded_ref_id", 8937)


def _points_awarded_ref_type(value: PointsAwardedRefType | str) -> PointsAwardedRefType:
    return _enum(PointsAwardedRefType, value, "points_awarded_ref_type", 8938)


def _point_category_type(value: PointCategoryType | str | None) -> PointCategoryType | None:
    return None if value is None else _enum(PointCategoryType, value, "point_category_type", None)


def _reason_type(value: ExpiryUpdateReasonType | str | None) -> ExpiryUpdateReasonType | None:
    if value is None:
        return None
    return _enum(ExpiryUpdateReasonType, value, "expiry_update_reason_type", None)


def _reason_note(value: str | None) -> str | None:
    return _optional_str(value, "expiry_update_reason_note")


def _currency_name(value: str | None) -> str | None:
    return _optional_str(value, "currency_name")


def _custom_meta(value: Mapping[str, str] | None) -> dict[str, str] | None:
    return _string_map(value, "custom_meta")


def _who_raised(value: str | None) -> str | None:
    return _optional_str(value, "who_raised", code=8935)


def _who_approved(value: str | None) -> str | None:
    return _optional_str(value, "who_approved", code=8935)


def _reason_for_trigger(value: str | None) -> str | None:
    return _optional_str(value, "reason_for_trigger", code=8935)


def _expiry_type(value: ExpiryType | str) -> ExpiryType:
    return _enum(ExpiryType, value, "expiry_type", 8942)


def _expiry_value(value: str | int | date | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _utf8(value, "expiry_value", 8942)
    if isinstance(value, bool):
        raise ValidationError(
            "expiry_value", "must be a date or a number, got a boolean", code=8942
        )
    if isinstance(value, datetime):
        raise ValidationError(
            "expiry_value", "must be a date (YYYY-MM-DD), not a datetime", code=8942
        )
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int):
        if abs(value) > JAVA_LONG_MAX:  # also keeps str() off a 5,000-digit int
            raise _too_large("expiry_value", 8942)
        return str(value)
    raise ValidationError(
        "expiry_value", f"must be a string, date or int, got {_kind(value)}", code=8942
    )


def _lenient_ref_type(value: Any) -> PointsAwardedRefType | JSONValue:
    return _lenient_enum(PointsAwardedRefType, value)


def _lenient_reason_type(value: Any) -> ExpiryUpdateReasonType | JSONValue:
    return _lenient_enum(ExpiryUpdateReasonType, value)


# -- request models ---------------------------------------------------------


@attrs.frozen(kw_only=True)
class StandardMeta:
    """Who raised and approved an expiry change, and why (``standardMeta``)."""

    who_raised: str | None = attrs.field(default=None, converter=_who_raised)
    who_approved: str | None = attrs.field(default=None, converter=_who_approved)
    reason_for_trigger: str | None = attrs.field(default=None, converter=_reason_for_trigger)


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@attrs.frozen(kw_only=True)
class ExpiryDate:
    """The new expiry: a date (FIXED_DATE), a count (FIXED_DAYS / FIXED_MONTHS) or now.

    ``expiry_value`` is kept as its wire string; a ``date`` or ``int`` is
    converted. Dates are read by Capillary in the cluster's timezone.
    """

    expiry_type: ExpiryType = attrs.field(converter=_expiry_type)
    expiry_value: str | None = attrs.field(default=None, converter=_expiry_value)

    def __attrs_post_init__(self) -> None:
        kind, value = self.expiry_type, self.expiry_value
        if kind is ExpiryType.IMMEDIATE:
            return
        if value is None or not value.strip():
            raise ValidationError("expiry_value", f"is required for {kind.value}", code=8942)
        if kind is ExpiryType.FIXED_DATE:
            if not _ISO_DATE.fullmatch(value):
                raise ValidationError(
                    "expiry_value",
                    f"must be a date as YYYY-MM-DD for FIXED_DATE, got {_quote(value)}",
                    code=8942,
                )
            try:
                date.fromisoformat(value)
            except ValueError:
                raise ValidationError(
                    "expiry_value", f"{_quote(value)} is not a calendar date", code=8942
                ) from None
        elif not _DIGITS.fullmatch(value) or (number := _digits_to_long(value)) == 0:
            raise ValidationError(
                "expiry_value",
                f"must be a positive whole number for {kind.value}, got {_quote(value)}",
                code=8942,
            )
        elif number is None:
            raise _too_large("expiry_value", 8942)

    @property
    def idempotent(self) -> bool:
        """Whether applying this expiry twice leaves the same state as once."""
        return self.expiry_type.idempotent


@attrs.frozen(kw_only=True)
class ExpiryUpdate:
    """One item of updateExpiry's ``expiryDateUpdateRequest``."""

    identifier_name: IdentifierName = attrs.field(converter=_identifier_name)
    identifier_value: str = attrs.field(converter=_identifier_value)
    program_id: int = attrs.field(converter=_program_id)
    points_awarded_ref_id: int = attrs.field(converter=_points_awarded_ref_id)
    points_awarded_ref_type: PointsAwardedRefType = attrs.field(converter=_points_awarded_ref_type)
    expiry_date: ExpiryDate
    currency_name: str | None = attrs.field(default=None, converter=_currency_name)
    point_category_type: PointCategoryType | None = attrs.field(
        default=None, converter=_point_category_type
    )
    expiry_update_reason_type: ExpiryUpdateReasonType | None = attrs.field(
        default=None, converter=_reason_type
    )
    expiry_update_reason_note: str | None = attrs.field(default=None, converter=_reason_note)
    standard_meta: StandardMeta | None = None
    custom_meta: dict[str, str] | None = attrs.field(default=None, converter=_custom_meta)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.expiry_date, ExpiryDate):
            raise ValidationError("expiry_date", "is required (an ExpiryDate)", code=8942)
        if self.standard_meta is not None and not isinstance(self.standard_meta, StandardMeta):
            raise ValidationError("standard_meta", "must be a StandardMeta", code=8935)

    @property
    def ref(self) -> tuple[int, PointsAwardedRefType]:
        """The points-awarded record this item changes: how results are matched to it."""
        return (self.points_awarded_ref_id, self.points_awarded_ref_type)

    @property
    def idempotent(self) -> bool:
        """Whether sending this item twice leaves the same state as once."""
        return self.expiry_date.expiry_type.idempotent


# -- result models ----------------------------------------------------------


@attrs.frozen(kw_only=True)
class PointsExpiryUpdateLog:
    """What changed for one points-awarded record.

    Legacy date fields (``old_expiry_date``...) stay the strings Capillary sent;
    their ``_iso`` twins are timezone-aware datetimes. ``standard_meta`` and
    ``custom_meta`` are the JSON as sent: the answer may carry keys a request
    may not.
    """

    pa_type: PointsAwardedRefType | JSONValue = attrs.field(
        default=None, converter=_lenient_ref_type
    )
    pa_id: int | JSONValue = attrs.field(default=None, converter=_read_int)
    expiry_update_reason_type: ExpiryUpdateReasonType | JSONValue = attrs.field(
        default=None, converter=_lenient_reason_type
    )
    expiry_update_reason_note: str | JSONValue = attrs.field(default=None, converter=_as_sent)
    old_expiry_date: str | JSONValue = attrs.field(default=None, converter=_as_sent)
    old_expiry_date_iso: datetime | JSONValue = attrs.field(default=None, converter=_read_datetime)
    new_expiry_date: str | JSONValue = attrs.field(default=None, converter=_as_sent)
    new_expiry_date_iso: datetime | JSONValue = attrs.field(default=None, converter=_read_datetime)
    event_log_id: int | JSONValue = attrs.field(default=None, converter=_read_int)
    event_date: str | JSONValue = attrs.field(default=None, converter=_as_sent)
    event_date_iso: datetime | JSONValue = attrs.field(default=None, converter=_read_datetime)
    standard_meta: Any = attrs.field(default=None, converter=_as_sent)
    custom_meta: Any = attrs.field(default=None, converter=_as_sent)


@attrs.frozen(kw_only=True)
class ExpiryUpdateEntry:
    """One success entry of updateExpiry's answer.

    ``points_expiry_update_logs`` is a ``PointsExpiryUpdateLog`` when the
    answer has an object there, and otherwise the JSON as sent.
    """

    customer_id: int | JSONValue = attrs.field(default=None, converter=_read_int)
    program_id: int | JSONValue = attrs.field(default=None, converter=_read_int)
    currency_name: str | JSONValue = attrs.field(default=None, converter=_as_sent)
    points_expiry_update_logs: PointsExpiryUpdateLog | JSONValue = None

    @property
    def ref(self) -> tuple[int | JSONValue, PointsAwardedRefType | JSONValue]:
        """The points-awarded record this entry reports on (``paId``, ``paType``)."""
        logs = self.points_expiry_update_logs
        if not isinstance(logs, PointsExpiryUpdateLog):
            return (None, None)
        return (logs.pa_id, logs.pa_type)


@attrs.frozen(kw_only=True)
class ItemFailure:
    """One per-item entry of updateExpiry's ``failures``."""

    points_awarded_ref_id: int | JSONValue = attrs.field(default=None, converter=_read_int)
    points_awarded_ref_type: PointsAwardedRefType | JSONValue = attrs.field(
        default=None, converter=_lenient_ref_type
    )
    error_code: int | JSONValue = attrs.field(default=None, converter=_read_int)
    error_message: str | JSONValue = attrs.field(default=None, converter=_as_sent)

    @property
    def ref(self) -> tuple[int | JSONValue, PointsAwardedRefType | JSONValue]:
        """The points-awarded record that failed."""
        return (self.points_awarded_ref_id, self.points_awarded_ref_type)


@attrs.frozen(kw_only=True)
class ExpiryUpdateResult:
    """updateExpiry's answer, whichever of the documented envelopes carried it.

    ``updates`` are the applied items, ``failures`` the refused ones; an entry
    of either list that is not a JSON object names no item and is kept as the
    JSON it is, in its place. ``warnings`` and ``errors`` (a top-level
    ``errors`` envelope that came together with per-item data; one without item
    data raises instead) are the JSON as sent, ``[]`` when absent or null.
    """

    updates: list[ExpiryUpdateEntry | JSONValue] = attrs.field(factory=list)
    failures: list[ItemFailure | JSONValue] = attrs.field(factory=list)
    warnings: Any = attrs.field(factory=list)
    errors: Any = attrs.field(factory=list)
    request_id: str | None = _not_on_wire()
