"""Request and result models.

Request models validate every rule the API documentation states when they are
built, so an invalid one cannot exist; each failure is a ``ValidationError``
naming the field, with the Capillary code the server would have answered.
Result models are lenient: a value Capillary adds tomorrow must not crash a job
that only needs the ref id, so unknown enum values stay plain strings.

Attribute names are the snake_case of the wire names (``_iso`` for ``ISO``);
``standardMeta`` keys are snake_case on the wire already.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, TypeVar

import attrs

from ._enums import (
    EntityType,
    ExpiryType,
    ExpiryUpdateReasonType,
    IdentifierName,
    PointCategoryType,
    PointsAwardedRefType,
)
from ._exceptions import ValidationError

__all__ = [
    "CustomField",
    "Entity",
    "ExpiryDate",
    "ExpiryUpdate",
    "ExpiryUpdateEntry",
    "ExpiryUpdateResult",
    "ItemFailure",
    "PointsExpiryUpdateLog",
    "Redemption",
    "RedemptionUpdate",
    "StandardMeta",
]

# Capillary's codes for the rules below (see the updateExpiry and
# updateRedemption pages); 8941 is the whole-request refusal for a bad enum.
CODE_ENUM = 8941
CODE_EMPTY_REQUEST = 8931

_E = TypeVar("_E", bound=Any)

# A field marked NOT_ON_WIRE (the response's request id) is never (un)structured.
NOT_ON_WIRE = "capillary_async.not_on_wire"


def _not_on_wire() -> Any:
    return attrs.field(default=None, metadata={NOT_ON_WIRE: True})


# -- value checks shared by the converters ---------------------------------


def _enum(
    cls: type[_E], value: object, field: str, missing: int | None, invalid: int = CODE_ENUM
) -> _E:
    if isinstance(value, cls):
        return value
    if value is None or value == "":
        raise ValidationError(field, "is required", code=missing)
    if isinstance(value, str):
        member = cls._value2member_map_.get(value)
        if member is not None:
            return member  # type: ignore[no-any-return]
        allowed = ", ".join(m.value for m in cls)
        raise ValidationError(field, f"{value!r} is not one of [{allowed}]", code=invalid)
    raise ValidationError(field, f"expected a string, got {type(value).__name__}", code=invalid)


def _lenient_enum(cls: type[_E], value: object) -> _E | str | None:
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, str):
        member = cls._value2member_map_.get(value)
        return value if member is None else member
    return str(value)


_DIGITS = re.compile(r"[0-9]+")


def _positive_int(value: object, field: str, code: int | None, *, max_digits: int = 19) -> int:
    """A positive whole number; a string of digits (as CSV files carry) is accepted."""
    if value is None or value == "":
        raise ValidationError(field, "is required", code=code)
    if isinstance(value, bool):
        raise ValidationError(field, "must be a positive whole number, got a boolean", code=code)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise ValidationError(field, f"must be a positive whole number, got {value!r}", code=code)
    if number <= 0:
        raise ValidationError(field, f"must be a positive whole number, got {number}", code=code)
    if len(str(number)) > max_digits:
        raise ValidationError(field, f"must have at most {max_digits} digits", code=code)
    return number


def _required_str(value: object, field: str, code: int | None) -> str:
    if isinstance(value, bool):
        raise ValidationError(field, "must be a string, got a boolean", code=code)
    if isinstance(value, int):
        value = str(value)  # a numeric id or mobile number from a JSON file
    if not isinstance(value, str):
        if value is None:
            raise ValidationError(field, "is required", code=code)
        raise ValidationError(field, f"must be a string, got {type(value).__name__}", code=code)
    if not value.strip():
        raise ValidationError(field, "must not be empty", code=code)
    return value


def _optional_str(value: object, field: str, *, max_length: int | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if max_length is not None and len(value) > max_length:
        raise ValidationError(field, f"must be at most {max_length} characters, got {len(value)}")
    return value


def _string_map(value: object, field: str, code: int | None = None) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"must be an object of strings, got {type(value).__name__}")
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise ValidationError(field, f"keys must be non-empty strings, got {key!r}", code=code)
        if not isinstance(item, str):
            raise ValidationError(
                f"{field}.{key}", f"must be a string, got {type(item).__name__}", code=code
            )
        result[key] = item
    return result


# -- named converters: mypy's attrs plugin types __init__ from these ---------


def _identifier_name(value: IdentifierName | str) -> IdentifierName:
    return _enum(IdentifierName, value, "identifier_name", 8932)


def _identifier_value(value: str | int) -> str:
    return _required_str(value, "identifier_value", 8933)


def _program_id(value: int | str) -> int:
    return _positive_int(value, "program_id", 8934)


def _points_awarded_ref_id(value: int | str) -> int:
    return _positive_int(value, "points_awarded_ref_id", 8937)


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


def _custom_fields(value: Mapping[str, str] | None) -> dict[str, str] | None:
    return _string_map(value, "custom_fields")


def _expiry_type(value: ExpiryType | str) -> ExpiryType:
    return _enum(ExpiryType, value, "expiry_type", 8942)


def _expiry_value(value: str | int | date | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
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
        return str(value)
    raise ValidationError(
        "expiry_value", f"must be a string, date or int, got {type(value).__name__}", code=8942
    )


def _entity_type(value: EntityType | str) -> EntityType:
    return _enum(EntityType, value, "type", 1219, invalid=1212)


def _entity_identifier_type(value: str) -> str:
    return _required_str(value, "identifier_type", 1219)


def _entity_identifier_value(value: str | int) -> str:
    return _required_str(value, "identifier_value", 1219)


def _redemption_id(value: str | None) -> str | None:
    return _optional_str(value, "redemption_id")


def _external_reference_number(value: str | None) -> str | None:
    return _optional_str(value, "external_reference_number")


def _bill_id(value: int | str | None) -> int | None:
    return None if value is None else _positive_int(value, "bill_id", None)


def _bill_number(value: str | None) -> str | None:
    return _optional_str(value, "bill_number")


def _purpose(value: str | None) -> str | None:
    return _optional_str(value, "purpose", max_length=255)


def _lenient_ref_type(
    value: PointsAwardedRefType | str | None,
) -> PointsAwardedRefType | str | None:
    return _lenient_enum(PointsAwardedRefType, value)


def _lenient_reason_type(
    value: ExpiryUpdateReasonType | str | None,
) -> ExpiryUpdateReasonType | str | None:
    return _lenient_enum(ExpiryUpdateReasonType, value)


# -- request models ---------------------------------------------------------


@attrs.frozen(kw_only=True)
class StandardMeta:
    """Who raised and approved an expiry change, and why (``standardMeta``)."""

    who_raised: str | None = None
    who_approved: str | None = None
    reason_for_trigger: str | None = None

    def __attrs_post_init__(self) -> None:
        for name in ("who_raised", "who_approved", "reason_for_trigger"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValidationError(
                    f"standard_meta.{name}",
                    f"must be a string, got {type(value).__name__}",
                    code=8935,
                )


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
                    f"must be a date as YYYY-MM-DD for FIXED_DATE, got {value!r}",
                    code=8942,
                )
            try:
                date.fromisoformat(value)
            except ValueError:
                raise ValidationError(
                    "expiry_value", f"{value!r} is not a calendar date", code=8942
                ) from None
        elif not _DIGITS.fullmatch(value) or int(value) <= 0:
            raise ValidationError(
                "expiry_value",
                f"must be a positive whole number for {kind.value}, got {value!r}",
                code=8942,
            )

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


@attrs.frozen(kw_only=True)
class Entity:
    """The customer (or group, or fleet) a redemption belongs to."""

    type: EntityType = attrs.field(converter=_entity_type)
    identifier_type: str = attrs.field(converter=_entity_identifier_type)
    identifier_value: str = attrs.field(converter=_entity_identifier_value)


@attrs.frozen(kw_only=True)
class RedemptionUpdate:
    """The body of updateRedemption: which redemption, and the metadata to set.

    Exactly one of ``redemption_id`` / ``external_reference_number`` (749), and
    at least one of ``bill_id``, ``bill_number``, ``purpose``, ``custom_fields``
    (748).
    """

    entity: Entity
    redemption_id: str | None = attrs.field(default=None, converter=_redemption_id)
    external_reference_number: str | None = attrs.field(
        default=None, converter=_external_reference_number
    )
    bill_id: int | None = attrs.field(default=None, converter=_bill_id)
    bill_number: str | None = attrs.field(default=None, converter=_bill_number)
    purpose: str | None = attrs.field(default=None, converter=_purpose)
    custom_fields: dict[str, str] | None = attrs.field(default=None, converter=_custom_fields)

    def __attrs_post_init__(self) -> None:
        ids = [v for v in (self.redemption_id, self.external_reference_number) if v]
        if len(ids) != 1:
            raise ValidationError(
                "redemption_id",
                "exactly one of redemption_id and external_reference_number is needed"
                + (", got both" if len(ids) == 2 else ", got neither"),
                code=749,
            )
        if (
            self.bill_id is None
            and self.bill_number is None
            and self.purpose is None
            and not self.custom_fields
        ):
            raise ValidationError(
                "bill_id",
                "nothing to update: give at least one of bill_id, bill_number, purpose, "
                "custom_fields",
                code=748,
            )
        if not isinstance(self.entity, Entity):
            raise ValidationError("entity", "is required (an Entity)", code=1219)

    @property
    def idempotent(self) -> bool:
        """updateRedemption sets fields to given values: repeating it is safe."""
        return True


# -- result models ----------------------------------------------------------


@attrs.frozen(kw_only=True)
class CustomField:
    """One entry of a redemption's ``customFields`` list."""

    name: str
    value: str | None = None


@attrs.frozen(kw_only=True)
class Redemption:
    """updateRedemption's answer: the redemption as it now stands.

    ``redemption_time`` and ``points_redemption_time`` are kept as the epoch
    milliseconds Capillary sends; ``redemption_date`` is parsed.
    """

    id: int | None = None
    program_id: int | None = None
    points_redeemed: float | None = None
    bill_id: int | None = None
    bill_number: str | None = None
    validation_code: str | None = None
    notes: str | None = None
    redemption_time: int | None = None
    points_redemption_time: int | None = None
    till_id: int | None = None
    till_name: str | None = None
    point_deduction_list: list[Any] = attrs.field(factory=list)
    redemption_id: str | None = None
    custom_fields: list[CustomField] = attrs.field(factory=list)
    customer_id: int | None = None
    redemption_purpose: str | None = None
    redemption_date: datetime | None = None
    warnings: list[Any] = attrs.field(factory=list)
    request_id: str | None = _not_on_wire()


@attrs.frozen(kw_only=True)
class PointsExpiryUpdateLog:
    """What changed for one points-awarded record.

    Legacy date fields (``old_expiry_date``...) stay the strings Capillary sent;
    their ``_iso`` twins are timezone-aware datetimes.
    """

    pa_type: PointsAwardedRefType | str | None = attrs.field(
        default=None, converter=_lenient_ref_type
    )
    pa_id: int | None = None
    expiry_update_reason_type: ExpiryUpdateReasonType | str | None = attrs.field(
        default=None, converter=_lenient_reason_type
    )
    expiry_update_reason_note: str | None = None
    old_expiry_date: str | None = None
    old_expiry_date_iso: datetime | None = None
    new_expiry_date: str | None = None
    new_expiry_date_iso: datetime | None = None
    event_log_id: int | None = None
    event_date: str | None = None
    event_date_iso: datetime | None = None
    standard_meta: StandardMeta | None = None
    custom_meta: dict[str, str] | None = None


@attrs.frozen(kw_only=True)
class ExpiryUpdateEntry:
    """One success entry of updateExpiry's answer."""

    customer_id: int | None = None
    program_id: int | None = None
    currency_name: str | None = None
    points_expiry_update_logs: PointsExpiryUpdateLog | None = None

    @property
    def ref(self) -> tuple[int | None, PointsAwardedRefType | str | None]:
        """The points-awarded record this entry reports on (``paId``, ``paType``)."""
        logs = self.points_expiry_update_logs
        return (None, None) if logs is None else (logs.pa_id, logs.pa_type)


@attrs.frozen(kw_only=True)
class ItemFailure:
    """One per-item entry of updateExpiry's ``failures``."""

    points_awarded_ref_id: int | None = None
    points_awarded_ref_type: PointsAwardedRefType | str | None = attrs.field(
        default=None, converter=_lenient_ref_type
    )
    error_code: int | None = None
    error_message: str | None = None

    @property
    def ref(self) -> tuple[int | None, PointsAwardedRefType | str | None]:
        """The points-awarded record that failed."""
        return (self.points_awarded_ref_id, self.points_awarded_ref_type)


@attrs.frozen(kw_only=True)
class ExpiryUpdateResult:
    """updateExpiry's answer, whichever of the documented envelopes carried it.

    ``updates`` are the applied items, ``failures`` the refused ones. ``errors``
    holds a top-level ``errors`` envelope that came together with per-item
    data (one without item data raises instead).
    """

    updates: list[ExpiryUpdateEntry] = attrs.field(factory=list)
    failures: list[ItemFailure] = attrs.field(factory=list)
    warnings: list[Any] = attrs.field(factory=list)
    errors: list[Any] = attrs.field(factory=list)
    request_id: str | None = _not_on_wire()
