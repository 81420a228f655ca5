"""Wire names, and validation errors in our words: a cattrs error tree as a path and a reason.

A required field's "is required" names the unknown keys beside it, with the
missing name one resembles (``did you mean 'pointsAwardedRefId'?``): a
misspelling is the usual cause. Every key quoted from the input is bounded and
redacted.
"""

from __future__ import annotations

import difflib
import functools
import heapq
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)

from . import _models as m
from ._exceptions import ValidationError, excerpt

__all__ = ["camel", "field_model", "join", "translate", "unknown_keys", "wire_name"]

_SNAKE_ON_WIRE = frozenset({m.StandardMeta})

# Required fields whose absence has a Capillary code but no attrs converter to say so.
_MISSING_CODES: Mapping[tuple[type[Any], str], int] = {
    (m.ExpiryUpdate, "expiry_date"): 8942,
    (m.RedemptionUpdate, "entity"): 1219,
}


@functools.cache
def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join("ISO" if part == "iso" else part[:1].upper() + part[1:] for part in rest)


def wire_name(cls: type[Any], attribute: str) -> str:
    """The wire name of ``cls.attribute``."""
    return attribute if cls in _SNAKE_ON_WIRE else camel(attribute)


def _missing(cls: type[Any], attribute: str, path: str) -> ValidationError:
    code = _MISSING_CODES.get((cls, attribute))
    if code is None:
        field = attrs.fields_dict(cls)[attribute]
        if field.converter is not None:
            try:
                field.converter(None)  # type: ignore[operator]
            except ValidationError as exc:
                code = exc.code
    return ValidationError(path, "is required", code=code)


def join(path: str, segment: str) -> str:
    if segment.startswith("["):
        return path + segment
    return f"{path}.{segment}" if path else segment


def _own_field(cls: type[Any] | None, field: str) -> str:
    """Map a model's own ``ValidationError.field`` (snake_case) to its wire name.

    Only the model's attribute names are mapped: a field that names a wire key
    already (an unknown key from the input) is left as it is.
    """
    if not field:
        return field
    head, dot, rest = field.partition(".")
    if cls is None:
        head = camel(head)
    elif attrs.has(cls) and head in attrs.fields_dict(cls):
        head = wire_name(cls, head)
    return head + dot + rest


_NAMED = 5  # unknown keys listed in one message; the rest are counted


def _key_name(key: object) -> str:
    # Keys come from the input: bounded, surrogates escaped, never repr'd whole.
    return excerpt(key, 60) if isinstance(key, str) else f"<{type(key).__name__} key>"


def unknown_keys(path: str, keys: Iterable[object], code: int | None = None) -> ValidationError:
    names = sorted({_key_name(key) for key in keys})
    also = names[1:_NAMED]
    more = f" (also: {', '.join(also)}" if also else ""
    if len(names) > _NAMED:
        more += f" and {len(names) - _NAMED:,} more"
    more += ")" if more else ""
    return ValidationError(
        join(path, names[0]), f"unknown field, not part of the wire format{more}", code=code
    )


_HINTED = 3  # unknown keys named beside a missing field; the rest are counted
_GUESSED = 100  # an object with more unknown keys gets no guess: they are no misspelling


def _fold(name: str) -> str:
    """A name as compared for a likely misspelling: case, ``_`` and ``-`` ignored."""
    return name.lower().replace("_", "").replace("-", "")


def _likely(key: str, wanted: Mapping[str, str]) -> str | None:
    """The missing wire name ``key`` is most likely a misspelling of, if one is close."""
    found = difflib.get_close_matches(_fold(key), list(wanted), n=1, cutoff=0.75)
    return wanted[found[0]] if found else None


def _key_order(key: object) -> tuple[bool, str]:
    return (True, type(key).__name__) if not isinstance(key, str) else (False, key)


def _with_unknown_keys(
    missing: ValidationError, path: str, keys: Iterable[object], wanted: Iterable[str]
) -> ValidationError:
    """``missing`` ("is required") naming the unknown keys the same object holds.

    A required field is most often missing because its key is misspelt: a few
    keys are named with their path (bounded, the rest counted), a likely
    misspelling first, with the missing name it resembles.
    """
    folded = {_fold(name): name for name in wanted}
    longest = max(map(len, folded), default=0)
    keys = list(keys)
    guessed: list[tuple[object, str | None]] = []
    if len(keys) <= _GUESSED:  # past that, the keys are no misspelling
        plausible = [key for key in keys if isinstance(key, str) and len(key) <= longest + 3]
        for candidate in sorted(plausible):
            guess = _likely(candidate, folded)
            if guess is not None and len(guessed) < _HINTED:
                guessed.append((candidate, guess))
    hinted = {id(key) for key, _ in guessed}
    others = (key for key in keys if id(key) not in hinted)
    guessed += [(key, None) for key in heapq.nsmallest(_HINTED - len(guessed), others, _key_order)]
    named = []
    for key, guess in guessed:
        name = _key_name(key)
        text = f"'{join(path, name)}'" if isinstance(key, str) else name
        named.append(text + (f" (did you mean '{join(path, guess)}'?)" if guess else ""))
    more = f" and {len(keys) - len(named):,} more" if len(keys) > len(named) else ""
    has = "an unknown key" if len(keys) == 1 else "unknown keys"
    reason = f"{missing.reason}; the input has {has} {', '.join(named)}{more}"
    return ValidationError(missing.field, reason, code=missing.code)


def _describe(exc: BaseException) -> str:
    """A foreign exception's text, bounded; ``str()`` itself may fail (a huge int's repr)."""
    try:
        return excerpt(str(exc), 200)
    except Exception:  # noqa: BLE001 - any failure to describe is described by type
        return type(exc).__name__


def translate(exc: BaseException, cls: type[Any] | None, path: str) -> ValidationError:
    """The first concrete failure in a cattrs error tree, with its wire path."""
    if isinstance(exc, ForbiddenExtraKeysError):
        code = 8935 if exc.cl is m.StandardMeta else None
        return unknown_keys(path, exc.extra_fields, code)
    if isinstance(exc, BaseValidationError):
        owner = getattr(exc, "cl", None)
        for sub in exc.exceptions:
            sub_path, sub_cls = path, owner
            for note in getattr(sub, "__notes__", ()):
                if isinstance(note, AttributeValidationNote) and owner is not None:
                    if isinstance(sub, KeyError):
                        missing = _missing(
                            owner, note.name, join(path, wire_name(owner, note.name))
                        )
                        return _missing_beside_unknown(missing, exc, owner, path)
                    sub_path = join(path, wire_name(owner, note.name))
                    sub_cls = field_model(owner, note.name)
                elif isinstance(note, IterableValidationNote):
                    sub_path = join(path, f"[{note.index}]")
            return translate(sub, sub_cls, sub_path)
        return ValidationError(path, _describe(exc))
    if isinstance(exc, ValidationError):
        return ValidationError(join(path, _own_field(cls, exc.field)), exc.reason, code=exc.code)
    if isinstance(exc, (TypeError, AttributeError)) and cls is not None and attrs.has(cls):
        return ValidationError(path, "expected a JSON object")
    return ValidationError(path, f"invalid value: {_describe(exc)}")


def _missing_beside_unknown(
    missing: ValidationError, exc: BaseValidationError, owner: type[Any], path: str
) -> ValidationError:
    """A missing field's error, naming the unknown keys of the same object, if it has any."""
    unknown: list[object] = []
    wanted: list[str] = []
    for sub in exc.exceptions:
        if isinstance(sub, ForbiddenExtraKeysError):
            unknown.extend(sub.extra_fields)
        elif isinstance(sub, KeyError):
            notes = getattr(sub, "__notes__", ())
            wanted += [
                wire_name(owner, n.name) for n in notes if isinstance(n, AttributeValidationNote)
            ]
    return _with_unknown_keys(missing, path, unknown, wanted) if unknown else missing


def field_model(owner: type[Any], attribute: str) -> type[Any] | None:
    """The model class a field holds (directly, optionally, or as list items)."""
    attrs.resolve_types(owner)
    field_type = attrs.fields_dict(owner)[attribute].type
    candidates = [field_type, *typing.get_args(field_type)]
    candidates += [arg for c in candidates[1:] for arg in typing.get_args(c)]
    return next((c for c in candidates if isinstance(c, type) and attrs.has(c)), None)
