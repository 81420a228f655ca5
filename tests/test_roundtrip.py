"""``from_wire(to_wire(m)) == m`` for every model, through real JSON text.

The strict converter refuses unknown keys, so a misspelt wire name in either
direction fails here. Result fields also take JSON they cannot read as their
documented type: it must come back exactly as it went out.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from capillary_async import (
    CustomField,
    Entity,
    EntityType,
    ExpiryDate,
    ExpiryType,
    ExpiryUpdate,
    ExpiryUpdateEntry,
    ExpiryUpdateReasonType,
    ExpiryUpdateResult,
    IdentifierName,
    ItemFailure,
    PointCategoryType,
    PointsAwardedRefType,
    PointsExpiryUpdateLog,
    Redemption,
    RedemptionUpdate,
    StandardMeta,
    from_wire,
    to_wire,
)

text = st.text(max_size=20)
required_text = st.text(min_size=1, max_size=20).filter(lambda s: s.strip() != "")
ids = st.integers(min_value=1, max_value=2**63 - 1)  # a Java long, as the server stores them
any_int = st.integers(min_value=-(2**63), max_value=2**63 - 1)
string_maps = st.dictionaries(st.text(min_size=1, max_size=10), text, max_size=3)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=offsets
)


json_values = st.recursive(
    st.none() | st.booleans() | any_int | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=5,
)
# What a lenient scalar keeps as sent: JSON that is not a string (strings may
# be digit or ISO strings, which are read), or a string that reads as nothing.
not_strings = json_values.filter(lambda v: not isinstance(v, str))
unreadable = not_strings | st.from_regex(r"[a-z]{1,8}", fullmatch=True)


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def kept(readable: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A result scalar: its documented type, absent, or JSON it keeps as sent."""
    return st.none() | readable | unreadable


def lenient(enum: Any) -> st.SearchStrategy[Any]:
    return kept(st.sampled_from(list(enum)) | st.from_regex(r"[A-Z_]{3,12}", fullmatch=True))


# Where a model is expected, anything but an object stays in its place as sent.
not_objects = json_values.filter(lambda v: type(v) is not dict)
long_ints = kept(any_int)
texts = st.none() | text | not_strings
times = kept(aware)


expiry_dates = st.one_of(
    st.builds(ExpiryDate, expiry_type=st.just(ExpiryType.FIXED_DATE), expiry_value=st.dates()),
    st.builds(
        ExpiryDate,
        expiry_type=st.sampled_from([ExpiryType.FIXED_DAYS, ExpiryType.FIXED_MONTHS]),
        expiry_value=st.integers(min_value=1, max_value=10**6),
    ),
    st.builds(ExpiryDate, expiry_type=st.just(ExpiryType.IMMEDIATE), expiry_value=opt(text)),
)
standard_metas = st.builds(
    StandardMeta, who_raised=opt(text), who_approved=opt(text), reason_for_trigger=opt(text)
)
expiry_updates = st.builds(
    ExpiryUpdate,
    identifier_name=st.sampled_from(list(IdentifierName)),
    identifier_value=required_text,
    program_id=ids,
    points_awarded_ref_id=ids,
    points_awarded_ref_type=st.sampled_from(list(PointsAwardedRefType)),
    expiry_date=expiry_dates,
    currency_name=opt(text),
    point_category_type=opt(st.sampled_from(list(PointCategoryType))),
    expiry_update_reason_type=opt(st.sampled_from(list(ExpiryUpdateReasonType))),
    expiry_update_reason_note=opt(text),
    standard_meta=opt(standard_metas),
    custom_meta=opt(string_maps),
)
entities = st.builds(
    Entity,
    type=st.sampled_from(list(EntityType)),
    identifier_type=required_text,
    identifier_value=required_text,
)


@st.composite
def redemption_updates(draw: st.DrawFn) -> RedemptionUpdate:
    ident = draw(required_text)
    use_external = draw(st.booleans())
    bill_id = draw(opt(ids))
    bill_number = draw(opt(text))
    purpose = draw(opt(st.text(max_size=255)))
    custom = draw(opt(string_maps))
    if bill_id is None and bill_number is None and purpose is None and not custom:
        bill_number = draw(text)
    return RedemptionUpdate(
        entity=draw(entities),
        redemption_id=None if use_external else ident,
        external_reference_number=ident if use_external else None,
        bill_id=bill_id,
        bill_number=bill_number,
        purpose=purpose,
        custom_fields=custom,
    )


custom_fields = st.builds(CustomField, name=texts, value=json_values)
redemptions = st.builds(
    Redemption,
    id=long_ints,
    program_id=long_ints,
    points_redeemed=kept(st.floats(allow_nan=False, allow_infinity=False)),
    bill_id=long_ints,
    bill_number=texts,
    validation_code=texts,
    notes=texts,
    redemption_time=long_ints,
    points_redemption_time=long_ints,
    till_id=long_ints,
    till_name=texts,
    point_deduction_list=json_values,
    redemption_id=texts,
    custom_fields=st.lists(custom_fields, max_size=3),
    customer_id=long_ints,
    redemption_purpose=texts,
    redemption_date=times,
    warnings=json_values,
)
logs = st.builds(
    PointsExpiryUpdateLog,
    pa_type=lenient(PointsAwardedRefType),
    pa_id=long_ints,
    expiry_update_reason_type=lenient(ExpiryUpdateReasonType),
    expiry_update_reason_note=texts,
    old_expiry_date=texts,
    old_expiry_date_iso=times,
    new_expiry_date=texts,
    new_expiry_date_iso=times,
    event_log_id=long_ints,
    event_date=texts,
    event_date_iso=times,
    standard_meta=json_values,  # the answer's standardMeta is any JSON, kept as sent
    custom_meta=json_values,
)
entries = st.builds(
    ExpiryUpdateEntry,
    customer_id=long_ints,
    program_id=long_ints,
    currency_name=texts,
    points_expiry_update_logs=st.none() | logs | not_objects,
)
failures = st.builds(
    ItemFailure,
    points_awarded_ref_id=long_ints,
    points_awarded_ref_type=lenient(PointsAwardedRefType),
    error_code=long_ints,
    error_message=texts,
)
results = st.builds(
    ExpiryUpdateResult,
    updates=st.lists(entries | not_objects, max_size=3),
    failures=st.lists(failures | not_objects, max_size=3),
    warnings=json_values.filter(lambda v: v is not None),  # null reads as []
    errors=json_values.filter(lambda v: v is not None),
)

MODELS = st.one_of(
    expiry_updates,
    expiry_dates,
    standard_metas,
    entities,
    redemption_updates(),
    custom_fields,
    redemptions,
    logs,
    entries,
    failures,
    results,
)


@given(MODELS)
def test_round_trip_through_json(model: Any) -> None:
    wire = json.loads(json.dumps(to_wire(model)))
    assert from_wire(type(model), wire, strict=True) == model


@given(expiry_updates)
def test_wire_form_has_no_nulls_and_only_wire_names(item: ExpiryUpdate) -> None:
    wire = to_wire(item)

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                assert inner is not None, key
                walk(inner)

    walk(wire)
    assert set(wire) <= {
        "identifierName",
        "identifierValue",
        "programId",
        "pointsAwardedRefId",
        "pointsAwardedRefType",
        "currencyName",
        "pointCategoryType",
        "expiryUpdateReasonType",
        "expiryUpdateReasonNote",
        "standardMeta",
        "customMeta",
        "expiryDate",
    }


def _general(data: Any) -> Any:
    """The general (cattrs) path of from_wire, without the direct one."""
    from capillary_async import _converters, _wire_errors

    try:
        return _converters._detailed.structure(data, ExpiryUpdate)
    except Exception as exc:
        return _wire_errors.translate(exc, ExpiryUpdate, "")


mutations = st.sampled_from(
    [
        ("programId", "12"),
        ("programId", "x"),
        ("programId", None),
        ("identifierValue", 919999),
        ("identifierName", "phone"),
        ("pointsAwardedRefType", "NOPE"),
        ("extra", 1),
        ("standardMeta", {"who_raised": 5}),
        ("standardMeta", {"who": "x"}),
        ("standardMeta", "text"),
        ("customMeta", {"k": 1}),
        ("expiryDate", {"expiryType": "FIXED_DAYS", "expiryValue": 3}),
        ("expiryDate", {"expiryType": "FIXED_DATE"}),
        ("expiryDate", {"expiryType": "IMMEDIATE", "other": 1}),
        ("expiryDate", []),
        # Careless input both paths must refuse alike: text that cannot be sent
        # as UTF-8, numbers past a Java long or past Python's int-from-text limit.
        ("identifierValue", json.loads('"91\\ud800"')),
        ("customMeta", {json.loads('"\\udfff"'): "v"}),
        ("standardMeta", {"who_raised": json.loads('"\\ud800"')}),
        ("programId", 2**63),
        ("programId", str(2**63 - 1)),
        ("pointsAwardedRefId", "9" * 5000),
        ("expiryDate", {"expiryType": "FIXED_DAYS", "expiryValue": str(2**63)}),
        ("expiryDate", {"expiryType": "FIXED_MONTHS", "expiryValue": 2**63 - 1}),
    ]
)


@given(expiry_updates, st.lists(mutations, max_size=3), st.booleans())
def test_the_direct_path_matches_the_general_one(
    item: ExpiryUpdate, changes: list[tuple[str, Any]], drop: bool
) -> None:
    from capillary_async import ValidationError

    wire = json.loads(json.dumps(to_wire(item)))
    for key, value in changes:
        if value is None:
            wire.pop(key, None)
        else:
            wire[key] = value
    if drop:
        wire.pop("expiryDate", None)
    expected = _general(wire)
    try:
        got: Any = from_wire(ExpiryUpdate, wire)
    except ValidationError as exc:
        got = exc
    if isinstance(expected, ValidationError):
        assert isinstance(got, ValidationError)
        assert (got.field, got.code, got.reason) == (expected.field, expected.code, expected.reason)
    else:
        assert got == expected
