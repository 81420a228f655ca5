"""Input files as operators save them: misspelt keys.

A row that cannot be used names its line and why.
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import pytest

from capillary_async import (
    BearerToken,
    ExpiryUpdate,
    RedemptionUpdate,
    ValidationError,
    from_wire,
)
from capillary_async.cli import main

from .conftest import EXPIRY_ITEM, REDEMPTION_REQUEST


def wire_error(data: Any, cls: type[Any] = ExpiryUpdate, **kwargs: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        from_wire(cls, data, **kwargs)
    return info.value


def item(n: int = 0, note: str = "Prolongé") -> dict[str, Any]:
    """One valid expiry row."""
    return {
        "identifierName": "mobile",
        "identifierValue": f"91999999{n:04d}",
        "programId": 469,
        "pointsAwardedRefId": 1000 + n,
        "pointsAwardedRefType": "POINT_AWARDED",
        "expiryDate": {"expiryType": "IMMEDIATE"},
        "expiryUpdateReasonNote": f"{note} {n}",
    }


# -- a misspelt key ------------------------------------------------------------------------------


def test_a_misspelt_key_is_named_beside_the_field_it_leaves_missing() -> None:
    data = copy.deepcopy(EXPIRY_ITEM)
    data["pointsAwardedRefld"] = data.pop("pointsAwardedRefId")  # a lower-case L for the I
    error = wire_error(data)
    assert (error.field, error.code) == ("pointsAwardedRefId", 8937)
    assert str(error) == (
        "pointsAwardedRefId: is required; the input has an unknown key 'pointsAwardedRefld' "
        "(did you mean 'pointsAwardedRefId'?) (Capillary code 8937)"
    )


def test_a_misspelt_nested_key_is_named_by_its_dotted_path() -> None:
    data = copy.deepcopy(EXPIRY_ITEM)
    data["expiryDate"]["expiryTyp"] = data["expiryDate"].pop("expiryType")
    error = wire_error(data, path="expiryDateUpdateRequest[3]")
    assert error.field == "expiryDateUpdateRequest[3].expiryDate.expiryType"
    assert error.code == 8942
    assert "unknown key 'expiryDate.expiryTyp' (did you mean 'expiryDate.expiryType'?)" in str(
        error
    )
    # and in a redemption's entity, a spelling in another case
    data = copy.deepcopy(REDEMPTION_REQUEST)
    data["entity"]["identifier_type"] = data["entity"].pop("identifierType")
    error = wire_error(data, RedemptionUpdate)
    assert error.field == "entity.identifierType"
    assert "'entity.identifier_type' (did you mean 'entity.identifierType'?)" in error.reason


def test_unknown_keys_unlike_the_missing_field_are_named_without_a_guess() -> None:
    data = copy.deepcopy(EXPIRY_ITEM)
    del data["programId"]
    data["ticket"] = "T-1"
    error = wire_error(data)
    assert error.reason == "is required; the input has an unknown key 'ticket'"


def test_the_likely_misspelling_comes_first_among_a_few_unknown_keys() -> None:
    data = copy.deepcopy(EXPIRY_ITEM)
    data["program_id"] = data.pop("programId")
    data.update(ticket="T-1", batch="7", approved="yes", zone="EU")
    error = wire_error(data)
    assert error.reason == (
        "is required; the input has unknown keys 'program_id' (did you mean 'programId'?), "
        "'approved', 'batch' and 2 more"
    )


def test_thousands_of_unknown_keys_name_a_few_and_count_the_rest() -> None:
    data = copy.deepcopy(EXPIRY_ITEM)
    data["programid"] = data.pop("programId")
    data.update({f"key{i}": i for i in range(10_000)})
    error = wire_error(data)
    assert error.field == "programId"
    # so many keys are no misspelling: none is compared with the missing name
    assert (
        error.reason
        == "is required; the input has unknown keys 'key0', 'key1', 'key10' and 9,998 more"
    )


def test_a_huge_or_secret_key_is_quoted_bounded_and_redacted() -> None:
    secret = "tok-Zq81xNeverPrinted0123456789abcdef"
    held = BearerToken(secret)  # the process holds it: no text of ours may quote it
    data = copy.deepcopy(EXPIRY_ITEM)
    del data["programId"]
    data["x" * 2_000_000] = 1
    data[secret] = 2
    data[5] = 3  # a mapping from code may hold keys JSON cannot
    error = wire_error(data)
    text = str(error)
    assert len(text) < 300, text[:300]
    assert "(1,999,940 more characters)" in text
    assert "<int key>" in text
    assert "Zq81xNeverPrinted" not in text
    assert "<redacted>" in text
    del held


def test_a_missing_field_without_unknown_keys_reads_as_before() -> None:
    data = copy.deepcopy(EXPIRY_ITEM)
    del data["programId"]
    assert str(wire_error(data)) == "programId: is required (Capillary code 8934)"


def test_an_unknown_key_in_an_otherwise_valid_item_is_refused_as_before() -> None:
    data = copy.deepcopy(EXPIRY_ITEM)
    data["expiryUpdateReasonNotes"] = "typo"
    error = wire_error(data, path="expiryDateUpdateRequest[0]")
    assert str(error) == (
        "expiryDateUpdateRequest[0].expiryUpdateReasonNotes: unknown field, "
        "not part of the wire format"
    )


def test_a_jsonl_row_with_a_misspelt_key_is_invalid_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, failures = tmp_path / "in.jsonl", tmp_path / "failures.csv"
    bad = item(1)
    bad["pointsAwardedRefld"] = bad.pop("pointsAwardedRefId")
    source.write_text(json.dumps(item(0)) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    code = main(["expiry", "apply", str(source), "--dry-run", "--failures", str(failures)], {})
    assert code == 1  # the other row is fine: the job goes on
    with failures.open(encoding="utf-8", newline="") as stream:
        (row,) = list(csv.DictReader(stream))
    assert (row["line"], row["status"], row["error_code"]) == ("2", "invalid", "8937")
    assert row["error_message"] == (
        "line 2: pointsAwardedRefId: is required; the input has an unknown key "
        "'pointsAwardedRefld' (did you mean 'pointsAwardedRefId'?) (Capillary code 8937)"
    )
    assert "'pointsAwardedRefld'" in capsys.readouterr().out
