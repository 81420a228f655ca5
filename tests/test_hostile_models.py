"""Careless input: odd values never crash, odd text never leaks.

A request model must refuse what the server cannot take (lone surrogates,
numbers past a Java long) with a ``ValidationError`` whose message stays short
and writable as UTF-8, whatever it is given.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capillary_async import (
    Entity,
    ExpiryDate,
    ExpiryUpdate,
    RedemptionUpdate,
    StandardMeta,
    ValidationError,
    from_wire,
)

from .conftest import EXPIRY_ITEM, REDEMPTION_REQUEST

SURROGATE = json.loads('"\\ud800"')  # what a "\ud800" escape in an input file becomes
HUGE = 10**5000  # str() and repr() of it raise ValueError on Python 3.11+
HUGE_DIGITS = "9" * 5000  # and so does int() of it
LONG_MAX = 2**63 - 1
BIG = "x" * 2_000_000


def deeply_nested(depth: int = 100_000) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def assert_short_and_writable(error: ValidationError, limit: int = 600) -> None:
    text = str(error)
    text.encode("utf-8")  # a lone surrogate would make this raise
    assert SURROGATE not in text
    assert SURROGATE not in error.field
    assert len(text) < limit, text[:200]


def huge(sign: int) -> int:
    return sign * HUGE


# Huge and deep values are built by named functions: Hypothesis prints its
# strategies, and repr() of such a value raises.
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from([1, -1]).map(huge)
    | st.sampled_from([HUGE_DIGITS, SURROGATE, "2025-06-26T15:28:28Z", "12"])
)
hostile = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


# -- requests: text that cannot be sent -------------------------------------------------

ENTITY = {"type": "CUSTOMER", "identifier_type": "mobile", "identifier_value": "919731013853"}


def expiry(**changes: Any) -> ExpiryUpdate:
    fields: dict[str, Any] = {
        "identifier_name": "mobile",
        "identifier_value": "919999999999",
        "program_id": 469,
        "points_awarded_ref_id": 117521910,
        "points_awarded_ref_type": "POINT_AWARDED",
        "expiry_date": ExpiryDate(expiry_type="FIXED_DATE", expiry_value="2030-01-31"),
    }
    fields.update(changes)
    return ExpiryUpdate(**fields)


def redemption_update(**changes: Any) -> RedemptionUpdate:
    fields: dict[str, Any] = {"entity": Entity(**ENTITY), "redemption_id": "r1", "purpose": "p"}
    fields.update(changes)
    return RedemptionUpdate(**fields)


TEXT_FIELDS: list[tuple[str, Callable[[str], Any], str]] = [
    ("identifier_name", lambda s: expiry(identifier_name=s), "identifier_name"),
    ("identifier_value", lambda s: expiry(identifier_value="91" + s), "identifier_value"),
    ("program_id", lambda s: expiry(program_id="469" + s), "program_id"),
    ("ref_id", lambda s: expiry(points_awarded_ref_id=s), "points_awarded_ref_id"),
    ("ref_type", lambda s: expiry(points_awarded_ref_type=s), "points_awarded_ref_type"),
    ("currency_name", lambda s: expiry(currency_name=s), "currency_name"),
    ("category", lambda s: expiry(point_category_type=s), "point_category_type"),
    ("reason_type", lambda s: expiry(expiry_update_reason_type=s), "expiry_update_reason_type"),
    ("reason_note", lambda s: expiry(expiry_update_reason_note=s), "expiry_update_reason_note"),
    ("custom_meta key", lambda s: expiry(custom_meta={s: "v"}), "custom_meta"),
    ("custom_meta value", lambda s: expiry(custom_meta={"k": s}), "custom_meta.k"),
    ("expiry_type", lambda s: ExpiryDate(expiry_type=s, expiry_value="3"), "expiry_type"),
    (
        "FIXED_DATE value",
        lambda s: ExpiryDate(expiry_type="FIXED_DATE", expiry_value=s),
        "expiry_value",
    ),
    (
        "IMMEDIATE value",
        lambda s: ExpiryDate(expiry_type="IMMEDIATE", expiry_value=s),
        "expiry_value",
    ),
    ("who_raised", lambda s: StandardMeta(who_raised=s), "who_raised"),
    ("who_approved", lambda s: StandardMeta(who_approved=s), "who_approved"),
    ("reason_for_trigger", lambda s: StandardMeta(reason_for_trigger=s), "reason_for_trigger"),
    ("redemption_id", lambda s: redemption_update(redemption_id=s), "redemption_id"),
    (
        "external_reference_number",
        lambda s: redemption_update(redemption_id=None, external_reference_number=s),
        "external_reference_number",
    ),
    ("bill_id", lambda s: redemption_update(bill_id=s), "bill_id"),
    ("bill_number", lambda s: redemption_update(bill_number=s), "bill_number"),
    ("purpose", lambda s: redemption_update(purpose=s), "purpose"),
    ("custom_fields key", lambda s: redemption_update(custom_fields={s: "v"}), "custom_fields"),
    ("custom_fields value", lambda s: redemption_update(custom_fields={"k": s}), "custom_fields.k"),
    ("entity type", lambda s: Entity(**{**ENTITY, "type": s}), "type"),
    ("identifier_type", lambda s: Entity(**{**ENTITY, "identifier_type": s}), "identifier_type"),
    ("entity value", lambda s: Entity(**{**ENTITY, "identifier_value": s}), "identifier_value"),
]


@pytest.mark.parametrize(
    ("build", "field"), [t[1:] for t in TEXT_FIELDS], ids=[t[0] for t in TEXT_FIELDS]
)
def test_a_lone_surrogate_is_refused_naming_the_field(
    build: Callable[[str], Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        build("ab" + SURROGATE)
    assert info.value.field == field
    assert_short_and_writable(info.value)


# The fields that refuse a 2 MB value (the others take any text of that size).
QUOTING = [
    t
    for t in TEXT_FIELDS
    if t[0]
    in {
        "identifier_name",
        "program_id",
        "ref_id",
        "ref_type",
        "category",
        "reason_type",
        "expiry_type",
        "FIXED_DATE value",
        "bill_id",
        "purpose",
        "entity type",
    }
]


@pytest.mark.parametrize(("build", "field"), [t[1:] for t in QUOTING], ids=[t[0] for t in QUOTING])
def test_a_2mb_value_gives_a_short_message(build: Callable[[str], Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        build(BIG)
    assert info.value.field == field
    assert_short_and_writable(info.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.update(identifierValue=SURROGATE), "identifierValue"),
        (lambda d: d["standardMeta"].update(who_raised=SURROGATE), "standardMeta.who_raised"),
        (lambda d: d["customMeta"].update(abc=SURROGATE), "customMeta.abc"),
        (lambda d: d["expiryDate"].update(expiryValue=SURROGATE), "expiryDate.expiryValue"),
        (lambda d: d.update(expiryUpdateReasonType=SURROGATE), "expiryUpdateReasonType"),
        (lambda d: d.update({SURROGATE: 1}), "\\ud800"),
        (lambda d: d.update({BIG: 1}), None),
        (lambda d: d.update({f"k{i}": 1 for i in range(10_000)}), None),
        (lambda d: d["customMeta"].update({BIG: 5}), None),
        (lambda d: d.update(pointsAwardedRefType=BIG), "pointsAwardedRefType"),
        (lambda d: d.update(programId=BIG), "programId"),
        (lambda d: d.update(programId=[deeply_nested()]), "programId"),
        (lambda d: d.update(identifierValue={"a": HUGE}), "identifierValue"),
    ],
)
def test_wire_input_errors_are_short_and_writable(change: Any, field: str | None) -> None:
    data = copy.deepcopy(EXPIRY_ITEM)
    change(data)
    with pytest.raises(ValidationError) as info:
        from_wire(ExpiryUpdate, data, path="expiryDateUpdateRequest[7]")
    assert info.value.field.startswith("expiryDateUpdateRequest[7]")
    if field is not None:
        assert info.value.field == f"expiryDateUpdateRequest[7].{field}"
    assert_short_and_writable(info.value)


def test_redemption_request_custom_fields_from_wire() -> None:
    data = {**REDEMPTION_REQUEST, "customFields": {"card_number": SURROGATE}}
    with pytest.raises(ValidationError) as info:
        from_wire(RedemptionUpdate, data)
    assert info.value.field == "customFields.card_number"
    assert_short_and_writable(info.value)


def test_ordinary_non_ascii_text_is_accepted() -> None:
    item = expiry(
        expiry_update_reason_note="Kundin zufrieden: 😀 ü 日本", custom_meta={"ключ": "значение"}
    )
    assert item.custom_meta == {"ключ": "значение"}


# -- requests: numbers the server stores as a Java long ----------------------------------

LONG_FIELDS: list[tuple[str, Callable[[Any], Any], str]] = [
    ("program_id", lambda v: expiry(program_id=v), "program_id"),
    ("points_awarded_ref_id", lambda v: expiry(points_awarded_ref_id=v), "points_awarded_ref_id"),
    ("bill_id", lambda v: redemption_update(bill_id=v), "bill_id"),
    (
        "FIXED_DAYS",
        lambda v: ExpiryDate(expiry_type="FIXED_DAYS", expiry_value=v),
        "expiry_value",
    ),
    (
        "FIXED_MONTHS",
        lambda v: ExpiryDate(expiry_type="FIXED_MONTHS", expiry_value=v),
        "expiry_value",
    ),
]


@pytest.mark.parametrize(
    ("build", "field"), [t[1:] for t in LONG_FIELDS], ids=[t[0] for t in LONG_FIELDS]
)
@pytest.mark.parametrize(
    "value",
    [LONG_MAX + 1, str(LONG_MAX + 1), 10**19, "9999999999999999999", HUGE, HUGE_DIGITS],
    ids=["2**63", "'2**63'", "10**19", "19 nines", "5000-digit int", "5000-digit string"],
)
def test_numbers_past_a_java_long_are_refused(
    build: Callable[[Any], Any], field: str, value: Any
) -> None:
    with pytest.raises(ValidationError) as info:
        build(value)
    assert info.value.field == field
    assert str(LONG_MAX) in info.value.reason
    assert_short_and_writable(info.value)


@pytest.mark.parametrize(
    ("build", "field"), [t[1:] for t in LONG_FIELDS], ids=[t[0] for t in LONG_FIELDS]
)
def test_the_largest_java_long_is_accepted(build: Callable[[Any], Any], field: str) -> None:
    assert build(LONG_MAX)
    assert build(str(LONG_MAX))
    assert build("0" * 5000 + "7")  # leading zeros are not digits past the limit


def test_java_long_limit_from_wire_input() -> None:
    data = copy.deepcopy(EXPIRY_ITEM)
    data["expiryDate"] = {"expiryType": "FIXED_DAYS", "expiryValue": str(LONG_MAX + 1)}
    data["programId"] = LONG_MAX
    with pytest.raises(ValidationError) as info:
        from_wire(ExpiryUpdate, data)
    assert (info.value.field, info.value.code) == ("expiryDate.expiryValue", 8942)
    data["expiryDate"]["expiryValue"] = str(LONG_MAX)
    data["pointsAwardedRefId"] = HUGE_DIGITS
    with pytest.raises(ValidationError) as info:
        from_wire(ExpiryUpdate, data)
    assert (info.value.field, info.value.code) == ("pointsAwardedRefId", 8937)


@pytest.mark.parametrize("value", [HUGE, -HUGE], ids=["huge", "-huge"])
def test_a_huge_number_as_an_identifier_is_a_validation_error(value: int) -> None:
    with pytest.raises(ValidationError) as info:
        expiry(identifier_value=value)
    assert (info.value.field, info.value.code) == ("identifier_value", 8933)
    with pytest.raises(ValidationError) as info:
        expiry(program_id=-value)
    assert_short_and_writable(info.value)


# -- requests: codes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["phone", "MOBILE", SURROGATE, 5], ids=["phone", "MOBILE", "surrogate", "5"]
)
def test_a_bad_identifier_name_is_8932_as_documented(name: Any) -> None:
    data = {**copy.deepcopy(EXPIRY_ITEM), "identifierName": name}
    with pytest.raises(ValidationError) as info:
        from_wire(ExpiryUpdate, data)
    assert (info.value.field, info.value.code) == ("identifierName", 8932)


# -- requests: anything a careless operator might pass ---------------------------------------

careless = (
    hostile
    | st.builds(deeply_nested, st.just(5000))
    | st.sampled_from([LONG_MAX + 1, -1, 0, "", " ", BIG, float("nan"), b"469", 1j])
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from([*EXPIRY_ITEM, "extra"]), careless, max_size=4))
def test_any_expiry_input_is_a_model_or_a_validation_error(changes: dict[str, Any]) -> None:
    data = {**copy.deepcopy(EXPIRY_ITEM), **changes}
    try:
        from_wire(ExpiryUpdate, data)
    except ValidationError as error:
        assert_short_and_writable(error)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            ["redemptionId", "billId", "billNumber", "purpose", "customFields", "entity"]
        ),
        careless,
        max_size=3,
    )
)
def test_any_redemption_input_is_a_model_or_a_validation_error(changes: dict[str, Any]) -> None:
    data = {**copy.deepcopy(REDEMPTION_REQUEST), **changes}
    try:
        from_wire(RedemptionUpdate, data)
    except ValidationError as error:
        assert_short_and_writable(error)
