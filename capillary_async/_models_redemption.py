"""updateRedemption's models: the strict request body and the lenient answer."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ._enums import EntityType
from ._exceptions import ValidationError
from ._models_common import (
    JSONValue,
    _as_sent,
    _enum,
    _not_on_wire,
    _optional_str,
    _positive_long,
    _read_datetime,
    _read_float,
    _read_int,
    _required_str,
    _string_map,
)

# -- named converters: mypy's attrs plugin types __init__ from these ---------


def _custom_fields(value: Mapping[str, str] | None) -> dict[str, str] | None:
    return _string_map(value, "custom_fields")


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


# -- request models ---------------------------------------------------------


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
