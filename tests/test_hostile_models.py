"""Odd answers and careless input: odd shapes never crash, odd text never leaks.

A result model must never fail a call the server has already applied, so every
result field is fed JSON of the wrong shape, integers past Python's 4,300-digit
conversion limit and nesting past the recursion limit. A request model must
refuse what the server cannot take (lone surrogates, numbers past a Java long)
with a ``ValidationError`` whose message stays short and writable as UTF-8.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capillary_async import (
    CustomField,
    Entity,
    ExpiryDate,
    ExpiryUpdate,
    ExpiryUpdateEntry,
    ExpiryUpdateResult,
    ItemFailure,
    PointsAwardedRefType,
    PointsExpiryUpdateLog,
    Redemption,
    RedemptionUpdate,
    StandardMeta,
    ValidationError,
    from_wire,
    to_wire,
)
from capillary_async._converters import split_expiry_envelope

from .conftest import EXPIRY_ITEM, EXPIRY_SUCCESS, REDEMPTION_REQUEST, REDEMPTION_RESPONSE

SURROGATE = json.loads('"\\ud800"')  # what a "\ud800" escape in an input file becomes
HUGE = 10**5000  # str() and repr() of it raise ValueError on Python 3.11+
HUGE_DIGITS = "9" * 5000  # and so does int() of it
LONG_MAX = 2**63 - 1
BIG = "x" * 2_000_000

ENTRY = EXPIRY_SUCCESS["currencyExpiryUpdateResponse"][0]
LOG_KEYS = list(ENTRY["pointsExpiryUpdateLogs"])
ENTRY_KEYS = list(ENTRY)
FAILURE_KEYS = ["pointsAwardedRefId", "pointsAwardedRefType", "errorCode", "errorMessage"]
REDEMPTION_KEYS = list(REDEMPTION_RESPONSE)


def deeply_nested(depth: int = 100_000) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def answer(**log_changes: Any) -> dict[str, Any]:
    """The seed's updateExpiry answer with some fields of its log replaced."""
    body = copy.deepcopy(EXPIRY_SUCCESS)
    body["currencyExpiryUpdateResponse"][0]["pointsExpiryUpdateLogs"].update(log_changes)
    return body


def only_log(body: dict[str, Any]) -> PointsExpiryUpdateLog:
    entry = from_wire(ExpiryUpdateResult, body).updates[0]
    assert isinstance(entry, ExpiryUpdateEntry)
    assert isinstance(entry.points_expiry_update_logs, PointsExpiryUpdateLog)
    return entry.points_expiry_update_logs


def redemption(**changes: Any) -> Redemption:
    return from_wire(Redemption, {**REDEMPTION_RESPONSE, **changes})


def assert_short_and_writable(error: ValidationError, limit: int = 600) -> None:
    text = str(error)
    text.encode("utf-8")  # a lone surrogate would make this raise
    assert SURROGATE not in text
    assert SURROGATE not in error.field
    assert len(text) < limit, text[:200]


# -- results: "Object" fields keep their JSON -------------------------------------

SHAPES = [
    {"code": 1, "message": "side action failed"},
    [1, {"nested": [2, None]}],
    5,
    1.5,
    "text",
    True,
    {"deep": {"er": {"still": ["x"]}}},
]


def test_an_extra_standard_meta_key_in_the_answer_does_not_fail_the_call() -> None:
    meta = {"who_raised": "Naman", "who_approved": "Admin", "ticket": "T-1", "count": 2}
    assert only_log(answer(standardMeta=meta)).standard_meta == meta


@pytest.mark.parametrize("shape", SHAPES, ids=repr)
def test_object_fields_of_the_expiry_log_keep_their_json(shape: Any) -> None:
    logs = only_log(answer(standardMeta=shape, customMeta=shape))
    for value in (logs.standard_meta, logs.custom_meta):
        assert value == shape
        assert type(value) is type(shape)


def test_nested_custom_meta_values_stay_json_not_python_reprs() -> None:
    meta = {"abc": {"x": [1, 2]}, "n": 3, "ok": "yes"}
    assert only_log(answer(customMeta=meta)).custom_meta == meta


@pytest.mark.parametrize("shape", SHAPES, ids=repr)
def test_object_fields_of_a_redemption_keep_their_json(shape: Any) -> None:
    result = redemption(warnings=shape, pointDeductionList=shape)
    for value in (result.warnings, result.point_deduction_list):
        assert value == shape
        assert type(value) is type(shape)


@pytest.mark.parametrize("shape", SHAPES, ids=repr)
def test_warnings_and_errors_of_an_expiry_answer_keep_their_json(shape: Any) -> None:
    body = {**copy.deepcopy(EXPIRY_SUCCESS), "warnings": shape, "errors": shape}
    result = from_wire(ExpiryUpdateResult, body)
    for value in (result.warnings, result.errors):
        assert value == shape
        assert type(value) is type(shape)
    assert len(result.updates) == 1


def test_split_expiry_envelope_keeps_odd_warnings_and_errors() -> None:
    body = {"currencyExpiryUpdateResponse": [ENTRY], "warnings": 5, "errors": 7}
    assert split_expiry_envelope(body) == ([ENTRY], [], 5, 7)
    both = {"entity": {"failures": [], "warnings": {"a": 1}}, "warnings": [1]}
    assert split_expiry_envelope(both)[2] == [1, {"a": 1}]  # neither level is dropped
    assert split_expiry_envelope({"warnings": None, "errors": None})[2:] == ([], [])


def test_failures_at_both_envelope_levels_are_all_kept() -> None:
    a, b = {"pointsAwardedRefId": 1}, {"pointsAwardedRefId": 2}
    body = {"entity": {"failures": [a]}, "failures": [b]}
    assert split_expiry_envelope(body)[1] == [a, b]
    assert split_expiry_envelope({"failures": {}})[1] == []  # names no failure
    with pytest.raises(ValidationError) as info:
        split_expiry_envelope({"failures": {"pointsAwardedRefId": 1}})
    assert info.value.field == "failures"


# -- results: customFields ------------------------------------------------------------


def test_custom_fields_as_an_object_become_entries() -> None:
    result = redemption(customFields={"card_number": "123456", "visits": 3})
    assert result.custom_fields == [
        CustomField(name="card_number", value="123456"),
        CustomField(name="visits", value=3),
    ]


def test_custom_field_values_keep_their_json() -> None:
    result = redemption(customFields=[{"name": "tags", "value": {"a": [1, 2]}}])
    assert result.custom_fields == [CustomField(name="tags", value={"a": [1, 2]})]


@pytest.mark.parametrize(
    ("sent", "values"),
    [
        (None, []),
        ("card=1", ["card=1"]),
        (5, [5]),
        ([5, {"name": "b", "type": "t"}, {"value": 1}], [5, {"name": "b", "type": "t"}, 1]),
    ],
    ids=["null", "string", "number", "odd entries"],
)
def test_other_custom_field_shapes_become_nameless_entries(sent: Any, values: Any) -> None:
    read = redemption(customFields=sent).custom_fields
    assert [(field.name, field.value) for field in read] == [(None, value) for value in values]


# -- results: scalars -------------------------------------------------------------------


def test_scalars_of_the_expected_shape_are_converted() -> None:
    result = redemption(
        id="26503632", billId="-1", redemptionTime="1750951708000", pointsRedeemed="101.5"
    )
    assert (result.id, result.bill_id, result.redemption_time) == (26503632, -1, 1750951708000)
    assert result.points_redeemed == 101.5
    assert redemption(pointsRedeemed=101).points_redeemed == 101.0
    logs = only_log(answer(paId="117521910", eventLogId="41420339"))
    assert (logs.pa_id, logs.event_log_id) == (117521910, 41420339)
    failure = {
        "pointsAwardedRefId": "5",
        "pointsAwardedRefType": "POINT_AWARDED",
        "errorCode": "8015",
    }
    parsed = from_wire(ExpiryUpdateResult, {"failures": [failure]}).failures[0]
    assert isinstance(parsed, ItemFailure)
    assert parsed.ref == (5, PointsAwardedRefType.POINT_AWARDED)
    assert parsed.error_code == 8015


@pytest.mark.parametrize(
    ("key", "attribute", "sent"),
    [
        ("redemptionTime", "redemption_time", "2025-06-26T15:28:28Z"),
        ("redemptionDate", "redemption_date", 1750951708000),
        ("redemptionDate", "redemption_date", "yesterday"),
        ("programId", "program_id", 1.5),
        ("tillId", "till_id", True),
        ("billId", "bill_id", [1]),
        ("customerId", "customer_id", "12 34"),
        ("notes", "notes", {"a": 1}),
        ("billNumber", "bill_number", 123),
        ("pointsRedeemed", "points_redeemed", "lots"),
        ("pointsRedeemed", "points_redeemed", 2**60 + 1),  # not exactly a float
    ],
)
def test_odd_redemption_scalars_are_kept_as_sent(key: str, attribute: str, sent: Any) -> None:
    value = getattr(redemption(**{key: sent}), attribute)
    assert value == sent
    assert type(value) is type(sent)


@pytest.mark.parametrize(
    ("key", "attribute", "sent"),
    [
        ("paId", "pa_id", "abc"),
        ("paType", "pa_type", 5),
        ("paType", "pa_type", {"name": "POINT_AWARDED"}),
        ("newExpiryDateISO", "new_expiry_date_iso", "2026-13-45T99:00:00Z"),
        ("eventDateISO", "event_date_iso", SURROGATE),
        ("oldExpiryDate", "old_expiry_date", ["2026-08-09"]),
    ],
)
def test_odd_expiry_log_scalars_are_kept_as_sent(key: str, attribute: str, sent: Any) -> None:
    value = getattr(only_log(answer(**{key: sent})), attribute)
    assert value == sent
    assert type(value) is type(sent)


def test_entries_that_are_not_objects_stay_in_their_place() -> None:
    body = {"currencyExpiryUpdateResponse": [7, ENTRY, "x"], "failures": [None, [1]]}
    result = from_wire(ExpiryUpdateResult, body)
    assert result.updates[0] == 7
    assert result.updates[2] == "x"
    assert isinstance(result.updates[1], ExpiryUpdateEntry)
    assert result.failures == [None, [1]]


def test_logs_that_are_not_an_object_are_kept_and_name_no_record() -> None:
    logs = [ENTRY["pointsExpiryUpdateLogs"]]
    entry = from_wire(ExpiryUpdateEntry, {**ENTRY, "pointsExpiryUpdateLogs": logs})
    assert entry.points_expiry_update_logs == logs
    assert entry.ref == (None, None)


# -- results: sizes and depths that break Python's own conversions ---------------------


def test_a_5000_digit_integer_in_every_field_is_kept() -> None:
    result = from_wire(Redemption, dict.fromkeys(REDEMPTION_KEYS, HUGE))
    assert result.id == HUGE
    assert result.points_redeemed == HUGE  # past the exact floats: kept as the int
    assert result.redemption_date == HUGE
    assert result.custom_fields == [CustomField(value=HUGE)]
    body = {
        "currencyExpiryUpdateResponse": [
            {
                **dict.fromkeys(ENTRY_KEYS, HUGE),
                "pointsExpiryUpdateLogs": dict.fromkeys(LOG_KEYS, HUGE),
            }
        ],
        "failures": [dict.fromkeys(FAILURE_KEYS, HUGE)],
        "warnings": HUGE,
        "errors": HUGE,
    }
    expiry = from_wire(ExpiryUpdateResult, body)
    entry = expiry.updates[0]
    assert isinstance(entry, ExpiryUpdateEntry)
    assert entry.ref == (HUGE, HUGE)
    failure = expiry.failures[0]
    assert isinstance(failure, ItemFailure)
    assert failure.ref == (HUGE, HUGE)
    assert to_wire(expiry)["failures"][0]["errorCode"] == HUGE


def test_a_5000_digit_string_where_an_int_belongs_is_kept() -> None:
    assert sys.get_int_max_str_digits() < 5000  # else this test proves nothing
    result = redemption(id=HUGE_DIGITS, redemptionTime=HUGE_DIGITS, pointsRedeemed=HUGE_DIGITS)
    assert (result.id, result.redemption_time, result.points_redeemed) == (HUGE_DIGITS,) * 3
    assert only_log(answer(paId=HUGE_DIGITS)).pa_id == HUGE_DIGITS


@pytest.fixture
def no_int_digit_limit() -> Any:
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    yield
    sys.set_int_max_str_digits(old)


@pytest.mark.usefixtures("no_int_digit_limit")
def test_the_digit_bounds_hold_with_the_interpreter_limit_lifted() -> None:
    # Without a limit int() and str() of such numbers take quadratic time.
    assert redemption(id=HUGE_DIGITS).id == HUGE_DIGITS
    with pytest.raises(ValidationError):
        expiry(identifier_value=HUGE)
    with pytest.raises(ValidationError):
        expiry(program_id=HUGE_DIGITS)


def test_nesting_past_the_recursion_limit_is_kept_by_reference() -> None:
    deep = deeply_nested()
    result = from_wire(Redemption, dict.fromkeys(REDEMPTION_KEYS, deep))
    assert result.warnings is deep
    assert result.point_deduction_list is deep
    assert result.bill_id is deep
    assert result.custom_fields[0].value is deep[0]
    to_wire(result)
    body = {
        "currencyExpiryUpdateResponse": [
            {
                **dict.fromkeys(ENTRY_KEYS, deep),
                "pointsExpiryUpdateLogs": dict.fromkeys(LOG_KEYS, deep),
            },
            deep,
        ],
        "failures": [dict.fromkeys(FAILURE_KEYS, deep), deep],
        "entity": {"warnings": deep},
        "warnings": deep,
        "errors": deep,
    }
    expiry = from_wire(ExpiryUpdateResult, body)
    entry = expiry.updates[0]
    assert isinstance(entry, ExpiryUpdateEntry)
    logs = entry.points_expiry_update_logs
    assert isinstance(logs, PointsExpiryUpdateLog)
    assert logs.custom_meta is deep
    assert logs.standard_meta is deep
    assert expiry.updates[1] is deep
    assert expiry.errors is deep
    to_wire(expiry)


# -- results: only the containers can fail ------------------------------------------------


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


def objects(keys: list[str], **special: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Objects with any subset of ``keys``, each holding any JSON (or ``special``'s)."""
    optional = {key: special.get(key, hostile) for key in keys}
    return st.fixed_dictionaries({}, optional=optional)


entries = objects(ENTRY_KEYS, pointsExpiryUpdateLogs=objects(LOG_KEYS) | hostile)
item_list = st.lists(entries | hostile, max_size=3)
failure_list = st.lists(objects(FAILURE_KEYS) | hostile, max_size=3)
lists = {
    "currencyExpiryUpdateResponse": item_list,
    "updateCurrencyExpiryDateResponse": item_list,
    "failures": failure_list,
}
expiry_answers = objects(
    [*lists, "warnings", "errors", "entity", "extra"], **lists
) | st.fixed_dictionaries(
    {"entity": objects(["updateCurrencyExpiryDateResponse", "failures", "warnings"], **lists)},
    optional={"warnings": hostile, "errors": hostile, "failures": failure_list, "extra": hostile},
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(expiry_answers)
def test_any_expiry_answer_with_its_lists_in_place_is_read(body: dict[str, Any]) -> None:
    result = from_wire(ExpiryUpdateResult, body)
    for entry in result.updates:
        if isinstance(entry, ExpiryUpdateEntry):
            entry.ref  # noqa: B018 - must not raise either
    to_wire(result)


@settings(max_examples=300)
@given(objects([*REDEMPTION_KEYS, "unknownKey"]))
def test_any_redemption_answer_object_is_read(body: dict[str, Any]) -> None:
    result = from_wire(Redemption, body)
    assert all(isinstance(field, CustomField) for field in result.custom_fields)
    to_wire(result)


@given(hostile.filter(lambda v: not isinstance(v, dict)))
def test_an_answer_that_is_not_an_object_is_a_validation_error(body: Any) -> None:
    for cls in (Redemption, ExpiryUpdateResult):
        with pytest.raises(ValidationError):
            from_wire(cls, body)


@given(hostile.filter(lambda v: v is not None and not isinstance(v, list)))
def test_a_success_list_that_is_not_a_list_is_a_validation_error(value: Any) -> None:
    for key in ("currencyExpiryUpdateResponse", "updateCurrencyExpiryDateResponse"):
        with pytest.raises(ValidationError) as info:
            from_wire(ExpiryUpdateResult, {key: value})
        assert info.value.field == key


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
        # a missing field names the unknown keys beside it, bounded and escaped
        (lambda d: d.update({"programI\ud800": d.pop("programId")}), "programId"),
        (lambda d: d.update({BIG: d.pop("programId")}), "programId"),
        (
            lambda d: (d.pop("programId"), d.update({f"k{i}": 1 for i in range(10_000)})),
            "programId",
        ),
        (
            lambda d: d["expiryDate"].update({BIG: d["expiryDate"].pop("expiryType")}),
            "expiryDate.expiryType",
        ),
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
