"""What the model modules share: value checks for request converters and
lenient readers for result fields (the rules are in ``_models``' docstring).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

import attrs

from ._exceptions import ValidationError, excerpt

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
