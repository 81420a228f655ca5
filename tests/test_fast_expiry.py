"""The bulk path's fast lane for updateExpiry items equals the model's general path.

``checked_wire`` may decline anything; what it accepts must be what the model
accepts, sent as the very bytes ``to_wire`` of that model gives, with the same
key and idempotence. What it declines reaches the model, so errors are the
model's own by construction; the bulk spec's verdicts are checked here too.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capillary_async import ExpiryUpdate, ValidationError, from_wire, to_wire
from capillary_async._bulk._specs import ExpirySpec
from capillary_async._fast_expiry import checked_wire

MAX = 2**63 - 1
MISSING = object()


def mostly(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
    """Valid seven times in eight, so that whole items are often valid too."""
    return st.integers(0, 7).flatmap(lambda n: odd if n == 0 else valid)


longs = mostly(
    st.one_of(
        st.integers(min_value=1, max_value=10**6),
        st.integers(min_value=MAX - 2, max_value=MAX),
        st.sampled_from(["469", "007", "9" * 18]),
    ),
    st.one_of(
        st.integers(min_value=-5, max_value=0),
        st.integers(min_value=MAX + 1, max_value=MAX + 2),
        st.sampled_from(["0", "-3", " 12", "12 ", "", "9" * 19, "1" * 30, "١٢", "²", "12.0"]),
        st.sampled_from(["1e3", None, True, False, 3.0, [], {}]),
    ),
)
texts = mostly(
    st.one_of(
        st.sampled_from(["17", "a@b.example", "x y", "+91 99"]),
        st.integers(min_value=-(10**20), max_value=10**20),
    ),
    st.one_of(
        st.sampled_from([" ", "", "\t", "\x1c", "é", "\ud800", None, True, 1.5, ["1"], {}]),
        st.text(max_size=6),
    ),
)
names = mostly(
    st.sampled_from(["id", "mobile", "email", "externalId"]),
    st.sampled_from(["ID", "", "card", None, 3, ["id"]]),
)
ref_types = mostly(
    st.sampled_from(
        ["POINT_AWARDED", "POINT_AWARDED_LINEITEM", "POINT_AWARDED_CUSTOMER_PROMOTION"]
    ),
    st.sampled_from(["point_awarded", "", None, 7, ["POINT_AWARDED"]]),
)
expiry_types = mostly(
    st.sampled_from(["FIXED_DATE", "FIXED_DAYS", "FIXED_MONTHS", "IMMEDIATE"]),
    st.sampled_from(["fixed_date", "", None, 1]),
)
expiry_values = st.one_of(
    st.sampled_from(
        ["2099-12-31", "2026-02-29", "2028-02-29", "2099-1-31", "2099-12-31 ", "٢٠٩٩-12-31"]
    ),
    st.sampled_from(["30", "030", "0", "-1", " 30", "9" * 18, "9" * 20, "", " ", "x", "é"]),
    st.integers(min_value=-3, max_value=40),
    st.integers(min_value=MAX - 1, max_value=MAX + 1),
    st.sampled_from([None, True, 2.0, ["30"]]),
)
optional_texts = st.one_of(st.none(), st.sampled_from(["POINTS", "", "é", "\ud800", 5, ["x"]]))
categories = st.one_of(st.none(), st.sampled_from(["REGULAR", "PROMISED", "regular", "", 3]))
reasons = st.one_of(st.none(), st.sampled_from(["EXTENSION", "REVERSAL", "OTHER", "nope", 2]))

FITTING = {
    "FIXED_DATE": st.sampled_from(["2099-12-31", "2028-02-29", "2030-01-01"]),
    "FIXED_DAYS": st.sampled_from(["30", "030", 30, MAX, "9" * 18]),
    "FIXED_MONTHS": st.sampled_from(["6", 12, "1"]),
    "IMMEDIATE": st.sampled_from([MISSING, None, "x", "", "2099-12-31"]),
}


@st.composite
def expiry_dates(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(st.sampled_from([None, "2099-12-31", [], {"expiryType": "IMMEDIATE", "x": 1}]))
    kind = draw(expiry_types)
    fitting = FITTING.get(kind) if isinstance(kind, str) else None
    value = draw(
        mostly(fitting, expiry_values) if fitting is not None else st.just(MISSING) | expiry_values
    )
    data: dict[str, Any] = {"expiryType": kind}
    if value is not MISSING:
        data["expiryValue"] = value
    if draw(st.booleans()):
        data = dict(reversed(list(data.items())))
    if draw(st.integers(0, 30)) == 0:
        del data["expiryType"]
    return data


@st.composite
def items(draw: st.DrawFn) -> Any:
    fields: list[tuple[str, Any]] = [
        ("identifierName", draw(names)),
        ("identifierValue", draw(texts)),
        ("programId", draw(longs)),
        ("pointsAwardedRefId", draw(longs)),
        ("pointsAwardedRefType", draw(ref_types)),
        ("expiryDate", draw(expiry_dates())),
    ]
    for key, values in (
        ("currencyName", optional_texts),
        ("pointCategoryType", categories),
        ("expiryUpdateReasonType", reasons),
        ("expiryUpdateReasonNote", optional_texts),
        ("standardMeta", st.sampled_from([None, {"who_raised": "ops"}, {"x": 1}])),
        ("customMeta", st.sampled_from([None, {"k": "v"}, {"k": 1}])),
        ("unknownKey", st.just(1)),
    ):
        if draw(st.integers(0, 7)) == 0:
            fields.append((key, draw(values)))
    drop = draw(st.integers(0, 12))
    if drop < len(fields) and draw(st.integers(0, 15)) == 0:
        del fields[drop]
    return dict(draw(st.permutations(fields)))


def general(data: Any) -> tuple[bytes, Any, bool] | ValidationError:
    try:
        model = from_wire(ExpiryUpdate, data)
    except ValidationError as exc:
        return exc
    return orjson.dumps(to_wire(model)), model.ref, model.idempotent


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items())
def test_fast_lane_takes_only_what_the_model_takes_and_sends_the_same_bytes(data: Any) -> None:
    expected = general(data)
    fast = checked_wire(data)
    if fast is not None:
        assert not isinstance(expected, ValidationError), expected
        wire, key, idempotent = fast
        assert (orjson.dumps(wire), key, idempotent) == expected
        assert list(wire) == list(to_wire(from_wire(ExpiryUpdate, data)))  # the model's order


@settings(max_examples=500, deadline=None)
@given(items())
def test_the_bulk_spec_gives_the_model_its_verdict_and_its_wire_form(data: Any) -> None:
    spec = ExpirySpec(None, None)  # type: ignore[arg-type]
    expected = general(data)
    if isinstance(expected, ValidationError):
        with pytest.raises(ValidationError) as caught:
            spec.prepare(data)
        assert (caught.value.field, caught.value.reason, caught.value.code) == (
            expected.field,
            expected.reason,
            expected.code,
        )
        return
    prepared = spec.prepare(data)
    assert (orjson.dumps(prepared.wire), prepared.key, prepared.idempotent) == expected
    assert prepared.model() == from_wire(ExpiryUpdate, data)


def test_the_common_rows_take_the_fast_lane() -> None:
    row = {
        "identifierName": "id",
        "identifierValue": "17",
        "programId": 469,
        "pointsAwardedRefId": 9001,
        "pointsAwardedRefType": "POINT_AWARDED",
        "expiryDate": {"expiryType": "FIXED_DATE", "expiryValue": "2099-12-31"},
    }
    csv_row = {
        **row,
        "programId": "469",
        "pointsAwardedRefId": "9001",
        "expiryDate": {"expiryType": "FIXED_DAYS", "expiryValue": "30"},
        "currencyName": "POINTS",
    }
    assert checked_wire(row) is not None
    assert checked_wire(csv_row) is not None
    wire, _, idempotent = checked_wire(csv_row)  # type: ignore[misc]
    assert wire["programId"] == 469
    assert not idempotent
    # A changed input dict does not change what was checked and will be sent.
    row_copy = dict(row)
    prepared = ExpirySpec(None, None).prepare(row_copy)  # type: ignore[arg-type]
    row_copy["programId"] = -1
    assert prepared.wire["programId"] == 469


redemption_values = st.one_of(
    st.none(),
    st.sampled_from(["R1", "", " ", "é", "\ud800", 5, 0, -1, True, 2.5, [], {}, "12"]),
    st.text(max_size=4),
)


@st.composite
def redemption_bodies(draw: st.DrawFn) -> Any:
    entity: Any = {
        "type": draw(mostly(st.just("CUSTOMER"), st.sampled_from(["customer", None, 3]))),
        "identifierType": draw(mostly(st.just("id"), st.sampled_from(["", None, []]))),
        "identifierValue": draw(mostly(st.sampled_from(["17", 17]), st.sampled_from([" ", None]))),
    }
    if draw(st.integers(0, 10)) == 0:
        entity = draw(st.sampled_from([None, "CUSTOMER", [], 3, {**entity, "x": 1}]))
    body: dict[str, Any] = {"entity": entity}
    body["redemptionId"] = draw(mostly(st.just("R1"), redemption_values))
    for key in ("externalReferenceNumber", "billId", "billNumber", "purpose"):
        if draw(st.booleans()):
            body[key] = draw(mostly(st.sampled_from(["b", "12", 12]), redemption_values))
    if draw(st.integers(0, 3)) == 0:
        body["customFields"] = draw(
            st.sampled_from([None, {"a": "b"}, {"a": 1}, [], {}, "x", {"": "v"}])
        )
    if draw(st.integers(0, 10)) == 0:
        body["unknown"] = 1
    if draw(st.integers(0, 10)) == 0:
        del body["entity"]
    return body


@settings(max_examples=1500, deadline=None)
@given(redemption_bodies())
def test_the_direct_redemption_path_gives_the_general_paths_model_or_error(body: Any) -> None:
    from capillary_async import RedemptionUpdate
    from capillary_async._converters import _detailed, translate

    try:
        expected: Any = _detailed.structure(body, RedemptionUpdate)
    except Exception as exc:  # any failure is the general path's error
        expected = translate(exc, RedemptionUpdate, "")
    try:
        got: Any = from_wire(RedemptionUpdate, body)
    except ValidationError as exc:
        got = exc
    if isinstance(expected, ValidationError):
        assert isinstance(got, ValidationError)
        assert (got.field, got.reason, got.code) == (expected.field, expected.reason, expected.code)
    else:
        assert got == expected
