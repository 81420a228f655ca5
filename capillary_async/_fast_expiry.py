"""updateExpiry items checked in their wire form: the bulk path's fast lane.

The model's converters are the rules, but building a frozen ``ExpiryUpdate``
per item and unstructuring it again costs more than the request itself.
``checked_wire`` applies the same rules to a plain dict and returns the wire
form the model would send (keys in the model's order, optional ``None`` fields
left out), or None whenever anything is unusual: the model then decides, with
its precise errors. ``tests/test_fast_expiry.py`` holds the two paths equal on
generated input, valid and invalid.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from ._converters import EXPIRY_DATE_KEYS, EXPIRY_KEYS
from ._enums import (
    ExpiryType,
    ExpiryUpdateReasonType,
    IdentifierName,
    PointCategoryType,
    PointsAwardedRefType,
)
from ._models_common import JAVA_LONG_MAX
from ._models_expiry import _ISO_DATE

__all__ = ["REF_TYPES", "checked_wire"]

_NAMES = frozenset(IdentifierName._value2member_map_)
#: A known ``pointsAwardedRefType`` text and its member (the key of an item).
REF_TYPES: dict[Any, PointsAwardedRefType] = dict(PointsAwardedRefType._value2member_map_)
_IDEMPOTENT = {member.value: member.idempotent for member in ExpiryType}
_CATEGORIES = frozenset(PointCategoryType._value2member_map_)
_REASONS = frozenset(ExpiryUpdateReasonType._value2member_map_)
_REQUIRED = 6
#: The fields this lane reads; ``standardMeta`` and ``customMeta`` go through the model.
_KNOWN = EXPIRY_KEYS - {"standardMeta", "customMeta"}
#: FIXED_DATE values already found to be calendar dates (a bulk job repeats a few).
_DATES: dict[str, None] = {}
_MAX_DATES = 4096
#: Digit strings this long always fit a Java long.
_SAFE_DIGITS = 18


def _long(value: Any) -> int | None:
    """A positive Java long, from an int or a plain digit string; None for anything else."""
    if type(value) is int:
        return value if 0 < value <= JAVA_LONG_MAX else None
    if type(value) is str and 0 < len(value) <= _SAFE_DIGITS and value.isdigit():
        number = int(value) if value.isascii() else 0
        return number or None
    return None


def _text(value: Any) -> str | None:
    """A required string: ASCII text that is not blank, or a modest int as its digits."""
    if type(value) is str:
        return value if value.isascii() and not value.isspace() and value else None
    if type(value) is int and -JAVA_LONG_MAX <= value <= JAVA_LONG_MAX:
        return str(value)
    return None


def _expiry(value: Any) -> tuple[dict[str, str], bool] | None:
    """``expiryDate``'s wire form and whether it is idempotent, or None."""
    if type(value) is not dict or not value.keys() <= EXPIRY_DATE_KEYS:
        return None
    kind = value.get("expiryType")
    if type(kind) is not str or (idempotent := _IDEMPOTENT.get(kind)) is None:
        return None
    given = value.get("expiryValue")
    if kind == "IMMEDIATE":
        if given is None:
            return {"expiryType": kind}, idempotent
        if type(given) is not str or not given.isascii():
            return None
        return {"expiryType": kind, "expiryValue": given}, idempotent
    if kind == "FIXED_DATE":
        if type(given) is not str:
            return None
        if given not in _DATES:
            if not given.isascii() or not _ISO_DATE.fullmatch(given):
                return None
            try:
                date.fromisoformat(given)
            except ValueError:
                return None
            if len(_DATES) >= _MAX_DATES:
                _DATES.clear()
            _DATES[given] = None
        return {"expiryType": kind, "expiryValue": given}, idempotent
    # FIXED_DAYS, FIXED_MONTHS: a positive count, kept as the digits given.
    if type(given) is int:
        if not 0 < given <= JAVA_LONG_MAX:
            return None
        return {"expiryType": kind, "expiryValue": str(given)}, idempotent
    if type(given) is not str or _long(given) is None:
        return None
    return {"expiryType": kind, "expiryValue": given}, idempotent


def checked_wire(
    data: Any,
) -> tuple[dict[str, Any], tuple[int, PointsAwardedRefType], bool] | None:
    """``data``'s wire form, key and idempotence if the model would take it as is, else None.

    None says nothing about validity: the general path (``from_wire``) decides.
    """
    if type(data) is not dict:
        return None
    if len(data) != _REQUIRED and not data.keys() <= _KNOWN:
        return None
    name = data.get("identifierName")
    ref_type = data.get("pointsAwardedRefType")
    if type(name) is not str or name not in _NAMES or type(ref_type) is not str:
        return None
    member = REF_TYPES.get(ref_type)
    value = _text(data.get("identifierValue"))
    program = _long(data.get("programId"))
    ref_id = _long(data.get("pointsAwardedRefId"))
    expiry = _expiry(data.get("expiryDate"))
    if member is None or value is None or program is None or ref_id is None or expiry is None:
        return None
    wire: dict[str, Any] = {
        "identifierName": name,
        "identifierValue": value,
        "programId": program,
        "pointsAwardedRefId": ref_id,
        "pointsAwardedRefType": ref_type,
        "expiryDate": expiry[0],
    }
    if len(data) != _REQUIRED and not _optional(data, wire):
        return None
    return wire, (ref_id, member), expiry[1]


def _optional(data: dict[str, Any], wire: dict[str, Any]) -> bool:
    """Add the optional fields present, in the model's order; False if one is unusual."""
    for key, allowed in (
        ("currencyName", None),
        ("pointCategoryType", _CATEGORIES),
        ("expiryUpdateReasonType", _REASONS),
        ("expiryUpdateReasonNote", None),
    ):
        value = data.get(key)
        if value is None:
            continue
        if type(value) is not str or not value.isascii():
            return False
        if allowed is not None and value not in allowed:
            return False
        wire[key] = value
    return True
