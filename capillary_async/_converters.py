"""Models to and from the exact wire JSON, with one cattrs converter.

Wire names are derived once per class (camelCase, ``_iso`` -> ``ISO``,
``standardMeta`` keys unchanged) and compiled into cattrs' generated
functions through a hook factory. Unset optional fields are left out, never
sent as null. Request models refuse unknown keys (a misspelt field in an input
file must not vanish silently), and a required field's "is required" names the
unknown keys beside it, with the missing name one resembles (``did you mean
'pointsAwardedRefId'?``): a misspelling is the usual cause. Result models
tolerate unknown keys, and read each field leniently through their attrs
converters (see ``_models``): structuring an answer fails only when its top
level, or one of its item lists, is not the container the docs promise.

Structuring first runs a fast converter; only when that fails is the input run
again through a detailed one, whose error tree becomes a ``ValidationError``
with a wire path such as ``expiryDateUpdateRequest[3].expiryDate.expiryValue``.
"""

from __future__ import annotations

import difflib
import enum
import functools
import heapq
import typing
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from . import _models as m
from ._enums import WireEnum
from ._exceptions import ValidationError, excerpt
from ._models import parse_datetime

__all__ = ["from_wire", "parse_datetime", "to_wire", "wire_name"]

T = TypeVar("T")

REQUEST_MODELS: tuple[type[Any], ...] = (
    m.ExpiryUpdate,
    m.ExpiryDate,
    m.StandardMeta,
    m.RedemptionUpdate,
    m.Entity,
)
RESULT_MODELS: tuple[type[Any], ...] = (
    m.Redemption,
    m.CustomField,
    m.ExpiryUpdateResult,
    m.ExpiryUpdateEntry,
    m.PointsExpiryUpdateLog,
    m.ItemFailure,
)
_SNAKE_ON_WIRE = frozenset({m.StandardMeta})

# Required fields whose absence has a Capillary code but no attrs converter to say so.
_MISSING_CODES: Mapping[tuple[type[Any], str], int] = {
    (m.ExpiryUpdate, "expiry_date"): 8942,
    (m.RedemptionUpdate, "entity"): 1219,
}

# The three names the docs give updateExpiry's success list.
SUCCESS_KEYS = ("currencyExpiryUpdateResponse", "updateCurrencyExpiryDateResponse")


@functools.cache
def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join("ISO" if part == "iso" else part[:1].upper() + part[1:] for part in rest)


def wire_name(cls: type[Any], attribute: str) -> str:
    """The wire name of ``cls.attribute``."""
    return attribute if cls in _SNAKE_ON_WIRE else _camel(attribute)


def _overrides(cls: type[Any]) -> dict[str, Any]:
    """cattrs overrides: the wire name of every field, and the fields never on the wire."""
    result: dict[str, Any] = {}
    for field in attrs.fields(cls):
        if field.metadata.get(m.NOT_ON_WIRE):
            result[field.name] = override(omit=True)
        else:
            result[field.name] = override(rename=wire_name(cls, field.name))
    return result


# -- timestamps -------------------------------------------------------------


def format_datetime(value: datetime) -> str:
    """ISO 8601, ``Z`` for UTC as Capillary writes it."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# -- the converter ----------------------------------------------------------


def _is_generated_model(cls: Any) -> bool:
    return cls in REQUEST_MODELS or (cls in RESULT_MODELS and cls is not m.ExpiryUpdateResult)


def _enum_value(member: enum.Enum) -> Any:
    return member.value


def _make_converter(*, detailed: bool, strict_results: bool) -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=detailed, prefer_attrib_converters=True)
    conv.register_unstructure_hook(datetime, format_datetime)
    # str-based enums would otherwise pass through as members, not plain strings.
    conv.register_unstructure_hook(WireEnum, _enum_value)

    def wire_value(value: Any) -> Any:
        """A result field's value as JSON: one level deep only, as raw JSON may nest
        deeper than the recursion limit and is JSON already."""
        if isinstance(value, list):
            return [wire_item(item) for item in value]
        return wire_item(value)

    def wire_item(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, datetime):
            return format_datetime(value)
        if attrs.has(type(value)):
            return conv.unstructure(value)
        return value

    def model_or_as_sent(model: type[Any]) -> Callable[[Any, Any], Any]:
        def structure(value: Any, _: Any) -> Any:
            return conv.structure(value, model) if isinstance(value, Mapping) else value

        return structure

    def result_overrides(cls: type[Any]) -> dict[str, Any]:
        """Result fields are read by their attrs converters (the raw JSON passes
        through cattrs untouched); a nested model is structured only from an object."""
        result = _overrides(cls)
        for field in attrs.fields(cls):
            if field.metadata.get(m.NOT_ON_WIRE):
                continue
            hook = None
            if field.converter is None:
                model = _field_model(cls, field.name)
                hook = model_or_as_sent(model) if model is not None else None
            result[field.name] = override(
                rename=wire_name(cls, field.name), struct_hook=hook, unstruct_hook=wire_value
            )
        return result

    def structure_factory(cls: type[Any]) -> Callable[[Any, Any], Any]:
        generated = make_dict_structure_fn(
            cls,
            conv,
            _cattrs_forbid_extra_keys=strict_results or cls in REQUEST_MODELS,
            _cattrs_prefer_attrib_converters=True,
            _cattrs_detailed_validation=detailed,
            **(_overrides(cls) if cls in REQUEST_MODELS else result_overrides(cls)),
        )

        def structure(data: Any, cl: Any) -> Any:
            # Without this a string would pass as an object whose optional
            # fields are all missing.
            if not isinstance(data, Mapping):
                raise TypeError(f"expected a JSON object, got {type(data).__name__}")
            return generated(data, cl)

        return structure

    def unstructure_factory(cls: type[Any]) -> Callable[[Any], Any]:
        overrides = _overrides(cls) if cls in REQUEST_MODELS else result_overrides(cls)
        return make_dict_unstructure_fn(cls, conv, _cattrs_omit_if_default=True, **overrides)

    conv.register_structure_hook_factory(_is_generated_model, structure_factory)
    conv.register_unstructure_hook_factory(_is_generated_model, unstructure_factory)

    def structure_result(data: Any, _: Any) -> m.ExpiryUpdateResult:
        return _structure_expiry_result(conv, data, strict=strict_results)

    conv.register_structure_hook(m.ExpiryUpdateResult, structure_result)
    conv.register_unstructure_hook(
        m.ExpiryUpdateResult, lambda result: _unstructure_expiry_result(wire_item, result)
    )
    return conv


def _is_empty(value: Any) -> bool:
    return value is None or (type(value) is list and not value)


def split_expiry_envelope(
    data: Any, *, strict: bool = False
) -> tuple[list[Any], list[Any], Any, Any]:
    """(updates, failures, warnings, errors) as raw JSON, whichever documented envelope.

    Raises only ``ValidationError``: when ``data`` is not an object, or a
    success or ``failures`` list is not a list (or, with ``strict``, holds an
    unknown key). ``warnings`` and ``errors`` are whatever JSON came (``[]`` when
    absent or null): a warning must not turn an applied update into an error.
    """
    if not isinstance(data, Mapping):
        raise ValidationError("", f"expected a JSON object, got {type(data).__name__}")
    body: Mapping[str, Any] = data
    entity = data.get("entity")
    if isinstance(entity, Mapping):
        body = entity
    if strict:
        known = {*SUCCESS_KEYS, "failures", "warnings", "errors", "entity"}
        extra = [*data, *(body if body is not data else ())]
        unknown = [key for key in extra if key not in known]
        if unknown:
            raise _unknown_keys("", unknown)
    sources = (body, data) if body is not data else (data,)
    raw_updates: list[Any] = []
    for key in SUCCESS_KEYS:
        for source in sources:
            value = source.get(key)
            if isinstance(value, list):
                raw_updates.extend(value)
            elif value is not None:
                raise ValidationError(key, f"expected a JSON array, got {type(value).__name__}")
    raw_failures: list[Any] = []
    for source in sources:
        value = source.get("failures")
        if isinstance(value, list):
            raw_failures.extend(value)
        elif value:  # null, or an empty object or string, names no failure
            raise ValidationError("failures", f"expected a JSON array, got {type(value).__name__}")
    # The OpenAPI block puts warnings beside ``entity``; should both levels
    # carry some, both are kept.
    found = [data.get("warnings")]
    if body is not data:
        found.append(body.get("warnings"))
    present = [value for value in found if not _is_empty(value)]
    warnings: Any = present[0] if len(present) == 1 else []
    if len(present) == 2:
        warnings = [
            item for value in present for item in (value if type(value) is list else [value])
        ]
    errors = data.get("errors")
    return raw_updates, raw_failures, warnings, [] if errors is None else errors


def _structure_expiry_result(
    conv: cattrs.Converter, data: Any, *, strict: bool
) -> m.ExpiryUpdateResult:
    """Accept all three documented envelopes of updateExpiry's answer."""
    updates, failures, warnings, errors = split_expiry_envelope(data, strict=strict)
    return m.ExpiryUpdateResult(
        updates=[
            conv.structure(e, m.ExpiryUpdateEntry) if isinstance(e, Mapping) else e for e in updates
        ],
        failures=[
            conv.structure(f, m.ItemFailure) if isinstance(f, Mapping) else f for f in failures
        ],
        warnings=warnings,
        errors=errors,
    )


def _unstructure_expiry_result(
    wire_item: Callable[[Any], Any], result: m.ExpiryUpdateResult
) -> Any:
    out: dict[str, Any] = {SUCCESS_KEYS[0]: [wire_item(entry) for entry in result.updates]}
    if result.failures:
        out["failures"] = [wire_item(failure) for failure in result.failures]
    if not _is_empty(result.warnings):
        out["warnings"] = result.warnings
    if not _is_empty(result.errors):
        out["errors"] = result.errors
    return out


_fast = _make_converter(detailed=False, strict_results=False)
_detailed = _make_converter(detailed=True, strict_results=False)
_strict = _make_converter(detailed=True, strict_results=True)


# -- errors -----------------------------------------------------------------


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


def _join(path: str, segment: str) -> str:
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
        head = _camel(head)
    elif attrs.has(cls) and head in attrs.fields_dict(cls):
        head = wire_name(cls, head)
    return head + dot + rest


_NAMED = 5  # unknown keys listed in one message; the rest are counted


def _key_name(key: object) -> str:
    # Keys come from the input: bounded, surrogates escaped, never repr'd whole.
    return excerpt(key, 60) if isinstance(key, str) else f"<{type(key).__name__} key>"


def _unknown_keys(path: str, keys: Iterable[object], code: int | None = None) -> ValidationError:
    names = sorted({_key_name(key) for key in keys})
    also = names[1:_NAMED]
    more = f" (also: {', '.join(also)}" if also else ""
    if len(names) > _NAMED:
        more += f" and {len(names) - _NAMED:,} more"
    more += ")" if more else ""
    return ValidationError(
        _join(path, names[0]), f"unknown field, not part of the wire format{more}", code=code
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
        text = f"'{_join(path, name)}'" if isinstance(key, str) else name
        named.append(text + (f" (did you mean '{_join(path, guess)}'?)" if guess else ""))
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


def _translate(exc: BaseException, cls: type[Any] | None, path: str) -> ValidationError:
    """The first concrete failure in a cattrs error tree, with its wire path."""
    if isinstance(exc, ForbiddenExtraKeysError):
        code = 8935 if exc.cl is m.StandardMeta else None
        return _unknown_keys(path, exc.extra_fields, code)
    if isinstance(exc, BaseValidationError):
        owner = getattr(exc, "cl", None)
        for sub in exc.exceptions:
            sub_path, sub_cls = path, owner
            for note in getattr(sub, "__notes__", ()):
                if isinstance(note, AttributeValidationNote) and owner is not None:
                    if isinstance(sub, KeyError):
                        missing = _missing(
                            owner, note.name, _join(path, wire_name(owner, note.name))
                        )
                        return _missing_beside_unknown(missing, exc, owner, path)
                    sub_path = _join(path, wire_name(owner, note.name))
                    sub_cls = _field_model(owner, note.name)
                elif isinstance(note, IterableValidationNote):
                    sub_path = _join(path, f"[{note.index}]")
            return _translate(sub, sub_cls, sub_path)
        return ValidationError(path, _describe(exc))
    if isinstance(exc, ValidationError):
        return ValidationError(_join(path, _own_field(cls, exc.field)), exc.reason, code=exc.code)
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


def _field_model(owner: type[Any], attribute: str) -> type[Any] | None:
    """The model class a field holds (directly, optionally, or as list items)."""
    attrs.resolve_types(owner)
    field_type = attrs.fields_dict(owner)[attribute].type
    candidates = [field_type, *typing.get_args(field_type)]
    candidates += [arg for c in candidates[1:] for arg in typing.get_args(c)]
    return next((c for c in candidates if isinstance(c, type) and attrs.has(c)), None)


# -- public -----------------------------------------------------------------


def to_wire(model: Any) -> Any:
    """A model (or a list of models) as the exact JSON-ready value Capillary expects."""
    return _fast.unstructure(model)


_EXPIRY_KEYS = frozenset(
    {
        "identifierName",
        "identifierValue",
        "programId",
        "pointsAwardedRefId",
        "pointsAwardedRefType",
        "expiryDate",
        "currencyName",
        "pointCategoryType",
        "expiryUpdateReasonType",
        "expiryUpdateReasonNote",
        "standardMeta",
        "customMeta",
    }
)
_EXPIRY_DATE_KEYS = frozenset({"expiryType", "expiryValue"})
_STANDARD_META_KEYS = frozenset({"who_raised", "who_approved", "reason_for_trigger"})


def _direct_expiry_update(data: Mapping[str, Any]) -> m.ExpiryUpdate:
    """The common case of a bulk job's input, built without cattrs' generic machinery.

    The attrs converters still check every rule. Anything unusual raises, and
    ``from_wire`` then takes the general path, which gives the same result or
    the precise error.
    """
    if not data.keys() <= _EXPIRY_KEYS:
        raise KeyError("unknown key")
    expiry = data["expiryDate"]
    if type(expiry) is not dict or not expiry.keys() <= _EXPIRY_DATE_KEYS:
        raise TypeError("expiryDate")
    meta = data.get("standardMeta")
    if meta is not None:
        if (
            type(meta) is not dict
            or not meta.keys() <= _STANDARD_META_KEYS
            or not all(type(v) is str for v in meta.values())
        ):
            raise TypeError("standardMeta")
        meta = m.StandardMeta(**meta)
    return m.ExpiryUpdate(
        identifier_name=data["identifierName"],
        identifier_value=data["identifierValue"],
        program_id=data["programId"],
        points_awarded_ref_id=data["pointsAwardedRefId"],
        points_awarded_ref_type=data["pointsAwardedRefType"],
        expiry_date=m.ExpiryDate(
            expiry_type=expiry["expiryType"], expiry_value=expiry.get("expiryValue")
        ),
        currency_name=data.get("currencyName"),
        point_category_type=data.get("pointCategoryType"),
        expiry_update_reason_type=data.get("expiryUpdateReasonType"),
        expiry_update_reason_note=data.get("expiryUpdateReasonNote"),
        standard_meta=meta,
        custom_meta=data.get("customMeta"),
    )


def from_wire(cls: type[T], data: Any, *, strict: bool = False, path: str = "") -> T:
    """Build ``cls`` from wire JSON, validating it; failures raise ``ValidationError``.

    ``strict=True`` also refuses unknown keys in result models (request models
    always refuse them). ``path`` prefixes the field in error messages.
    """
    if cls is m.ExpiryUpdate and type(data) is dict:
        try:
            return _direct_expiry_update(data)  # type: ignore[return-value]
        except Exception:  # noqa: BLE001, S110 - the general path below decides
            pass
    if not strict:
        try:
            return _fast.structure(data, cls)
        except Exception:  # noqa: BLE001, S110 - re-run below for a precise error
            pass
    try:
        return (_strict if strict else _detailed).structure(data, cls)
    except Exception as exc:  # noqa: BLE001 - any structuring failure is bad input
        # Paths within ``data`` (as the reason quotes them), then ``path`` before the field.
        error = _translate(exc, cls, "")
        if not path:
            raise error from None
        field = _join(path, error.field) if error.field else path
        raise ValidationError(field, error.reason, code=error.code) from None


def ensure(cls: type[T], value: Any, *, path: str = "") -> T:
    """``value`` if it is already a ``cls``, else ``from_wire(cls, value)``."""
    if isinstance(value, cls):
        return value
    return from_wire(cls, value, path=path)
