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

import enum
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from . import _models as m
from ._enums import WireEnum
from ._exceptions import ValidationError
from ._models import parse_datetime
from ._wire_errors import field_model, join, translate, unknown_keys, wire_name

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

# The three names the docs give updateExpiry's success list.
SUCCESS_KEYS = ("currencyExpiryUpdateResponse", "updateCurrencyExpiryDateResponse")


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
                model = field_model(cls, field.name)
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
            raise unknown_keys("", unknown)
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


# -- public -----------------------------------------------------------------


def to_wire(model: Any) -> Any:
    """A model (or a list of models) as the exact JSON-ready value Capillary expects."""
    return _fast.unstructure(model)


#: The wire fields of an ``expiryDateUpdateRequest`` item (and of its ``expiryDate``).
EXPIRY_KEYS = frozenset(
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
EXPIRY_DATE_KEYS = frozenset({"expiryType", "expiryValue"})
_STANDARD_META_KEYS = frozenset({"who_raised", "who_approved", "reason_for_trigger"})


def direct_expiry_update(data: Mapping[str, Any]) -> m.ExpiryUpdate:
    """The common case of a bulk job's input, built without cattrs' generic machinery.

    The attrs converters still check every rule. Anything unusual raises, and
    ``from_wire`` then takes the general path, which gives the same result or
    the precise error.
    """
    if not data.keys() <= EXPIRY_KEYS:
        raise KeyError("unknown key")
    expiry = data["expiryDate"]
    if type(expiry) is not dict or not expiry.keys() <= EXPIRY_DATE_KEYS:
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


_REDEMPTION_KEYS = frozenset(
    {
        "entity",
        "redemptionId",
        "externalReferenceNumber",
        "billId",
        "billNumber",
        "purpose",
        "customFields",
    }
)
_ENTITY_KEYS = frozenset({"type", "identifierType", "identifierValue"})


def direct_redemption_update(data: Mapping[str, Any]) -> m.RedemptionUpdate:
    """updateRedemption's body built without cattrs' generic machinery (a single call's path).

    As for ``direct_expiry_update``: the attrs converters check every rule, and
    anything unusual raises for ``from_wire``'s general path to decide.
    """
    if not data.keys() <= _REDEMPTION_KEYS:
        raise KeyError("unknown key")
    entity = data["entity"]
    if type(entity) is not dict or not entity.keys() <= _ENTITY_KEYS:
        raise TypeError("entity")
    custom = data.get("customFields")
    if custom is not None and type(custom) is not dict:
        raise TypeError("customFields")
    return m.RedemptionUpdate(
        entity=m.Entity(
            type=entity["type"],
            identifier_type=entity["identifierType"],
            identifier_value=entity["identifierValue"],
        ),
        redemption_id=data.get("redemptionId"),
        external_reference_number=data.get("externalReferenceNumber"),
        bill_id=data.get("billId"),
        bill_number=data.get("billNumber"),
        purpose=data.get("purpose"),
        custom_fields=custom,
    )


def from_wire(cls: type[T], data: Any, *, strict: bool = False, path: str = "") -> T:
    """Build ``cls`` from wire JSON, validating it; failures raise ``ValidationError``.

    ``strict=True`` also refuses unknown keys in result models (request models
    always refuse them). ``path`` prefixes the field in error messages.
    """
    if type(data) is dict and (cls is m.ExpiryUpdate or cls is m.RedemptionUpdate):
        try:
            if cls is m.ExpiryUpdate:
                return direct_expiry_update(data)  # type: ignore[return-value]
            return direct_redemption_update(data)  # type: ignore[return-value]
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
        error = translate(exc, cls, "")
        if not path:
            raise error from None
        field = join(path, error.field) if error.field else path
        raise ValidationError(field, error.reason, code=error.code) from None


def ensure(cls: type[T], value: Any, *, path: str = "") -> T:
    """``value`` if it is already a ``cls``, else ``from_wire(cls, value)``."""
    if isinstance(value, cls):
        return value
    return from_wire(cls, value, path=path)
