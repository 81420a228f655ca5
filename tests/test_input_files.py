"""Input files as operators save them: misspelt keys, other encodings, other separators.

A row that cannot be used names its line and why; a file that cannot be used
at all (UTF-16, Windows-1252, semicolons) is refused before anything is sent,
by ``InputFile.check()``, when iteration starts, and by the command line (exit 2).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from capillary_async import (
    BearerToken,
    ExpiryUpdate,
    InputError,
    InputFile,
    RedemptionUpdate,
    ValidationError,
    from_wire,
)
from capillary_async._bulk import _encoding
from capillary_async._bulk._files import open_input
from capillary_async.cli import main

from .conftest import EXPIRY_ITEM, REDEMPTION_REQUEST

COLUMNS = [
    "identifierName",
    "identifierValue",
    "programId",
    "pointsAwardedRefId",
    "pointsAwardedRefType",
    "expiryDate.expiryType",
    "expiryUpdateReasonNote",
]


def wire_error(data: Any, cls: type[Any] = ExpiryUpdate, **kwargs: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        from_wire(cls, data, **kwargs)
    return info.value


def item(n: int = 0, note: str = "Prolongé") -> dict[str, Any]:
    """One valid expiry row; its note is where an accent (and an encoding) shows."""
    return {
        "identifierName": "mobile",
        "identifierValue": f"91999999{n:04d}",
        "programId": 469,
        "pointsAwardedRefId": 1000 + n,
        "pointsAwardedRefType": "POINT_AWARDED",
        "expiryDate": {"expiryType": "IMMEDIATE"},
        "expiryUpdateReasonNote": f"{note} {n}",
    }


def csv_text(rows: int, separator: str = ",", note: str = "Prolongé") -> str:
    lines = [separator.join(COLUMNS)]
    for n in range(rows):
        row = item(n, note)
        cells = [*(str(row[c]) for c in COLUMNS[:5]), "IMMEDIATE", row["expiryUpdateReasonNote"]]
        lines.append(separator.join(cells))
    return "\r\n".join(lines) + "\r\n"  # as Excel ends its lines


def jsonl_text(rows: int, note: str = "Prolongé") -> str:
    return "".join(json.dumps(item(n, note), ensure_ascii=False) + "\n" for n in range(rows))


#: Where the first row's "é" is, in a CSV and in JSON lines.
CSV_E = csv_text(1).splitlines()[1].index("é") + 1
JSON_E = jsonl_text(1).index("é") + 1


def refused(path: Path) -> str:
    """The ``InputError`` of ``check()``, which iteration raises as well."""
    with pytest.raises(InputError) as checked:
        InputFile(path).check()
    with pytest.raises(InputError) as iterated:
        next(iter(InputFile(path)))
    assert str(iterated.value) == str(checked.value)
    return str(checked.value)


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


# -- other encodings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "in.csv",
            b"\xff\xfe" + csv_text(3).encode("utf-16-le"),
            "line 1: the file starts with a UTF-16 byte-order mark (0xff 0xfe): it is UTF-16 text",
        ),
        (
            "in.csv",
            b"\xfe\xff" + csv_text(3).encode("utf-16-be"),
            "line 1: the file starts with a UTF-16 byte-order mark (0xfe 0xff)",
        ),
        (
            "in.jsonl",
            jsonl_text(3).encode("utf-32"),
            "line 1: the file starts with a UTF-32 byte-order mark (0xff 0xfe 0x00 0x00)",
        ),
        (
            "in.jsonl",
            jsonl_text(3).encode("utf-16-le"),
            "line 1: holds NUL bytes (0x00), as UTF-16 or UTF-32 text does",
        ),
        (
            "in.csv",
            csv_text(200).encode("cp1252"),
            (
                f"line 2: not valid UTF-8 (byte 0xe9 at character {CSV_E}), and neither are "
                "199 more of the first 201 lines, while none is UTF-8 past ASCII"
            ),
        ),
        (
            "in.jsonl",
            jsonl_text(3).encode("latin-1"),
            f"line 1: not valid UTF-8 (byte 0xe9 at character {JSON_E}), and neither are 2 more",
        ),
    ],
    ids=["utf-16-le", "utf-16-be", "utf-32", "utf-16 without a mark", "cp1252 csv", "latin-1"],
)
def test_a_file_in_another_encoding_is_refused_before_a_row_is_used(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    message = refused(source)
    assert message.startswith(expected), message
    assert message.endswith('save it as UTF-8 (Excel: "CSV UTF-8"). Nothing was sent')


@pytest.mark.parametrize("mark", [b"", b"\xef\xbb\xbf"], ids=["plain", "with a mark"])
@pytest.mark.parametrize("name", ["in.csv", "in.jsonl"])
def test_utf8_with_accents_is_read(tmp_path: Path, name: str, mark: bytes) -> None:
    source = tmp_path / name
    text = csv_text(3) if name.endswith(".csv") else jsonl_text(3)
    source.write_bytes(mark + text.encode("utf-8"))
    InputFile(source).check()
    rows = list(InputFile(source))
    assert [row.error for row in rows] == [None] * 3
    assert [row.data["expiryUpdateReasonNote"] for row in rows] == [
        "Prolongé 0",
        "Prolongé 1",
        "Prolongé 2",
    ]


def test_stray_bytes_in_a_file_that_is_utf8_otherwise_spoil_only_their_rows(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.jsonl"
    lines = jsonl_text(4).encode("utf-8").splitlines(keepends=True)
    lines[1] = lines[1].replace("é".encode(), b"\xe9")  # two lines pasted from elsewhere
    lines[3] = lines[3].replace("é".encode(), b"\xe9")
    source.write_bytes(b"".join(lines))
    InputFile(source).check()
    errors = [row.error for row in InputFile(source)]
    assert errors[0] is None
    assert errors[2] is None
    assert "line 2: not valid UTF-8 (byte 0xe9" in str(errors[1])
    assert "line 4: not valid UTF-8 (byte 0xe9" in str(errors[3])


def test_past_the_screened_start_a_stray_byte_spoils_only_its_row(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    ascii_rows = 1 + _encoding.SCREENED // len(json.dumps(item(0, "Extended")))
    latin = jsonl_text(3).encode("latin-1")  # as if appended from another export
    source.write_bytes(jsonl_text(ascii_rows, "Extended").encode("utf-8") + latin)
    InputFile(source).check()
    rows = list(InputFile(source))
    assert len(rows) == ascii_rows + 3
    assert all(row.error is None for row in rows[:ascii_rows])
    assert all("not valid UTF-8 (byte 0xe9" in str(row.error) for row in rows[ascii_rows:])
    # the same rows at the start are the whole file's encoding, and refused
    source.write_bytes(latin + jsonl_text(ascii_rows, "Extended").encode("utf-8"))
    assert "neither are 2 more" in refused(source)


def test_standard_input_in_utf16_is_refused_when_reading_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(jsonl_text(3).encode("utf-16")))
    monkeypatch.setattr(sys, "stdin", stdin)
    with pytest.raises(InputError, match="UTF-16 byte-order mark"), open_input("-", None):
        pass


def test_standard_input_in_utf8_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(jsonl_text(3).encode("utf-8")))
    monkeypatch.setattr(sys, "stdin", stdin)
    with open_input("-", None) as rows:
        assert [row.line for row in rows] == [1, 2, 3]


# -- other separators ----------------------------------------------------------------------------


@pytest.mark.parametrize(("separator", "name"), [(";", "semicolon"), ("\t", "tab")])
def test_a_csv_separated_otherwise_than_by_commas_is_refused_with_a_hint(
    tmp_path: Path, separator: str, name: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(csv_text(3, separator), encoding="utf-8")
    message = refused(source)
    assert message.startswith(f"the CSV header (line 1) looks {name}-separated (identifierName")
    assert "save the file with commas between columns" in message
    assert "unknown columns" not in message
    assert len(message) < 300


def test_semicolons_inside_a_comma_separated_file_are_no_hint(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(csv_text(3, note="a;b;c"), encoding="utf-8")
    assert [row.error for row in InputFile(source)] == [None] * 3
    # a column of that name is an unknown column, as before
    source.write_text(",".join([*COLUMNS, "customMeta;x"]) + "\n" + "1,2\n", encoding="utf-8")
    assert "unknown columns: customMeta;x" in refused(source)


# -- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "in.csv",
            b"\xff\xfe" + csv_text(3).encode("utf-16-le"),
            "line 1: the file starts with a UTF-16 byte-order mark",
        ),
        ("in.csv", csv_text(3).encode("cp1252"), "line 2: not valid UTF-8 (byte 0xe9"),
        ("in.jsonl", jsonl_text(3).encode("cp1252"), "line 1: not valid UTF-8 (byte 0xe9"),
        ("in.csv", csv_text(3, ";").encode(), "the CSV header (line 1) looks semicolon-separated"),
        ("in.csv", csv_text(3, "\t").encode(), "the CSV header (line 1) looks tab-separated"),
    ],
    ids=["utf-16", "cp1252 csv", "cp1252 jsonl", "semicolons", "tabs"],
)
def test_the_command_line_refuses_such_files_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, expected: str
) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    code = main(["expiry", "apply", str(source), "--dry-run"], {})
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith(f"capillary-async: error: {expected}"), captured.err
    assert "Nothing was sent" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""
