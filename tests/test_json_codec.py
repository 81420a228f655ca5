"""orjson reads and writes the bodies; what it would read or write differently goes to ``json``.

The result must be what the standard library alone gives: the same values
(integers past 64 bits stay exact, ``NaN`` is read), and the same bytes sent
(numbers with a fraction may be spelt differently: ``1e-05`` and ``0.00001``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capillary_async import CapillaryClient
from capillary_async._transport import Response
from capillary_async._wire import decode, encode

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**19, 10**25]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["\ud800", "é", "\x00", "1234567890123456789012", "𝄞"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and types compared too (1 is not 1.0)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def has_float(value: Any) -> bool:
    if isinstance(value, list):
        return any(has_float(v) for v in value)
    if isinstance(value, dict):
        return any(has_float(v) for v in value.values())
    return isinstance(value, float)


@settings(max_examples=400, deadline=None)
@given(values)
def test_answers_read_exactly_as_the_standard_library_reads_them(value: Any) -> None:
    text = json.dumps(value)  # NaN, Infinity, \ud800 escapes and 25-digit ints included
    assert same(decode(text.encode()), json.loads(text))


@settings(max_examples=400, deadline=None)
@given(values)
def test_bodies_are_the_bytes_the_standard_library_writes(value: Any) -> None:
    try:
        expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: neither can send it
        return
    if has_float(value):
        # Floats: orjson writes 1e-05 as 0.00001, the same number.
        assert same(json.loads(encode(value)), json.loads(expected))
    else:
        assert encode(value) == expected


def test_what_only_the_standard_library_reads_still_reads() -> None:
    assert decode(b'{"paId": 123456789012345678901234567890}') == {
        "paId": 123456789012345678901234567890
    }
    assert decode(b'{"x": -9223372036854775809}') == {"x": -9223372036854775809}
    assert math.isnan(decode(b'{"x": NaN}')["x"])
    assert decode('{"x": "é"}'.encode("utf-16")) == {"x": "é"}
    assert decode(b"not json") == "not json"
    assert encode({"x": float("nan"), "big": 2**70, 1: "int key"}) == (
        b'{"x":NaN,"big":1180591620717411303424,"1":"int key"}'
    )


def test_a_callers_own_value_is_written_as_json_writes_it_or_refused_as_json_refuses() -> None:
    """orjson writes dates, enums, UUIDs, dataclasses json refuses: not for client.request."""
    import dataclasses
    import enum
    import uuid
    from datetime import date

    class Color(enum.Enum):
        RED = 1

    @dataclasses.dataclass
    class Point:
        x: float

    for value in ({"d": date(2026, 1, 2)}, {"c": Color.RED}, {"u": uuid.UUID(int=1)}, Point(1.0)):
        with pytest.raises(TypeError):
            json.dumps(value)
        with pytest.raises(TypeError):
            encode(value, foreign=True)
    assert encode({"x": 1e-07, "n": [1, "é"]}, foreign=True) == '{"x":1e-07,"n":[1,"é"]}'.encode()


async def test_client_request_refuses_what_json_cannot_write(
    make_client: Callable[..., CapillaryClient],
) -> None:
    from datetime import date

    sent: list[Any] = []

    async def script(request: Any) -> Response:
        sent.append(request)
        return Response(status=200, content=b"{}")

    async with make_client(script) as client:
        with pytest.raises(TypeError, match="date"):
            await client.request("POST", "/v2/anything", json={"when": date(2026, 1, 2)})
        assert await client.request("POST", "/v2/anything", json={"x": 1e-07}) == {}
    assert [r.content for r in sent] == [b'{"x":1e-07}']
