"""The command line against hostile conditions: rival processes, interrupts, bad files, full disks.

Most tests run the command in process (``main`` in a worker thread, or ``apply``
with a fake clock, so retries cost no real time); the ones about processes and
signals run the installed executable.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import sqlite3
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp.web
import anyio.lowlevel
import pytest

from capillary_async import BasicAuth, InputError
from capillary_async._bulk import failure_columns
from capillary_async._bulk._files import columns_of, open_input
from capillary_async._bulk._journal import Journal, Resume, fingerprint, resume
from capillary_async._bulk._lock import JournalLock
from capillary_async.cli import _run as run_module
from capillary_async.cli import main
from capillary_async.cli._run import ApplyOptions, apply
from capillary_async.testing import Emulator, Faults, write_csv, write_jsonl

from .conftest import FakeClock, open_db
from .loopback import serving
from .test_cli import SECRET, cli_env, journal_states, mixed, run_cli, sample, start
from .test_hostile import MALFORMED, RawServer, secret_forms
from .test_hostile import auth_for as hostile_auth

EXPIRY_REFS = ("pointsAwardedRefId", "pointsAwardedRefType")


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(seed=5, customers=200, awards_per_customer=2, password=SECRET) as emulator:
        yield emulator


async def in_process(capsys: pytest.CaptureFixture[str], *args: str, env: dict[str, str]) -> Any:
    """``main`` as the executable runs it (its own event loop), in a thread of this process."""
    code = await asyncio.to_thread(main, list(args), env)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert SECRET not in captured.out + captured.err
    return code, captured.out, captured.err


async def apply_here(
    emu: Emulator,
    *,
    password: str = SECRET,
    base_url: str | None = None,
    auth: Any = None,
    **options: Any,
) -> tuple[int, str, str]:
    """``apply`` on this loop with a fake clock: retries and backoff cost no time.

    The target is the emulator unless ``base_url`` names another server. The
    preflight is off unless asked for: these tests are about the job itself
    (``tests/test_preflight.py`` is about the preflight).
    """
    options.setdefault("preflight", False)
    out, err = io.StringIO(), io.StringIO()
    code = await apply(
        ApplyOptions(kind=options.pop("kind", "expiry"), **options),
        base_url=base_url or emu.base_url,
        auth=auth or BasicAuth("demo", password),
        out=out,
        err=err,
        fancy=False,
        clock=FakeClock(),
    )
    return code, out.getvalue(), err.getvalue()


def read_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def fixed_days(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for item in items:
        item["expiryDate"] = {"expiryType": "FIXED_DAYS", "expiryValue": "30"}
    return items


def applied(emu: Emulator, item: dict[str, Any]) -> int:
    times: int = emu.audit.times_applied(item["pointsAwardedRefId"], item["pointsAwardedRefType"])
    return times


# -- one process per journal ---------------------------------------------------------------


async def test_a_second_process_on_the_same_journal_exits_2_and_sends_nothing(
    emu: Emulator, tmp_path: Path
) -> None:
    emu.latency = 0.05  # the first process needs about 1.5 s: time for the second to try
    items = fixed_days(sample(emu, 300))  # applied twice would extend twice
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    journal = tmp_path / "job.db"
    args = ["expiry", "apply", str(source), "--journal", str(journal)]
    args += ["--chunk-size", "10", "--concurrency", "1"]
    first = await start(*args, env=cli_env(emu))
    for _ in range(3000):
        if journal_states(journal).get("succeeded"):
            break
        await asyncio.sleep(0.01)
    code, _, err = await run_cli(*args, env=cli_env(emu))
    assert first.returncode is None  # the first one was still running
    assert code == 2
    assert str(journal) in err
    assert f"pid {first.pid}" in err
    emu.latency = 0.0
    _, first_err = await first.communicate()
    assert first.returncode == 0, first_err.decode()
    assert emu.stats.requests == 31  # the first process's preflight and chunks, nothing else
    assert all(applied(emu, item) == 1 for item in items)


# -- interrupts ----------------------------------------------------------------------------


async def test_a_second_ctrl_c_reports_rows_in_flight_as_unknown(
    emu: Emulator, tmp_path: Path
) -> None:
    emu.faults = Faults(slow=1.0, slow_seconds=60)  # every request is applied, then hangs
    items = mixed(emu, 60)  # every third row is FIXED_DAYS
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    journal, report = tmp_path / "job.db", tmp_path / "report.json"
    args = ["expiry", "apply", str(source), "--journal", str(journal), "--report", str(report)]
    args += ["--chunk-size", "10", "--concurrency", "2", "--no-preflight"]  # it would hang too
    process = await start(*args, env=cli_env(emu))
    for _ in range(3000):
        if journal_states(journal).get("in_flight") == 20 and emu.stats.requests == 2:
            break
        await asyncio.sleep(0.01)
    process.send_signal(signal.SIGINT)
    assert process.stderr is not None
    while b"interrupted" not in await asyncio.wait_for(process.stderr.readline(), 30):
        pass
    process.send_signal(signal.SIGINT)  # abort the two requests in flight
    await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 130
    summary = json.loads(report.read_text())
    assert summary["unknown"] == 20  # sent, and may have been applied (they were)
    with open_db(journal) as db:
        states = dict(db.execute("SELECT idx, state FROM items"))
    assert {idx for idx, state in states.items() if state == "unknown"} == set(range(20))
    assert "in_flight" not in states.values()
    assert summary["not_attempted"] == len(states) - 20

    emu.faults = Faults()
    code, _, err = await run_cli(*args, env=cli_env(emu))
    assert code == 1, err  # idempotent rows resent; FIXED_DAYS ones wait for --retry-unknown
    unsafe = [n for n in range(20) if n % 3 == 0]
    with open_db(journal) as db:
        unknown = [idx for (idx,) in db.execute("SELECT idx FROM items WHERE state = 'unknown'")]
    assert unknown == unsafe
    assert all(applied(emu, items[n]) == 1 for n in unsafe)
    code, _, err = await run_cli(*args, "--retry-unknown", env=cli_env(emu))
    assert code == 0, err
    assert journal_states(journal) == {"succeeded": 60}
    assert all(applied(emu, items[n]) == 2 for n in unsafe)  # resent, as asked
    assert all(applied(emu, items[n]) == 1 for n in range(20, 60) if n % 3 == 0)


# -- what a rerun sends again ----------------------------------------------------------------


async def test_rows_that_never_got_a_verdict_are_sent_again(emu: Emulator, tmp_path: Path) -> None:
    items = fixed_days(sample(emu, 60))
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    journal = str(tmp_path / "job.db")
    emu.faults = Faults(rate_503=1.0)  # not processed, for ever
    code, _, _ = await apply_here(emu, input=str(source), journal=journal, chunk_size=10)
    assert code == 1
    assert journal_states(Path(journal)) == {"failed": 60}
    emu.faults = Faults()
    code, out, err = await apply_here(emu, input=str(source), journal=journal, chunk_size=10)
    assert code == 0, out + err
    assert journal_states(Path(journal)) == {"succeeded": 60}
    assert all(applied(emu, item) == 1 for item in items)


async def test_a_wrong_password_then_the_right_one_sends_every_row(
    emu: Emulator, tmp_path: Path
) -> None:
    items = sample(emu, 80)
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    journal = str(tmp_path / "job.db")
    options: dict[str, Any] = {"input": str(source), "journal": journal, "chunk_size": 10}
    code, _, _ = await apply_here(emu, password="wrong", concurrency=2, **options)
    assert code == 1
    states = journal_states(Path(journal))
    assert states.get("failed", 0) > 0
    assert "succeeded" not in states
    code, out, err = await apply_here(emu, **options)
    assert code == 0, out + err
    assert journal_states(Path(journal)) == {"succeeded": 80}


@pytest.mark.parametrize(
    ("state", "settled", "idempotent", "retry_unknown", "expected"),
    [
        ("succeeded", False, False, False, Resume.SKIP),
        ("invalid", False, False, True, Resume.SKIP),
        ("failed", True, False, True, Resume.SKIP),  # the server's verdict on this row
        ("failed", False, False, False, Resume.SEND),  # a 401, a 503 for ever...
        ("failed", None, False, False, Resume.SEND),  # a journal from before the flag
        ("not_attempted", False, False, False, Resume.SEND),
        ("unknown", False, True, False, Resume.SEND),
        ("unknown", False, False, False, Resume.SKIP),
        ("unknown", False, False, True, Resume.SEND),
        ("in_flight", None, True, False, Resume.SEND),
        ("in_flight", None, False, False, Resume.UNKNOWN),
        ("in_flight", None, False, True, Resume.SEND),
    ],
)
def test_what_a_rerun_does_with_each_journalled_row(
    state: str, settled: bool | None, idempotent: bool, retry_unknown: bool, expected: Resume
) -> None:
    assert resume(state, settled, idempotent, retry_unknown=retry_unknown) is expected


LEGACY_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    idx INTEGER PRIMARY KEY, line INTEGER NOT NULL, state TEXT NOT NULL, idempotent INTEGER,
    ref_id TEXT, ref_type TEXT, error_code INTEGER, error_message TEXT, request_id TEXT
);
"""


async def test_a_journal_from_the_previous_version_resumes(emu: Emulator, tmp_path: Path) -> None:
    items = fixed_days(sample(emu, 6))
    source = tmp_path / "in.jsonl"
    write_jsonl(source, [*items, {"pointsAwardedRefId": '"quoted'}])
    journal = tmp_path / "job.db"
    with open_db(journal) as db:  # as the previous version left it
        db.executescript(LEGACY_SCHEMA)
        stamp = fingerprint("expiry", str(source), emu.base_url)
        db.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (stamp,))
        ref = str(items[0]["pointsAwardedRefId"])
        db.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (0, 1, "succeeded", 0, ref, "POINT_AWARDED", None, None, "r1"),
                (1, 2, "failed", 0, ref, "POINT_AWARDED", 401, "bad password", "r2"),
                (2, 3, "unknown", 0, ref, "POINT_AWARDED", None, "in flight", None),
                (3, 4, "not_attempted", None, ref, "POINT_AWARDED", None, None, None),
                (6, 7, "invalid", None, '"quoted', None, None, "line 7: bad", None),
            ],
        )
    failures = tmp_path / "failures.csv"
    code, _, _ = await apply_here(
        emu, input=str(source), journal=str(journal), failures=str(failures)
    )
    assert code == 1
    assert [applied(emu, item) for item in items] == [0, 1, 0, 1, 1, 1]
    rows = {int(row["line"]): row for row in read_rows(failures)}
    assert sorted(rows) == [3, 7]
    assert rows[7]["pointsAwardedRefId"] == '"quoted'
    assert rows[3]["status"] == "unknown"


# -- input files -------------------------------------------------------------------------------


async def test_an_invalid_utf8_byte_spoils_only_its_own_line(emu: Emulator, tmp_path: Path) -> None:
    items = sample(emu, 5)
    lines = [json.dumps(item).encode() for item in items]
    lines[2] = lines[2].replace(b'"ops"', b'"op\xff"')
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    journal, failures = tmp_path / "job.db", tmp_path / "failures.csv"
    for _ in range(2):  # a rerun gets past the line too
        code, _, _ = await apply_here(
            emu, input=str(source), journal=str(journal), failures=str(failures)
        )
        assert code == 1
        (row,) = read_rows(failures)
        assert (row["line"], row["status"]) == ("3", "invalid")
        assert "UTF-8" in row["error_message"]
        assert row["error_message"].startswith("line 3:")
    assert journal_states(journal) == {"succeeded": 4, "invalid": 1}
    assert emu.stats.requests == 1


async def test_files_saved_with_a_byte_order_mark_read_normally(
    emu: Emulator, tmp_path: Path
) -> None:
    items = sample(emu, 3)
    for suffix in ("csv", "jsonl"):
        source = tmp_path / f"in.{suffix}"
        (write_csv if suffix == "csv" else write_jsonl)(source, items)
        source.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())  # as Excel saves it
        with open_input(str(source), columns_of("expiry")) as rows:
            assert [row.data["identifierName"] for row in rows] == ["id", "mobile", "externalId"]
        code, out, _ = await apply_here(emu, input=str(source), dry_run=True)
        assert code == 0, out


REQUIRED = "identifierName,identifierValue,pointsAwardedRefId,pointsAwardedRefType"


@pytest.mark.parametrize(
    ("header", "named"),
    [
        (f"{REQUIRED},programId,expiryDate.expiryType,programme", "programme"),
        (f"{REQUIRED},expiryDate.expiryValue,customMeta.x", "expiryDate.expiryType"),
        (f"{REQUIRED},programId,expiryDate.expiryType,programId", "programId"),
    ],
    ids=["unknown", "missing", "twice"],
)
async def test_a_csv_header_with_wrong_columns_is_refused_before_sending(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], header: str, named: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(header + "\n" + ",".join("1" for _ in header.split(",")) + "\n")
    code, _, err = await in_process(capsys, "expiry", "apply", str(source), env=cli_env(emu))
    assert code == 2
    assert named in err
    assert emu.stats.requests == 0


def test_a_bad_byte_in_a_csv_spoils_its_row_and_in_the_header_the_file(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b"a,b\n1,2\n3,\xe9t\xe9\n5,6\n")
    with open_input(str(source), None) as rows:
        read = [(row.line, row.data, row.error) for row in rows]
    assert read[0] == (2, {"a": "1", "b": "2"}, None)
    assert read[1][0] == 3
    assert "not valid UTF-8 (byte 0xe9 at character 3)" in str(read[1][2])
    assert read[2] == (4, {"a": "5", "b": "6"}, None)
    source.write_bytes(b"\xffa,b\n1,2\n")
    header_error = "line 1: the CSV header is not valid UTF-8"
    with pytest.raises(InputError, match=header_error), open_input(str(source), None):
        pass


def test_known_and_required_columns_come_from_the_models() -> None:
    expiry = columns_of("expiry")
    assert set(expiry.required) == {
        "identifierName",
        "identifierValue",
        "programId",
        "pointsAwardedRefId",
        "pointsAwardedRefType",
        "expiryDate.expiryType",
    }
    assert {"expiryDate.expiryValue", "standardMeta.who_raised", "currencyName"} <= expiry.known
    assert expiry.problems(["customMeta.anything", *expiry.required]) == []
    redemption = columns_of("redemption")
    assert set(redemption.required) == {
        "entity.type",
        "entity.identifierType",
        "entity.identifierValue",
    }
    assert redemption.problems(["customFields.card", "redemptionId", *redemption.required]) == []


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("in.jsonl", b""),
        ("in.jsonl", b"\n  \n"),
        ("in.csv", b""),
        ("in.csv", f"{REQUIRED},programId,expiryDate.expiryType\n\n".encode()),
    ],
)
async def test_an_input_without_rows_is_a_usage_error(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes
) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    code, _, err = await in_process(capsys, "expiry", "apply", str(source), env=cli_env(emu))
    assert code == 2
    assert "no rows" in err
    assert emu.stats.requests == 0


# -- the failures CSV ------------------------------------------------------------------------------


async def test_failures_csv_has_the_library_layout_and_survives_hostile_refs(
    emu: Emulator, tmp_path: Path
) -> None:
    good = sample(emu, 2)
    hostile = [
        {**good[0], "pointsAwardedRefId": '"quoted'},  # read back as JSON before
        {**good[0], "pointsAwardedRefType": "=HYPERLINK(1)"},  # a formula in a spreadsheet
        {**good[0], "pointsAwardedRefType": "\ud800"},  # a lone surrogate, from a JSON escape
    ]
    source = tmp_path / "in.jsonl"
    write_jsonl(source, [*good, *hostile])
    for dry_run in (True, False):
        failures, report = tmp_path / f"f{dry_run}.csv", tmp_path / f"r{dry_run}.json"
        code, _, _ = await apply_here(
            emu,
            input=str(source),
            dry_run=dry_run,
            failures=str(failures),
            report=str(report),
            journal=None if dry_run else str(tmp_path / "job.db"),
        )
        assert code == 1
        assert json.loads(report.read_text())["invalid"] == 3
        with failures.open(encoding="utf-8", newline="") as stream:
            header, *rows = list(csv.reader(stream))
        assert header == failure_columns(EXPIRY_REFS)
        table = [dict(zip(header, row, strict=True)) for row in rows]
        assert [(r["index"], r["line"], r["status"]) for r in table] == [
            ("2", "3", "invalid"),
            ("3", "4", "invalid"),
            ("4", "5", "invalid"),
        ]
        assert table[0]["pointsAwardedRefId"] == '"quoted'
        assert table[1]["pointsAwardedRefType"] == "'=HYPERLINK(1)"
        assert table[2]["pointsAwardedRefType"] == "\\ud800"
    assert sum(emu.audit.expiry_applied.values()) == 2


# -- paths that cannot be used ---------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--report", "--failures"])
@pytest.mark.parametrize("where", ["missing/out.txt", "."])
async def test_outputs_that_cannot_be_written_are_found_before_sending(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, where: str
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, sample(emu, 5))
    target = str(tmp_path / where)
    for extra in ((), ("--dry-run",)):
        code, _, err = await in_process(
            capsys, "expiry", "apply", str(source), option, target, *extra, env=cli_env(emu)
        )
        assert code == 2
        assert option in err
    assert emu.stats.requests == 0
    assert not (tmp_path / "missing").exists()


def damaged_journal(path: Path) -> None:
    with open_db(path) as db:
        db.executescript(LEGACY_SCHEMA)
        db.executemany(
            "INSERT INTO items (idx, line, state, error_message) VALUES (?, ?, 'failed', ?)",
            [(n, n + 1, "x" * 200) for n in range(2000)],
        )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("kind", ["directory", "text", "truncated", "unrelated"])
async def test_a_journal_that_is_not_one_is_refused(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, sample(emu, 5))
    journal = tmp_path / "job.db"
    if kind == "directory":
        journal.mkdir()
    elif kind == "text":
        journal.write_text("line,of,csv\n")
    elif kind == "truncated":
        damaged_journal(journal)
    else:
        with open_db(journal) as db:
            db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    before = journal.read_bytes() if journal.is_file() else None
    code, _, err = await in_process(
        capsys, "expiry", "apply", str(source), "--journal", str(journal), env=cli_env(emu)
    )
    assert code == 2
    assert str(journal) in err
    assert emu.stats.requests == 0
    if before is not None:
        assert journal.read_bytes() == before  # left as it was


@pytest.mark.parametrize("with_journal", [True, False])
async def test_a_report_that_cannot_be_written_at_the_end_keeps_the_journal(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], with_journal: bool
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, sample(emu, 20))
    journal = tmp_path / "job.db"
    args = ["expiry", "apply", str(source)]
    if with_journal:
        args += ["--report", "/dev/full", "--journal", str(journal)]  # a full disk
    else:
        args += ["--failures", "/dev/full"]
    code, out, err = await in_process(capsys, *args, env=cli_env(emu))
    assert code == 1
    assert "No space left on device" in err
    assert sum(emu.audit.expiry_applied.values()) == 20
    if with_journal:
        assert journal_states(journal) == {"succeeded": 20}
    else:  # the scratch journal is kept, and said where
        kept = Path(err.split("journal is kept in ")[1].split()[0])
        assert journal_states(kept) == {"succeeded": 20}
        shutil.rmtree(kept.parent)
    assert "20 rows" in out


# -- foreign text -------------------------------------------------------------------------------


@pytest.fixture
async def hostile_server() -> AsyncIterator[str]:
    """A server that refuses every item with a huge message holding a lone surrogate."""

    async def refuse(request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = await request.json()
        failures = [
            {
                "pointsAwardedRefId": item["pointsAwardedRefId"],
                "pointsAwardedRefType": item["pointsAwardedRefType"],
                "errorCode": 8015,
                "errorMessage": "=cmd|' /C calc'!A0 \ud800" + "x" * 100_000,
            }
            for item in body["expiryDateUpdateRequest"]
        ]
        text = json.dumps({"failures": failures})  # the surrogate travels as \ud800
        return aiohttp.web.Response(text=text, content_type="application/json")

    async with serving(refuse) as url:
        yield url


async def test_foreign_error_text_is_bounded_and_always_written(
    emu: Emulator, hostile_server: str, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, sample(emu, 3))
    journal, failures, report = tmp_path / "j.db", tmp_path / "f.csv", tmp_path / "r.json"
    code, _, _ = await apply_here(
        emu,
        base_url=hostile_server,
        input=str(source),
        journal=str(journal),
        failures=str(failures),
        report=str(report),
    )
    assert code == 1
    with open_db(journal) as db:
        messages = [m for (m,) in db.execute("SELECT error_message FROM items")]
    assert len(messages) == 3
    assert all(len(m) < 1200 and "\\ud800" in m for m in messages)
    rows = read_rows(failures)
    assert [r["error_code"] for r in rows] == ["8015"] * 3
    assert all(r["error_message"].startswith("'=cmd") for r in rows)
    assert json.loads(report.read_text())["failures_by_code"] == {"8015": 3}


async def test_max_response_bytes_reaches_the_client(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An answer over --max-response-bytes is not read: its rows end unknown, resendable."""
    source = tmp_path / "in.jsonl"
    write_jsonl(source, sample(emu, 6))
    journal = tmp_path / "job.db"
    code, out, _ = await in_process(
        capsys,
        "expiry",
        "apply",
        str(source),
        "--journal",
        str(journal),
        "--max-response-bytes",
        "64",
        "--no-preflight",  # its answer is over 64 bytes too
        env=cli_env(emu),
    )
    assert code == 1
    assert "unknown" in out
    assert journal_states(journal) == {"unknown": 6}
    code, _, _ = await in_process(
        capsys, "expiry", "apply", str(source), "--journal", str(journal), env=cli_env(emu)
    )
    assert code == 0  # FIXED_DATE rows are safe to resend, and now the answer is read


# -- input that would exhaust the stack ------------------------------------------------------------


async def test_a_line_nested_too_deep_is_an_invalid_row_and_the_job_goes_on(
    emu: Emulator, tmp_path: Path
) -> None:
    items = fixed_days(sample(emu, 6))
    lines = [json.dumps(item) for item in items]
    lines.insert(3, "[" * 100_000 + "]" * 100_000)  # the parser would recurse 100,000 deep
    nested: Any = "v"
    for _ in range(40):
        nested = {"k": nested}
    lines.insert(5, json.dumps({**items[0], "customMeta": nested}))  # parses, then recurses
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    for dry_run in (True, False):
        failures = tmp_path / f"failures-{dry_run}.csv"
        code, out, _ = await apply_here(
            emu,
            input=str(source),
            dry_run=dry_run,
            failures=str(failures),
            journal=None if dry_run else str(tmp_path / "job.db"),
        )
        assert code == 1, out
        rows = read_rows(failures)
        assert [(row["line"], row["status"]) for row in rows] == [
            ("4", "invalid"),
            ("6", "invalid"),
        ]
        assert all("nested more than 16 levels deep" in row["error_message"] for row in rows)
        assert rows[0]["error_message"].startswith("line 4:")
    assert all(applied(emu, item) == 1 for item in items)


def test_a_csv_header_nested_too_deep_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(f"{REQUIRED},customMeta.{'a.' * 5000}b\n1,2,3,4,5\n")
    deep = "nested more than 16 levels deep"
    with pytest.raises(InputError, match=deep), open_input(str(source), columns_of("expiry")):
        pass


# -- a journal that cannot be written --------------------------------------------------------------


class BrokenDisk:
    """A journal connection whose writes of one kind fail as SQLite's do on a full disk.

    Counted in rows, not calls: how outcomes are batched into writes depends on
    scheduling, how many rows fit does not.
    """

    def __init__(self, db: sqlite3.Connection, statement: str, rows_that_fit: int) -> None:
        self._db = db
        self.statement = statement
        self.room = rows_that_fit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def _take(self, count: int) -> None:
        if count > self.room:
            raise sqlite3.OperationalError("database or disk is full")
        self.room -= count

    def executemany(self, sql: str, rows: Any) -> Any:
        if self.statement in sql:
            rows = list(rows)
            self._take(len(rows))
        return self._db.executemany(sql, rows)

    def execute(self, sql: str, *args: Any) -> Any:
        # Outcomes of a run of succeeded rows go in one UPDATE ... BETWEEN first AND last.
        if self.statement == RECORD and "BETWEEN" in sql:
            _, first, last = args[0]
            self._take(last - first + 1)
        return self._db.execute(sql, *args)


#: What the journal's writes of outcomes have in common (BrokenDisk also counts their runs).
RECORD = "settled, digest)"


def break_journal(monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """Have ``change(journal)`` applied to every journal the command line opens."""
    real = Journal.open.__func__  # type: ignore[attr-defined]

    async def opened(cls: type[Journal], *args: Any, **kwargs: Any) -> Journal:
        journal: Journal = await real(cls, *args, **kwargs)
        change(journal)
        return journal

    monkeypatch.setattr(Journal, "open", classmethod(opened))


def journal_rows(path: Path) -> dict[int, str]:
    with open_db(path) as db:
        return dict(db.execute("SELECT idx, state FROM items"))


def fill_up(journal: Journal) -> None:
    """SQLite's own "database or disk is full" as soon as the journal grows by two pages."""
    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
    journal._db.execute(f"PRAGMA max_page_count = {pages + 2}")


@pytest.mark.parametrize("last_try", ["works", "fails"])
async def test_a_full_disk_under_the_journal_stops_the_job_and_a_rerun_applies_nothing_twice(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, last_try: str
) -> None:
    items = fixed_days(sample(emu, 300))  # applied twice would extend twice
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    journal, report = tmp_path / "job.db", tmp_path / "report.json"
    if last_try == "works":  # outcomes overwrite rows in place: the last try finds room
        break_journal(monkeypatch, fill_up)
    else:  # outcomes can never be recorded after the first few
        break_journal(monkeypatch, lambda j: setattr(j, "_db", BrokenDisk(j._db, RECORD, 30)))
    options: dict[str, Any] = {"input": str(source), "journal": str(journal), "chunk_size": 10}
    code, out, err = await apply_here(emu, report=str(report), concurrency=2, **options)
    assert code == 1
    assert "could not be written (the disk is full)" in err
    assert "stopped" in err
    assert "from memory" in out
    summary = json.loads(report.read_text())
    assert "disk is full" in summary["journal_error"]
    assert summary["journal_complete"] is ("Every outcome this run knows was saved" in err)
    assert summary["succeeded"] == sum(applied(emu, item) for item in items) > 0
    # How far the job got before its first write failed depends on scheduling;
    # what holds is that the counts are this run's and match the server.
    assert summary["succeeded"] + summary["failed"] + summary["unknown"] <= 300
    assert emu.stats.requests == summary["requests"]
    states = journal_rows(journal)
    for n, item in enumerate(items):  # a row the server applied never looks unsent
        if applied(emu, item):
            assert states.get(n) in ("succeeded", "in_flight")
        else:  # never sent; or marked in flight when the stop kept it home, unrecordable since
            assert states.get(n) in (None, "in_flight")
    if "Every outcome this run knows was saved" in err:  # the last try found room
        assert last_try == "works"
        assert "in_flight" not in states.values()
    else:  # what a rerun does with rows that may have been applied
        assert "in_flight" in states.values()
        assert "--retry-unknown" in err

    monkeypatch.undo()  # room on the disk again
    code, _, err = await apply_here(emu, **options)
    rows = journal_rows(journal)
    for n, item in enumerate(items):  # none twice; once, or unknown (a row left in flight)
        assert applied(emu, item) == 1 or (applied(emu, item) == 0 and rows[n] == "unknown")
    left = journal_states(journal)
    assert left.get("succeeded", 0) + left.get("unknown", 0) == 300
    assert code == (1 if left.get("unknown") else 0)


async def test_rows_the_journal_cannot_mark_in_flight_are_not_sent(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = fixed_days(sample(emu, 40))
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    journal = tmp_path / "job.db"
    break_journal(monkeypatch, lambda j: setattr(j, "_db", BrokenDisk(j._db, "'in_flight'", 10)))
    code, out, err = await apply_here(
        emu, input=str(source), journal=str(journal), chunk_size=10, concurrency=1
    )
    assert code == 1
    assert "could not be written (the disk is full)" in err
    assert emu.stats.requests == 1  # the chunk it marked, and nothing after
    assert sum(applied(emu, item) for item in items) == 10
    assert journal_states(journal) == {"succeeded": 10}
    assert "succeeded" in out
    assert "not attempted" in out


async def test_rows_marked_in_flight_but_never_sent_are_not_left_looking_sent(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second Ctrl-C while a chunk is marked, before its request: its rows were not sent."""
    items = fixed_days(sample(emu, 30))
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    journal = tmp_path / "job.db"
    handlers: list[Any] = []
    monkeypatch.setattr(run_module, "_catch_sigint", lambda h: handlers.append(h) or (lambda: None))
    real_mark = Journal.mark_in_flight
    marks = 0

    async def mark_then_abort(self: Journal, rows: Any) -> None:
        nonlocal marks
        await real_mark(self, rows)
        marks += 1
        if marks == 2:
            handlers[0]()  # Ctrl-C
            handlers[0]()  # and again: abort
            await anyio.lowlevel.checkpoint()

    monkeypatch.setattr(Journal, "mark_in_flight", mark_then_abort)
    code, _, _ = await apply_here(
        emu, input=str(source), journal=str(journal), chunk_size=10, concurrency=1
    )
    assert code == 130
    assert emu.stats.requests == 1
    states = journal_rows(journal)
    assert {states[n] for n in range(10)} == {"succeeded"}
    assert {states[n] for n in range(10, 20)} == {"not_attempted"}  # never "unknown"
    monkeypatch.undo()
    code, _, _ = await apply_here(emu, input=str(source), journal=str(journal), chunk_size=10)
    assert code == 0
    assert all(applied(emu, item) == 1 for item in items)


# -- the journal's lock ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["as given", "lock file deleted", "symlink", "hard link"])
async def test_the_lock_is_on_the_journal_file_whatever_its_name(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, fixed_days(sample(emu, 5)))
    journal = tmp_path / "job.db"
    code, _, _ = await in_process(
        capsys, "expiry", "apply", str(source), "--journal", str(journal), env=cli_env(emu)
    )
    assert code == 0
    requests = emu.stats.requests
    with open_db(journal) as db:
        db.execute("UPDATE items SET state = 'not_attempted'")  # as if there were more to send
    name = journal
    if how == "symlink":
        name = tmp_path / "current.db"
        name.symlink_to(journal.name)
    elif how == "hard link":
        name = tmp_path / "other.db"
        name.hardlink_to(journal)
    with JournalLock(journal) as lock:  # another run holds it
        if how == "lock file deleted":
            lock.holder_path.unlink()  # an operator's "stale lock" cleanup
        code, _, err = await in_process(
            capsys, "expiry", "apply", str(source), "--journal", str(name), env=cli_env(emu)
        )
    assert code == 2
    assert str(name) in err
    assert "in use by another capillary-async process" in err
    if how != "lock file deleted":
        assert f"pid {os.getpid()}" in err
    assert emu.stats.requests == requests
    assert not (tmp_path / "job.db.lock").exists()  # the holder removes its note


def test_the_lock_removes_only_an_empty_journal_it_made_and_sqlite_never_opened(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "job.db"
    with JournalLock(journal):
        assert journal.exists()
    assert not journal.exists()  # made for a run that stopped before opening it
    with JournalLock(journal) as lock:
        lock.opened = True  # in WAL mode an empty file may have all its data in -wal
    assert journal.exists()


async def test_a_scratch_journal_that_cannot_be_written_is_kept_to_resume_from(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = fixed_days(sample(emu, 60))
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    break_journal(monkeypatch, lambda j: setattr(j, "_db", BrokenDisk(j._db, RECORD, 0)))
    code, _, err = await apply_here(emu, input=str(source), chunk_size=10, concurrency=1)
    assert code == 1
    assert "could not be written (the disk is full)" in err
    kept = Path(err.split("journal is kept in ")[1].split()[0])
    assert "to finish the job without repeating what was sent" in err
    monkeypatch.undo()
    code, _, _ = await apply_here(emu, input=str(source), journal=str(kept), chunk_size=10)
    assert all(applied(emu, item) <= 1 for item in items)  # never twice
    assert journal_states(kept).get("succeeded", 0) + journal_states(kept).get("unknown", 0) == 60
    shutil.rmtree(kept.parent)


# -- outputs that are the journal's or the input's files ------------------------------------------


@pytest.mark.parametrize("option", ["--report", "--failures"])
@pytest.mark.parametrize(
    "target",
    ["job.db-wal", "job.db-shm", "job.db-journal", "job.db.lock", "symlink", "hard link", "input"],
)
async def test_an_output_that_is_the_journals_or_the_inputs_file_is_refused(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, target: str
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, fixed_days(sample(emu, 5)))
    journal = tmp_path / "job.db"
    args = ["expiry", "apply", str(source), "--journal", str(journal)]
    code, _, _ = await in_process(capsys, *args, env=cli_env(emu))
    assert code == 0
    path = tmp_path / target
    if target == "symlink":
        path.symlink_to(journal)
    elif target == "hard link":
        path.hardlink_to(journal)
    elif target == "input":
        path.hardlink_to(source)
    before = journal.read_bytes(), source.read_bytes()
    code, _, err = await in_process(capsys, *args, option, str(path), env=cli_env(emu))
    assert code == 2
    assert "is the same file as" in err
    assert (journal.read_bytes(), source.read_bytes()) == before
    assert emu.stats.requests == 2  # the first run's preflight and chunk: nothing since


# -- pipes and devices -----------------------------------------------------------------------------


async def finishes(capsys: pytest.CaptureFixture[str], fifo: Path, *args: str, env: Any) -> Any:
    """``in_process``, failing (not hanging) if the command blocks on the named pipe."""
    task = asyncio.ensure_future(in_process(capsys, *args, env=env))
    done, _ = await asyncio.wait([task], timeout=20)
    if not done:
        while not task.done():  # let a blocked open go through, and its reads and writes end
            for flags in (os.O_RDONLY, os.O_WRONLY):
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, flags | os.O_NONBLOCK))
            await asyncio.sleep(0.05)
        raise AssertionError("the command blocked on a named pipe")
    return task.result()


@pytest.mark.parametrize("option", ["--report", "--failures", "--journal"])
async def test_a_named_pipe_nobody_reads_is_refused_at_once(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, sample(emu, 3))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, _, err = await finishes(
        capsys, fifo, "expiry", "apply", str(source), option, str(fifo), env=cli_env(emu)
    )
    assert code == 2
    assert "named pipe" in err
    assert emu.stats.requests == 0


def lock_beside_dev_null() -> bool:
    return Path("/dev/null.lock").exists()


async def test_a_journal_must_be_a_regular_file(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, sample(emu, 3))
    made_before = lock_beside_dev_null()
    for path, kind in (("/dev/null", "a character device"), (str(source), "INPUT")):
        code, _, err = await in_process(
            capsys, "expiry", "apply", str(source), "--journal", path, env=cli_env(emu)
        )
        assert code == 2
        assert kind in err
    assert lock_beside_dev_null() == made_before
    assert emu.stats.requests == 0


async def test_outputs_reach_a_named_pipe_and_a_process_substitution(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, [*sample(emu, 3), {"pointsAwardedRefId": "x"}])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader is there, as `cat fifo` is
    read_end, write_end = os.pipe()  # what bash passes for >(gzip > failures.csv.gz)
    try:
        code, _, err = await finishes(
            capsys,
            fifo,
            "expiry",
            "apply",
            str(source),
            "--report",
            str(fifo),
            "--failures",
            f"/dev/fd/{write_end}",
            env=cli_env(emu),
        )
        assert code == 1, err
        os.close(write_end)  # the shell's end: the reader then sees the end of the output
        write_end = -1
        report = os.read(reader, 1 << 20)  # small outputs wait in the pipes' buffers
        assert json.loads(report)["total"] == 4
        assert os.read(reader, 1) == b""  # and the output was closed
        (row,) = csv.DictReader(io.StringIO(os.read(read_end, 1 << 20).decode()))
        assert (row["line"], row["status"]) == ("4", "invalid")
    finally:
        for fd in (reader, read_end, write_end):
            if fd >= 0:
                os.close(fd)


# -- control characters never reach the terminal --------------------------------------------------


ESCAPE = "\x1b[2J\x1b]0;pwned\x07"


@pytest.fixture
async def escaping_server() -> AsyncIterator[str]:
    """A server that refuses each item, then the credentials, with terminal escapes."""
    calls = 0

    async def answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
        nonlocal calls
        calls += 1
        body = await request.json()
        if calls > 1:
            text = json.dumps({"errors": [{"code": 401, "message": f"denied{ESCAPE}"}]})
            return aiohttp.web.Response(status=401, text=text, content_type="application/json")
        failures = [
            {
                "pointsAwardedRefId": item["pointsAwardedRefId"],
                "pointsAwardedRefType": item["pointsAwardedRefType"],
                "errorCode": 8015,
                "errorMessage": f"no{ESCAPE}",
            }
            for item in body["expiryDateUpdateRequest"]
        ]
        return aiohttp.web.json_response({"failures": failures})

    async with serving(answer) as url:
        yield url


async def test_server_text_reaches_the_terminal_without_control_characters(
    emu: Emulator, escaping_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / f"in{ESCAPE}.jsonl"
    write_jsonl(source, sample(emu, 4))
    failures = tmp_path / "failures.csv"
    env = cli_env(emu, CAPILLARY_BASE_URL=escaping_server)
    code, out, err = await in_process(
        capsys, "expiry", "apply", str(source), "--chunk-size", "2", "--concurrency", "1",
        "--failures", str(failures), "--no-preflight", env=env,
    )  # fmt: skip
    assert code == 1
    assert "stopped early: the server refused the credentials: denied\\x1b[2J" in out
    assert "in\\x1b[2J" in out  # the file name too
    assert "\x1b" not in out + err
    assert "\x07" not in out + err
    messages = [row["error_message"] for row in read_rows(failures)]
    assert "no\\x1b[2J\\x1b]0;pwned\\x07" in messages[0]
    assert not any("\x1b" in message for message in messages)


async def test_input_values_and_paths_reach_the_terminal_without_control_characters(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    item = sample(emu, 1)[0]
    item["expiryDate"] = {"expiryType": f"FIXED{ESCAPE}", "expiryValue": "30"}
    source = tmp_path / "in.jsonl"
    write_jsonl(source, [item])
    code, out, err = await in_process(
        capsys, "expiry", "apply", str(source), "--dry-run", env=cli_env(None)
    )
    assert code == 1
    assert "FIXED\\x1b[2J" in out
    assert "\x1b" not in out + err
    for journal in (tmp_path / f"job{ESCAPE}.db", tmp_path / f"dir{ESCAPE}"):
        if journal.name.startswith("job"):
            journal.write_text("not a journal\n")
        else:
            journal.mkdir()
        code, out, err = await in_process(
            capsys, "expiry", "apply", str(source), "--journal", str(journal), env=cli_env(emu)
        )
        assert code == 2
        assert "\\x1b[2J" in err
        assert "\x1b" not in out + err
    assert emu.stats.requests == 0


@pytest.mark.parametrize("answer", ["bad status line", "echo"])
async def test_no_credential_reaches_any_output_of_the_command(
    emu: Emulator, tmp_path: Path, answer: str
) -> None:
    """Malformed or echoing answers: stdout, stderr, report, failures and journal stay clean."""
    source = tmp_path / "in.jsonl"
    write_jsonl(source, fixed_days(sample(emu, 4)))
    journal, failures, report = tmp_path / "j.db", tmp_path / "f.csv", tmp_path / "r.json"
    async with RawServer(None if answer == "echo" else MALFORMED[answer]) as url:
        code, out, err = await apply_here(
            emu,
            base_url=url,
            auth=hostile_auth("basic"),
            input=str(source),
            journal=str(journal),
            failures=str(failures),
            report=str(report),
        )
    assert code == 1
    texts = [out, err, failures.read_text(), report.read_text()]
    with open_db(journal) as db:
        texts += [" ".join(map(str, row)) for row in db.execute("SELECT * FROM items")]
    assert len(texts) == 4 + 4
    for text in texts:
        for secret in secret_forms("basic"):
            assert secret.lower() not in text.lower(), text[:300]


async def test_a_dry_run_refuses_text_that_cannot_be_sent(emu: Emulator, tmp_path: Path) -> None:
    rows = sample(emu, 2)
    rows[1]["expiryUpdateReasonNote"] = "note \ud800"  # a lone surrogate, from a JSON escape
    source = tmp_path / "in.jsonl"
    write_jsonl(source, rows)
    code, out, _ = await apply_here(emu, input=str(source), dry_run=True)
    assert code == 1
    assert "1 invalid" in out
    assert "expiryUpdateReasonNote" in out
    assert emu.stats.requests == 0


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
async def test_a_line_too_long_is_an_invalid_row_read_in_bounded_steps(
    emu: Emulator, tmp_path: Path, suffix: str
) -> None:
    """A whole JSON array exported on one line is refused as one bad row, not loaded."""
    rows = sample(emu, 2)
    source = tmp_path / f"in.{suffix}"
    if suffix == "jsonl":
        write_jsonl(source, rows)
        with source.open("a", encoding="utf-8") as out:
            out.write("[" + ",".join(['{"a":1}'] * 1_500_000) + "]\n")  # 12 MB
    else:
        write_csv(source, rows)
        with source.open("a", encoding="utf-8") as out:
            out.write("x" * 12_000_000 + "\n")
    tracemalloc.start()
    try:
        code, out, _ = await apply_here(emu, input=str(source), dry_run=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 1
    assert "1 invalid" in out
    assert f"line {3 if suffix == 'jsonl' else 4}: longer than" in out
    assert peak < source.stat().st_size / 2  # never the whole line at once
