"""The command line against hostile conditions: rival processes, interrupts, bad files, full disks.

Most tests run the command in process (``main`` in a worker thread, or ``apply``
with a fake clock, so retries cost no real time); the ones about processes and
signals run the installed executable.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp.web
import pytest

from capillary_async import BasicAuth
from capillary_async._batch import failure_columns
from capillary_async.cli import main
from capillary_async.cli._env import UsageError
from capillary_async.cli._inputs import columns_of, open_input
from capillary_async.cli._journal import Resume, fingerprint, resume
from capillary_async.cli._run import ApplyOptions, apply
from capillary_async.testing import Emulator, Faults, write_csv, write_jsonl

from .conftest import FakeClock
from .test_cli import SECRET, cli_env, journal_states, mixed, run_cli, sample, start

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
    emu: Emulator, *, password: str = SECRET, **options: Any
) -> tuple[int, str, str]:
    """``apply`` on this loop with a fake clock: retries and backoff cost no time."""
    out, err = io.StringIO(), io.StringIO()
    code = await apply(
        ApplyOptions(kind=options.pop("kind", "expiry"), **options),
        base_url=emu.base_url,
        auth=BasicAuth("demo", password),
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
    assert emu.stats.requests == 30  # the first process's chunks, and nothing else
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
    args += ["--chunk-size", "10", "--concurrency", "2"]
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
    with sqlite3.connect(journal) as db:
        states = dict(db.execute("SELECT idx, state FROM items"))
    assert {idx for idx, state in states.items() if state == "unknown"} == set(range(20))
    assert "in_flight" not in states.values()
    assert summary["not_attempted"] == len(states) - 20

    emu.faults = Faults()
    code, _, err = await run_cli(*args, env=cli_env(emu))
    assert code == 1, err  # idempotent rows resent; FIXED_DAYS ones wait for --retry-unknown
    unsafe = [n for n in range(20) if n % 3 == 0]
    with sqlite3.connect(journal) as db:
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
    with sqlite3.connect(journal) as db:  # as the previous version left it
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
    with pytest.raises(UsageError, match=header_error), open_input(str(source), None):
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
    with sqlite3.connect(path) as db:
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
        with sqlite3.connect(journal) as db:
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

    app = aiohttp.web.Application()
    app.router.add_post("/v2/points/updateExpiry", refuse)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_foreign_error_text_is_bounded_and_always_written(
    emu: Emulator, hostile_server: str, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, sample(emu, 3))
    journal, failures, report = tmp_path / "j.db", tmp_path / "f.csv", tmp_path / "r.json"
    out = io.StringIO()
    code = await apply(
        ApplyOptions(
            kind="expiry",
            input=str(source),
            journal=str(journal),
            failures=str(failures),
            report=str(report),
        ),
        base_url=hostile_server,
        auth=BasicAuth("demo", SECRET),
        out=out,
        err=io.StringIO(),
        fancy=False,
    )
    assert code == 1
    with sqlite3.connect(journal) as db:
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
    with pytest.raises(UsageError, match=deep), open_input(str(source), columns_of("expiry")):
        pass
