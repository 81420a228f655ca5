"""Every validation rule the docs state, at construction and from wire JSON."""

from __future__ import annotations

import copy
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from capillary_async import (
    CustomField,
    Entity,
    EntityType,
    ExpiryDate,
    ExpiryType,
    ExpiryUpdate,
    ExpiryUpdateResult,
    IdentifierName,
    PointsAwardedRefType,
    Redemption,
    RedemptionUpdate,
    StandardMeta,
    ValidationError,
    from_wire,
    to_wire,
)

from .conftest import EXPIRY_ITEM, EXPIRY_SUCCESS, REDEMPTION_REQUEST, REDEMPTION_RESPONSE

ENTITY = Entity(type="CUSTOMER", identifier_type="mobile", identifier_value="919731013853")


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


def wire_error(cls: type[Any], data: Any, **kwargs: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        from_wire(cls, data, **kwargs)
    return info.value


def mutated(change: Any) -> dict[str, Any]:
    data = copy.deepcopy(EXPIRY_ITEM)
    change(data)
    return data


# -- ExpiryUpdate -------------------------------------------------------------


def test_strings_become_enum_members() -> None:
    item = expiry()
    assert item.identifier_name is IdentifierName.MOBILE
    assert item.points_awarded_ref_type is PointsAwardedRefType.POINT_AWARDED
    assert item.expiry_date.expiry_type is ExpiryType.FIXED_DATE
    assert item.ref == (117521910, PointsAwardedRefType.POINT_AWARDED)


def test_members_are_accepted_as_they_are() -> None:
    item = expiry(identifier_name=IdentifierName.EXTERNAL_ID)
    assert item.identifier_name is IdentifierName.EXTERNAL_ID
    assert str(IdentifierName.EXTERNAL_ID) == "externalId"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("identifier_name", "phone", 8932),  # the docs give 8932 for invalid, not 8941
        ("identifier_name", "", 8932),
        ("identifier_value", "", 8933),
        ("identifier_value", "   ", 8933),
        ("program_id", 0, 8934),
        ("program_id", -3, 8934),
        ("program_id", "12.5", 8934),
        ("program_id", True, 8934),
        ("points_awarded_ref_id", None, 8937),
        ("points_awarded_ref_id", "abc", 8937),
        ("points_awarded_ref_type", "POINTS", 8941),
        ("points_awarded_ref_type", None, 8938),
        ("point_category_type", "BONUS", 8941),
        ("expiry_update_reason_type", "LATER", 8941),
    ],
)
def test_expiry_update_field_rules(field: str, value: Any, code: int) -> None:
    with pytest.raises(ValidationError) as info:
        expiry(**{field: value})
    assert info.value.field == field
    assert info.value.code == code
    assert field in str(info.value)


def test_expiry_date_is_required_as_a_model() -> None:
    with pytest.raises(ValidationError) as info:
        expiry(expiry_date={"expiryType": "FIXED_DATE"})
    assert (info.value.field, info.value.code) == ("expiry_date", 8942)


def test_digit_strings_are_read_as_numbers() -> None:
    item = expiry(program_id="469", points_awarded_ref_id=" 117521910 ")
    assert (item.program_id, item.points_awarded_ref_id) == (469, 117521910)


def test_numeric_identifier_value_becomes_a_string() -> None:
    assert expiry(identifier_value=919999999999).identifier_value == "919999999999"


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("FIXED_DATE", "2027-08-09", "2027-08-09"),
        ("FIXED_DATE", date(2027, 8, 9), "2027-08-09"),
        ("FIXED_DAYS", 30, "30"),
        ("FIXED_DAYS", "30", "30"),
        ("FIXED_MONTHS", 6, "6"),
        ("IMMEDIATE", None, None),
    ],
)
def test_expiry_values_by_type(kind: str, value: Any, expected: str | None) -> None:
    assert ExpiryDate(expiry_type=kind, expiry_value=value).expiry_value == expected


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("FIXED_DATE", None),
        ("FIXED_DATE", "09-08-2027"),
        ("FIXED_DATE", "2027-02-30"),
        ("FIXED_DATE", "2027-8-9"),
        ("FIXED_DAYS", None),
        ("FIXED_DAYS", "0"),
        ("FIXED_DAYS", "-5"),
        ("FIXED_DAYS", "1.5"),
        ("FIXED_MONTHS", "six"),
        ("FIXED_MONTHS", True),
    ],
)
def test_expiry_value_must_match_its_type(kind: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        ExpiryDate(expiry_type=kind, expiry_value=value)
    assert (info.value.field, info.value.code) == ("expiry_value", 8942)


def test_expiry_value_refuses_a_datetime() -> None:
    with pytest.raises(ValidationError, match="not a datetime"):
        ExpiryDate(expiry_type="FIXED_DATE", expiry_value=datetime(2030, 1, 1, tzinfo=timezone.utc))


def test_expiry_type_rules() -> None:
    with pytest.raises(ValidationError) as info:
        ExpiryDate(expiry_type="FIXED_WEEKS", expiry_value="3")
    assert (info.value.field, info.value.code) == ("expiry_type", 8941)
    with pytest.raises(ValidationError) as info:
        ExpiryDate(expiry_type="", expiry_value="3")
    assert info.value.code == 8942


def test_idempotency_follows_expiry_type() -> None:
    assert expiry().idempotent
    assert expiry(expiry_date=ExpiryDate(expiry_type="IMMEDIATE")).idempotent
    assert not expiry(expiry_date=ExpiryDate(expiry_type="FIXED_DAYS", expiry_value=3)).idempotent
    assert not expiry(expiry_date=ExpiryDate(expiry_type="FIXED_MONTHS", expiry_value=3)).idempotent


def test_custom_meta_must_be_a_string_map() -> None:
    with pytest.raises(ValidationError) as info:
        expiry(custom_meta={"count": 3})
    assert info.value.field == "custom_meta.count"


def test_models_are_frozen() -> None:
    item = expiry()
    with pytest.raises(AttributeError):
        item.program_id = 5  # type: ignore[misc]


# -- ExpiryUpdate from wire JSON ------------------------------------------------


def test_seed_example_item_round_trips_exactly() -> None:
    item = from_wire(ExpiryUpdate, EXPIRY_ITEM)
    assert item.standard_meta == StandardMeta(
        who_raised="Naman", who_approved="Admin", reason_for_trigger="Extend points expiry"
    )
    assert to_wire(item) == EXPIRY_ITEM


def test_unset_optionals_are_left_out_not_null() -> None:
    wire = to_wire(expiry())
    assert "currencyName" not in wire
    assert "standardMeta" not in wire
    assert None not in wire.values()
    assert to_wire(ExpiryDate(expiry_type="IMMEDIATE")) == {"expiryType": "IMMEDIATE"}


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("identifierName", 8932),
        ("identifierValue", 8933),
        ("programId", 8934),
        ("pointsAwardedRefId", 8937),
        ("pointsAwardedRefType", 8938),
        ("expiryDate", 8942),
    ],
)
def test_missing_required_key_names_it_with_its_code(key: str, code: int) -> None:
    error = wire_error(ExpiryUpdate, mutated(lambda d: d.pop(key)))
    assert (error.field, error.code) == (key, code)
    assert "is required" in str(error)


def test_nested_errors_carry_the_wire_path() -> None:
    error = wire_error(
        ExpiryUpdate,
        mutated(lambda d: d["expiryDate"].update(expiryValue="2025-13-01")),
        path="expiryDateUpdateRequest[3]",
    )
    assert error.field == "expiryDateUpdateRequest[3].expiryDate.expiryValue"
    assert error.code == 8942
    error = wire_error(ExpiryUpdate, mutated(lambda d: d["expiryDate"].pop("expiryType")))
    assert (error.field, error.code) == ("expiryDate.expiryType", 8942)


def test_enum_violation_is_8941_like_the_server() -> None:
    error = wire_error(ExpiryUpdate, mutated(lambda d: d.update(pointsAwardedRefType="NOPE")))
    assert (error.field, error.code) == ("pointsAwardedRefType", 8941)
    assert "POINT_AWARDED_LINEITEM" in error.reason


def test_unknown_keys_are_refused_not_dropped() -> None:
    error = wire_error(ExpiryUpdate, mutated(lambda d: d.update(expiryUpdateReasonNotes="typo")))
    assert error.field == "expiryUpdateReasonNotes"
    assert "unknown field" in error.reason


def test_unknown_standard_meta_key_is_8935() -> None:
    error = wire_error(ExpiryUpdate, mutated(lambda d: d["standardMeta"].update(who="x")))
    assert (error.field, error.code) == ("standardMeta.who", 8935)


def test_standard_meta_values_must_be_strings_8935() -> None:
    # cattrs once turned 5 into "5" here; the server refuses it with 8935.
    error = wire_error(ExpiryUpdate, mutated(lambda d: d["standardMeta"].update(who_raised=5)))
    assert (error.field, error.code) == ("standardMeta.who_raised", 8935)


def test_wrong_json_type_for_an_object() -> None:
    error = wire_error(ExpiryUpdate, mutated(lambda d: d.update(expiryDate="tomorrow")))
    assert error.field == "expiryDate"
    assert "object" in error.reason


def test_validation_error_is_a_value_error_and_pickles() -> None:
    import pickle

    error = wire_error(ExpiryUpdate, mutated(lambda d: d.pop("programId")))
    assert isinstance(error, ValueError)
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert (again.field, again.code, str(again)) == (error.field, error.code, str(error))


# -- RedemptionUpdate -----------------------------------------------------------


def test_redemption_request_round_trips_exactly() -> None:
    update = from_wire(RedemptionUpdate, REDEMPTION_REQUEST)
    assert update.entity.type is EntityType.CUSTOMER
    assert update.custom_fields == {"card_number": "123456"}
    assert to_wire(update) == REDEMPTION_REQUEST


def test_exactly_one_redemption_identifier_749() -> None:
    with pytest.raises(ValidationError) as info:
        RedemptionUpdate(entity=ENTITY, bill_number="b")
    assert info.value.code == 749
    assert "neither" in str(info.value)
    with pytest.raises(ValidationError) as info:
        RedemptionUpdate(
            entity=ENTITY, redemption_id="a", external_reference_number="b", bill_number="b"
        )
    assert info.value.code == 749
    assert "both" in str(info.value)
    assert RedemptionUpdate(entity=ENTITY, external_reference_number="ext-1", purpose="p")


def test_something_to_update_748() -> None:
    with pytest.raises(ValidationError) as info:
        RedemptionUpdate(entity=ENTITY, redemption_id="a")
    assert info.value.code == 748
    with pytest.raises(ValidationError):
        RedemptionUpdate(entity=ENTITY, redemption_id="a", custom_fields={})
    for field, value in [
        ("bill_id", 1),
        ("bill_number", "b"),
        ("purpose", "p"),
        ("custom_fields", {"k": "v"}),
    ]:
        assert RedemptionUpdate(entity=ENTITY, redemption_id="a", **{field: value})


@pytest.mark.parametrize("bill_id", [0, -12345, "12345.67", "ABC123", "-12345", 10**19, 2**63, 1.5])
def test_bill_id_positive_whole_number_that_fits_a_java_long(bill_id: Any) -> None:
    with pytest.raises(ValidationError) as info:
        RedemptionUpdate(entity=ENTITY, redemption_id="a", bill_id=bill_id)
    assert info.value.field == "bill_id"


def test_bill_id_accepts_19_digits() -> None:
    update = RedemptionUpdate(entity=ENTITY, redemption_id="a", bill_id="1234567890123456789")
    assert update.bill_id == 1234567890123456789


def test_purpose_at_most_255_characters() -> None:
    assert RedemptionUpdate(entity=ENTITY, redemption_id="a", purpose="x" * 255)
    with pytest.raises(ValidationError) as info:
        RedemptionUpdate(entity=ENTITY, redemption_id="a", purpose="x" * 256)
    assert info.value.field == "purpose"
    assert "255" in info.value.reason


def test_entity_rules_1219_and_1212() -> None:
    with pytest.raises(ValidationError) as info:
        Entity(type="GROUP", identifier_type="mobile", identifier_value="1")
    assert (info.value.field, info.value.code) == ("type", 1212)
    for field in ("identifier_type", "identifier_value"):
        values = {"type": "FLEET", "identifier_type": "id", "identifier_value": "1", field: ""}
        with pytest.raises(ValidationError) as info:
            Entity(**values)
        assert (info.value.field, info.value.code) == (field, 1219)
    error = wire_error(RedemptionUpdate, {"redemptionId": "a", "billId": 1})
    assert (error.field, error.code) == ("entity", 1219)
    error = wire_error(
        RedemptionUpdate, {"redemptionId": "a", "billId": 1, "entity": {"type": "CUSTOMER"}}
    )
    assert (error.field, error.code) == ("entity.identifierType", 1219)


# -- results ----------------------------------------------------------------------


def test_redemption_response_parses_like_the_seed() -> None:
    redemption = from_wire(Redemption, REDEMPTION_RESPONSE)
    assert redemption.custom_fields == [CustomField(name="card_number", value="123456")]
    assert redemption.redemption_date == datetime(2025, 6, 26, 15, 28, 28, tzinfo=timezone.utc)
    assert redemption.bill_id == -1  # answers may hold values requests may not
    assert redemption.redemption_time == 1750951708000
    assert redemption.request_id is None


def test_results_tolerate_unknown_keys_and_values() -> None:
    body = copy.deepcopy(EXPIRY_SUCCESS)
    logs = body["currencyExpiryUpdateResponse"][0]["pointsExpiryUpdateLogs"]
    logs["paType"] = "POINT_AWARDED_SOMETHING_NEW"
    logs["brandNewField"] = {"x": 1}
    result = from_wire(ExpiryUpdateResult, body)
    entry = result.updates[0]
    assert entry.ref == (117521910, "POINT_AWARDED_SOMETHING_NEW")
    with pytest.raises(ValidationError, match="brandNewField"):
        from_wire(ExpiryUpdateResult, body, strict=True)


def test_iso_timestamps_keep_their_offset() -> None:
    body = copy.deepcopy(EXPIRY_SUCCESS)
    logs = body["currencyExpiryUpdateResponse"][0]["pointsExpiryUpdateLogs"]
    logs["newExpiryDateISO"] = "2025-12-16T14:30:45+05:30"
    logs = from_wire(ExpiryUpdateResult, body).updates[0].points_expiry_update_logs
    assert logs is not None
    assert logs.new_expiry_date_iso == datetime(
        2025, 12, 16, 14, 30, 45, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )
    assert logs.old_expiry_date_iso is not None
    assert logs.old_expiry_date_iso.tzinfo is not None
    assert logs.old_expiry_date == "2026-08-09 23:59:59"  # legacy field kept as given


@pytest.mark.parametrize(
    "body",
    [
        EXPIRY_SUCCESS,
        {"updateCurrencyExpiryDateResponse": EXPIRY_SUCCESS["currencyExpiryUpdateResponse"]},
        {
            "entity": {
                "updateCurrencyExpiryDateResponse": EXPIRY_SUCCESS["currencyExpiryUpdateResponse"],
                "failures": [],
            },
            "errors": [],
            "warnings": [],
        },
    ],
    ids=["currencyExpiryUpdateResponse", "updateCurrencyExpiryDateResponse", "entity"],
)
def test_all_three_documented_envelopes(body: dict[str, Any]) -> None:
    result = from_wire(ExpiryUpdateResult, body)
    assert [u.ref for u in result.updates] == [(117521910, PointsAwardedRefType.POINT_AWARDED)]
    assert result.failures == []
