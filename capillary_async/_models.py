"""Request and result models.

Request models validate every rule the API documentation states when they are
built, so an invalid one cannot exist; each failure is a ``ValidationError``
naming the field, with the Capillary code the server would have answered.
Messages quote input only bounded and escaped: a 2 MB value or a lone
surrogate from a ``"\\ud800"`` JSON escape never ends up in a log line whole.

Result models are lenient: an answer the server has already applied must never
become an exception because one of its fields has an odd shape. Fields the docs
type "Object" (``warnings``, ``standardMeta``...) keep the JSON exactly as it
came; scalars are converted when they have the expected shape (``"1"`` for an
int field becomes 1) and are otherwise kept as the JSON value they were, so
their annotations include ``JSONValue``. Unknown enum values stay plain strings.

Attribute names are the snake_case of the wire names (``_iso`` for ``ISO``);
``standardMeta`` keys are snake_case on the wire already.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, TypeAlias, TypeVar

import attrs

from ._enums import (
    EntityType,
    ExpiryType,
    ExpiryUpdateReasonType,
    IdentifierName,
    PointCategoryType,
    PointsAwardedRefType,
)
from ._exceptions import ValidationError, excerpt

__all__ = [
    "JAVA_LONG_MAX",
    "CustomField",
    "Entity",
    "ExpiryDate",
    "ExpiryUpdate",
    "ExpiryUpdateEntry",
    "ExpiryUpdateResult",
    "ItemFailure",
    "JSONValue",
    "PointsExpiryUpdateLog",
    "Redemption",
    "RedemptionUpdate",
    "StandardMeta",
    "parse_datetime",
]

# Capillary's codes for the rules below (see the updateExpiry and
# updateRedemption pages); 8941 is the whole-request refusal for a bad enum.
CODE_ENUM = 8941
CODE_EMPTY_REQUEST = 8931

#: Ids and day/month counts are Java longs on the server: a larger number could
#: only be refused there, or worse, wrap around.
JAVA_LONG_MAX = 2**63 - 1
_LONG_DIGITS = len(str(JAVA_LONG_MAX))

#: Any value ``json.loads`` can give: what a lenient result field keeps when it
#: cannot read the value as its documented type.
JSONValue: TypeAlias = bool | int | float | str | list[Any] | dict[str, Any] | None

_E = TypeVar("_E", bound=Any)

# A field marked NOT_ON_WIRE (the response's request id) is never (un)structured.
NOT_ON_WIRE = "capillary_async.not_on_wire"


def _not_on_wire() -> Any:
    return attrs.field(default=None, metadata={NOT_ON_WIRE: True})


# -- quoting input in messages ------------------------------------------------

_QUOTED = 60


def _quote(text: str) -> str:
    """``text`` for an error message: cut short, and escaped where unprintable.

    ``repr`` escapes lone surrogates (and control characters), so the message
    can always be written to a UTF-8 log, CSV or journal.
    """
    if len(text) <= _QUOTED:
        return repr(text)
    return f"{text[:_QUOTED]!r}... ({len(text) - _QUOTED:,} more characters)"


def _segment(key: str) -> str:
    """A user-chosen key (a ``customMeta`` name) as part of a field path."""
    return excerpt(key, _QUOTED)


def _kind(value: object) -> str:
    """What a wrongly typed value is, without printing it (it may be huge or deeply nested)."""
    return type(value).__name__


# -- value checks shared by the converters ---------------------------------


def _utf8(value: str, field: str, code: int | None, *, what: str = "") -> str:
    """Refuse text that cannot be sent as UTF-8: a lone surrogate (a ``"\\ud800"`` escape).

    ``isascii`` is O(1) in CPython, so the common case costs nothing.
    """
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(
                field,
                f"{what}holds a lone surrogate ({value[exc.start]!a}) at position {exc.start}, "
                "which cannot be sent as UTF-8 text",
                code=code,
            ) from None
    return value


def _enum(
    cls: type[_E], value: object, field: str, missing: int | None, invalid: int = CODE_ENUM
) -> _E:
    if isinstance(value, cls):
        return value
    if value is None or (isinstance(value, str) and not value):
        raise ValidationError(field, "is required", code=missing)
    if isinstance(value, str):
        member = cls._value2member_map_.get(value)
        if member is not None:
            return member  # type: ignore[no-any-return]
        allowed = ", ".join(m.value for m in cls)
        raise ValidationError(field, f"{_quote(value)} is not one of [{allowed}]", code=invalid)
    raise ValidationError(field, f"expected a string, got {_kind(value)}", code=invalid)


_DIGITS = re.compile(r"[0-9]+")
# Python's default int max str digits, applied whatever the interpreter's own
# setting: with the limit lifted, int() and str() past it take quadratic time.
_MAX_INT_TEXT = 4300
_MAX_INT = 10**_MAX_INT_TEXT


def _digits_to_long(text: str) -> int | None:
    """The number a string of ASCII digits spells, or None above ``JAVA_LONG_MAX``.

    Counting digits first keeps ``int()`` away from a 5,000-digit string, which
    would raise a plain ValueError (Python's int max str digits).
    """
    significant = text.lstrip("0")
    if len(significant) > _LONG_DIGITS:
        return None
    number = int(significant or "0")
    return number if number <= JAVA_LONG_MAX else None


def _too_large(field: str, code: int | None) -> ValidationError:
    return ValidationError(
        field,
        f"must be at most {JAVA_LONG_MAX} (2**63-1, the server stores it as a 64-bit long)",
        code=code,
    )


def _positive_long(value: object, field: str, code: int | None) -> int:
    """A positive whole number that fits a Java long; digit strings (as CSV files carry) too."""
    if type(value) is int and 0 < value <= JAVA_LONG_MAX:  # the bulk path's common case
        return value
    if value is None or (isinstance(value, str) and not value):
        raise ValidationError(field, "is required", code=code)
    if isinstance(value, bool):
        raise ValidationError(field, "must be a positive whole number, got a boolean", code=code)
    if isinstance(value, int):
        number: int | None = value
    elif isinstance(value, str):
        text = value.strip()
        if not _DIGITS.fullmatch(text):
            raise ValidationError(
                field, f"must be a positive whole number, got {_quote(value)}", code=code
            )
        number = _digits_to_long(text)
    else:
        shown = repr(value) if isinstance(value, float) else _kind(value)
        raise ValidationError(field, f"must be a positive whole number, got {shown}", code=code)
    if number is None or number > JAVA_LONG_MAX:
        raise _too_large(field, code)
    if number <= 0:
        got = "0" if number == 0 else "a negative number"
        raise ValidationError(field, f"must be a positive whole number, got {got}", code=code)
    return number


def _required_str(value: object, field: str, code: int | None) -> str:
    if type(value) is str and value.isascii() and value.strip():
        return value  # the common case, checked with the cheapest tests
    if isinstance(value, bool):
        raise ValidationError(field, "must be a string, got a boolean", code=code)
    if isinstance(value, int):
        # A numeric id or mobile number from a JSON file. A number past Python's
        # int-to-text digit limit is no identifier, and str() of it would raise
        # (or, with the limit lifted, take quadratic time).
        if not -_MAX_INT < value < _MAX_INT:
            raise ValidationError(field, "must be a string, got a huge number", code=code)
        try:
            value = str(value)
        except ValueError:  # an interpreter with a lower int max str digits
            raise ValidationError(field, "must be a string, got a huge number", code=code) from None
    if not isinstance(value, str):
        if value is None:
            raise ValidationError(field, "is required", code=code)
        raise ValidationError(field, f"must be a string, got {_kind(value)}", code=code)
    if not value.strip():
        raise ValidationError(field, "must not be empty", code=code)
    return _utf8(value, field, code)


def _optional_str(
    value: object, field: str, *, max_length: int | None = None, code: int | None = None
) -> str | None:
    if value is None:
        return None
    if type(value) is str and max_length is None and value.isascii():
        return value
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {_kind(value)}", code=code)
    if max_length is not None and len(value) > max_length:
        raise ValidationError(
            field, f"must be at most {max_length} characters, got {len(value)}", code=code
        )
    return _utf8(value, field, code)


def _string_map(value: object, field: str, code: int | None = None) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"must be an object of strings, got {_kind(value)}")
    result: dict[str, str] = {}
    for key, item in value.items():
        if type(key) is str and type(item) is str and key and key.isascii() and item.isascii():
            result[key] = item
            continue
        if not isinstance(key, str):
            raise ValidationError(field, f"keys must be strings, got {_kind(key)}", code=code)
        if not key:
            raise ValidationError(field, "keys must not be empty", code=code)
        _utf8(key, field, code, what="a key ")
        if not isinstance(item, str):
            raise ValidationError(
                f"{field}.{_segment(key)}", f"must be a string, got {_kind(item)}", code=code
            )
        result[key] = _utf8(item, f"{field}.{_segment(key)}", code)
    return result


# -- lenient readers for result fields ---------------------------------------
# Each takes the JSON as it came and never raises; each is idempotent, since
# ``attrs.evolve`` (adding the request id) runs it again on its own output.

_INT_TEXT = re.compile(r"-?[0-9]+")
_FLOAT_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_EXACT_FLOAT = 2**53  # every int up to this is exactly a float


def _as_sent(value: Any) -> Any:
    """Keep the JSON value as it came (also tells cattrs not to structure it by type)."""
    return value


def _read_int(value: Any) -> int | JSONValue:
    """An int; a digit string (``"1"``) is read as one; anything else stays as sent."""
    if isinstance(value, str) and len(value) <= _MAX_INT_TEXT and _INT_TEXT.fullmatch(value):
        try:
            return int(value)
        except ValueError:  # an interpreter with a lower int max str digits
            return value
    return value  # type: ignore[no-any-return]


def _read_float(value: Any) -> float | JSONValue:
    """A float; an exact int or a decimal string (the docs type ``pointsRedeemed`` String) too."""
    if type(value) is int and -_EXACT_FLOAT <= value <= _EXACT_FLOAT:
        return float(value)
    if isinstance(value, str) and len(value) <= 64 and _FLOAT_TEXT.fullmatch(value):
        number = float(value)
        if math.isfinite(number):
            return number
    return value  # type: ignore[no-any-return]


def parse_datetime(value: Any) -> datetime:
    """ISO 8601 with ``Z`` or an offset (Python 3.10's ``fromisoformat`` refuses ``Z``)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO 8601 timestamp, got {_kind(value)}")
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def _read_datetime(value: Any) -> datetime | JSONValue:
    """An ISO 8601 timestamp as a datetime; anything else stays as sent."""
    if isinstance(value, str):
        try:
            return parse_datetime(value)
        except ValueError:  # not ISO 8601 (a surrogate's UnicodeEncodeError included)
            return value
    return value  # type: ignore[no-any-return]


def _lenient_enum(cls: type[_E], value: Any) -> _E | JSONValue:
    if isinstance(value, str) and not isinstance(value, cls):
        return cls._value2member_map_.get(value, value)  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]


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


def _custom_fields(value: Mapping[str, str] | None) -> dict[str, str] | None:
    return _string_map(value, "custom_fields")


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
    return None if value is None else _positive_long(value, "bill_id", None)


def _bill_number(value: str | None) -> str | None:
    return _optional_str(value, "bill_number")


def _purpose(value: str | None) -> str | None:
    return _optional_str(value, "purpose", max_length=255)


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


def _custom_field(entry: Any) -> CustomField:
    if isinstance(entry, CustomField):
        return entry
    if isinstance(entry, Mapping) and entry.keys() <= {"name", "value"}:
        return CustomField(name=entry.get("name"), value=entry.get("value"))
    return CustomField(value=entry)  # see Redemption: nothing is dropped


def _read_custom_fields(value: Any) -> list[CustomField]:
    if value is None:
        return []
    if isinstance(value, Mapping):  # the request's own shape, {name: value}
        return [CustomField(name=name, value=item) for name, item in value.items()]
    if isinstance(value, list):
        return [_custom_field(entry) for entry in value]
    return [CustomField(value=value)]


@attrs.frozen(kw_only=True)
class CustomField:
    """One entry of a redemption's ``customFields``; ``value`` is the JSON as sent."""

    name: str | JSONValue = attrs.field(default=None, converter=_as_sent)
    value: Any = attrs.field(default=None, converter=_as_sent)


@attrs.frozen(kw_only=True)
class Redemption:
    """updateRedemption's answer: the redemption as it now stands.

    ``redemption_time`` and ``points_redemption_time`` are kept as the epoch
    milliseconds Capillary sends (a string such as an ISO timestamp stays the
    string it is); ``redemption_date`` is parsed. ``point_deduction_list`` and
    ``warnings`` are the JSON as sent.

    ``custom_fields`` is always a list of ``CustomField``: the documented list of
    ``{name, value}``, or an object ``{name: value}`` (the request's shape), is
    read entry by entry; ``null`` is an empty list. Nothing else is dropped: a
    list entry that is not a ``{name, value}`` object, or a ``customFields`` that
    is neither list nor object, becomes a ``CustomField`` without a name whose
    ``value`` is that JSON.
    """

    id: int | JSONValue = attrs.field(default=None, converter=_read_int)
    program_id: int | JSONValue = attrs.field(default=None, converter=_read_int)
    points_redeemed: float | JSONValue = attrs.field(default=None, converter=_read_float)
    bill_id: int | JSONValue = attrs.field(default=None, converter=_read_int)
    bill_number: str | JSONValue = attrs.field(default=None, converter=_as_sent)
    validation_code: str | JSONValue = attrs.field(default=None, converter=_as_sent)
    notes: str | JSONValue = attrs.field(default=None, converter=_as_sent)
    redemption_time: int | JSONValue = attrs.field(default=None, converter=_read_int)
    points_redemption_time: int | JSONValue = attrs.field(default=None, converter=_read_int)
    till_id: int | JSONValue = attrs.field(default=None, converter=_read_int)
    till_name: str | JSONValue = attrs.field(default=None, converter=_as_sent)
    point_deduction_list: Any = attrs.field(factory=list, converter=_as_sent)
    redemption_id: str | JSONValue = attrs.field(default=None, converter=_as_sent)
    custom_fields: list[CustomField] = attrs.field(factory=list, converter=_read_custom_fields)
    customer_id: int | JSONValue = attrs.field(default=None, converter=_read_int)
    redemption_purpose: str | JSONValue = attrs.field(default=None, converter=_as_sent)
    redemption_date: datetime | JSONValue = attrs.field(default=None, converter=_read_datetime)
    warnings: Any = attrs.field(factory=list, converter=_as_sent)
    request_id: str | None = _not_on_wire()


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
