"""Resumable bulk jobs (``journal=``) against the emulator, with its audit as the witness.

A run is stopped part-way deterministically: the emulator's latency is raised
to an hour once some chunks are answered, so the next request is held at the
emulator *before* it is applied; the caller is then cancelled (or the process
killed) while that request is in flight. A request whose client went away is
never applied by the emulator (its body can no longer be read), so every row
of the rerun can be checked to be applied exactly once.
"""

from __future__ import annotations

import contextlib
import csv
import json
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from capillary_async import (
    BasicAuth,
    BulkReport,
    CapillaryClient,
    InputFile,
    JournalError,
    JournalMismatchError,
    OutcomeStatus,
    Progress,
    RetryPolicy,
)
from capillary_async.testing import Emulator, ManualTime, sample_expiry_updates

from .conftest import FakeClock, open_db

NOW = datetime(2026, 5, 1, 9, 0, 0, tzinfo=timezone.utc)
SEED = 11
ROWS = 160
CHUNK = 10
#: Latency that holds a request at the emulator, before it is applied, for the whole test.
HOLD = 3600.0
FINAL = ("succeeded", "invalid")
CSV_HEADER = [
    "index",
    "line",
    "pointsAwardedRefId",
    "pointsAwardedRefType",
    "status",
    "error_code",
    "error_message",
    "request_id",
]


# -- the emulator, its input and the journal -----------------------------------------------------


@contextlib.asynccontextmanager
async def emulator(**kwargs: Any) -> AsyncIterator[Emulator]:
    """A fresh emulator; the same seed and clock always hold the same records."""
    async with Emulator(
        seed=SEED, customers=120, awards_per_customer=4, clock=ManualTime(NOW), **kwargs
    ) as emu:
        yield emu


def client_for(emu: Emulator) -> CapillaryClient:
    return CapillaryClient(
        emu.base_url,
        auth=BasicAuth(emu.username, "demo"),
        allow_insecure=True,
        retry=RetryPolicy(jitter=False),
        clock=FakeClock(),
    )


def write_input(
    path: Path,
    emu: Emulator,
    count: int = ROWS,
    *,
    expiry_type: str = "FIXED_DATE",
    blank_every: int = 0,
    broken_at: Iterable[int] = (),
) -> Path:
    """JSON lines of sample updates, a fifth of them bad (refused by the client or the server).

    ``blank_every`` puts an empty line after every so many rows (so line numbers
    are not index + 1); ``broken_at`` puts a line that is not JSON before those rows.
    """
    broken = set(broken_at)
    items = list(sample_expiry_updates(emu.store, count, seed=SEED, bad=0.2, now=NOW))
    with path.open("w", encoding="utf-8") as out:
        for n, item in enumerate(items):
            expiry = item["expiryDate"]
            if expiry_type != "FIXED_DATE" and expiry["expiryValue"] > NOW.date().isoformat():
                item["expiryDate"] = {"expiryType": expiry_type, "expiryValue": "30"}
            if n in broken:
                out.write('{"identifierName": "id", \n')
            out.write(json.dumps(item) + "\n")
            if blank_every and n % blank_every == blank_every - 1:
                out.write("\n")
    return path


def file_rows(path: Path) -> list[tuple[int, dict[str, Any] | None]]:
    """(line, data or None) of each row, as a reader of the file sees them."""
    rows = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if text.strip():
            try:
                rows.append((number, json.loads(text)))
            except ValueError:
                rows.append((number, None))
    return rows


def read_journal(path: Path) -> dict[int, tuple[str, bool]]:
    """index -> (state, settled) of every journalled row, read with the stdlib only."""
    if not path.exists():
        return {}
    db = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT idx, state, settled FROM items").fetchall()
    except sqlite3.OperationalError:  # not made yet
        return {}
    finally:
        db.close()
    return {idx: (state, bool(settled)) for idx, state, settled in rows}


def names_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def final_rows(journal: dict[int, tuple[str, bool]]) -> set[int]:
    """Rows a rerun must not send again: verdicts."""
    return {
        idx
        for idx, (state, settled) in journal.items()
        if state in FINAL or (state == "failed" and settled)
    }


def counts(report: BulkReport) -> dict[str, int]:
    return {
        "total": report.total,
        "succeeded": report.succeeded,
        "failed": report.failed,
        "invalid": report.invalid,
        "unknown": report.unknown,
        "not_attempted": report.not_attempted,
    }


async def until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll the in-process emulator (or a child's journal) until ``condition`` holds."""
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(0.005)
        return
    pytest.fail(f"timed out waiting for {what}")


class Clean:
    """The same input run once, without a journal, on a fresh emulator: what a resume must equal."""

    def __init__(self, report: BulkReport, applied: Counter[Any], items: int) -> None:
        self.report = report
        self.applied = applied
        self.items = items
        self.statuses = [(o.status, o.error_code) for o in report.outcomes()]

    @classmethod
    async def run(cls, source: Path) -> Clean:
        async with emulator() as fresh, client_for(fresh) as client:
            report = await client.points.bulk_update_expiry(
                InputFile(source), keep_all=True, chunk_size=CHUNK
            )
            return cls(report, Counter(fresh.audit.expiry_applied), fresh.stats.items)


async def cancel_while_held(
    emu: Emulator, client: CapillaryClient, source: Path, journal: Path, answered: int = 3
) -> tuple[BulkReport, int]:
    """Run a journalled job until ``answered`` chunks are answered, hold the next one at the
    emulator (not applied), and cancel the caller's scope while it is in flight.

    Returns the cancelled run's report and how many outcomes the caller consumed.
    """
    held = False

    def hold(progress: Progress) -> None:
        # Called by the only worker once a chunk is final, before it sends the next.
        nonlocal held
        if progress.requests >= answered and not held:
            held = True
            emu.latency = HOLD

    async def cancel_when_held() -> None:
        # The next chunk is held at the emulator, and the caller has every outcome out so far.
        await until(
            lambda: held and emu.stats.concurrent == 1 and consumed == outcomes.report.total,
            "the held request",
        )
        scope.cancel()

    consumed = 0
    with anyio.CancelScope() as scope:
        async with (
            client.points.stream_update_expiry(
                InputFile(source),
                journal=journal,
                chunk_size=CHUNK,
                concurrency=1,
                on_progress=hold,
            ) as outcomes,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(cancel_when_held)
            async for _ in outcomes:
                consumed += 1
    assert scope.cancelled_caught
    emu.latency = 0.0
    return outcomes.report, consumed


def assert_matches_clean(report: BulkReport, clean: Clean) -> None:
    assert counts(report) == counts(clean.report)
    assert [(o.status, o.error_code) for o in report.outcomes()] == clean.statuses


# -- 1. cancelled, then resumed --------------------------------------------------------------------


async def test_a_cancelled_job_resumes_and_applies_every_valid_row_once(tmp_path: Path) -> None:
    with anyio.fail_after(40):
        async with emulator() as emu, client_for(emu) as client:
            source = write_input(tmp_path / "rows.jsonl", emu)
            clean = await Clean.run(source)
            assert clean.report.invalid
            assert clean.report.failed
            journal = tmp_path / "job.db"

            first, consumed = await cancel_while_held(emu, client, source, journal)

            rows = read_journal(journal)
            # The held chunk: marked in flight before it was sent, closed as unknown.
            in_flight = sorted(i for i, state in rows.items() if state == ("unknown", False))
            assert len(in_flight) == CHUNK
            assert "in_flight" not in {state for state, _ in rows.values()}
            assert first.unknown == CHUNK
            finished = final_rows(rows)
            assert consumed >= 3 * CHUNK
            assert consumed == first.total - CHUNK
            assert first.succeeded + first.failed + first.invalid == len(finished)
            assert emu.audit.expiry_applied  # the first run applied some rows
            assert max(emu.audit.expiry_applied.values()) == 1
            refs = [data for _, data in file_rows(source)]
            for index in in_flight:  # held, then abandoned: never applied
                ref = (refs[index]["pointsAwardedRefId"], refs[index]["pointsAwardedRefType"])
                assert emu.audit.times_applied(*ref) == 0

            report = await client.points.bulk_update_expiry(
                InputFile(source), journal=journal, keep_all=True, chunk_size=CHUNK
            )

    assert report.stop_reason is None
    assert report.resumed == len(finished)
    assert {o.index for o in report.outcomes() if o.resumed} == finished
    assert_matches_clean(report, clean)
    # Every valid row applied exactly once over both runs, as in the clean run.
    assert emu.audit.expiry_applied == clean.applied
    assert set(clean.applied.values()) == {1}
    # No row sent twice: the server saw as many items as in the clean run.
    assert emu.stats.items == clean.items
    assert report.journal_complete
    assert Counter(state for state, _ in read_journal(journal).values()) == {
        "succeeded": clean.report.succeeded,
        "failed": clean.report.failed,
        "invalid": clean.report.invalid,
    }


async def test_an_unsafe_row_left_in_flight_ends_unknown_unless_retry_unknown(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(40):
        async with emulator() as emu, client_for(emu) as client:
            source = write_input(tmp_path / "rows.jsonl", emu, expiry_type="FIXED_DAYS")
            clean = await Clean.run(source)
            journal = tmp_path / "job.db"
            await cancel_while_held(emu, client, source, journal)
            rows = read_journal(journal)
            in_flight = {i for i, state in rows.items() if state == ("unknown", False)}
            assert len(in_flight) == CHUNK
            finished = final_rows(rows)

            second = await client.points.bulk_update_expiry(
                InputFile(source), journal=journal, keep_all=True, chunk_size=CHUNK
            )
            unknown = {o.index for o in second.outcomes() if o.status is OutcomeStatus.UNKNOWN}
            assert unknown == in_flight
            for outcome in second.outcomes():
                if outcome.index in in_flight:
                    assert outcome.resumed
                    assert "FIXED_DAYS" in (outcome.error_message or "")
                    assert "retry_unknown" in (outcome.error_message or "")
            assert second.resumed == len(finished) + CHUNK
            # What the held rows would have been: now unknown instead.
            held = Counter(clean.statuses[i][0].value for i in in_flight)
            assert counts(second) == {
                **counts(clean.report),
                "succeeded": clean.report.succeeded - held["succeeded"],
                "failed": clean.report.failed - held["failed"],
                "unknown": CHUNK,
            }
            # Not resent: the server never saw them, every other valid row once.
            assert emu.stats.items == clean.items - CHUNK
            assert max(emu.audit.expiry_applied.values()) == 1
            assert (
                sum(emu.audit.expiry_applied.values()) == clean.report.succeeded - held["succeeded"]
            )
            assert {i for i, (s, _) in read_journal(journal).items() if s == "unknown"} == in_flight

            third = await client.points.bulk_update_expiry(
                InputFile(source),
                journal=journal,
                keep_all=True,
                chunk_size=CHUNK,
                retry_unknown=True,
            )

    assert third.resumed == ROWS - CHUNK
    assert {o.index for o in third.outcomes() if not o.resumed} == in_flight
    assert_matches_clean(third, clean)
    assert emu.audit.expiry_applied == clean.applied
    assert set(clean.applied.values()) == {1}


# -- 2. a killed process, then resumed -------------------------------------------------------------

CHILD = """
import sys

import anyio

from capillary_async import BasicAuth, CapillaryClient, InputFile


async def main() -> None:
    base_url, source, journal = sys.argv[1:4]
    auth = BasicAuth("demo", "demo")
    async with CapillaryClient(base_url, auth=auth, allow_insecure=True) as client:
        await client.points.bulk_update_expiry(
            InputFile(source), journal=journal, chunk_size=10, concurrency=2
        )
    print("finished")


anyio.run(main)
"""


async def test_a_killed_process_resumes_and_applies_every_valid_row_once(tmp_path: Path) -> None:
    with anyio.fail_after(50):
        async with emulator(latency=0.02) as emu:
            source = write_input(tmp_path / "rows.jsonl", emu, 300)
            clean = await Clean.run(source)
            journal = tmp_path / "job.db"
            script = tmp_path / "child.py"
            script.write_text(CHILD, encoding="utf-8")
            errors = tmp_path / "child.err"
            with errors.open("wb") as stderr:
                process = await anyio.open_process(
                    [sys.executable, str(script), emu.base_url, str(source), str(journal)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            try:
                # Waiting on a real process: short polls of its journal, bounded.
                with anyio.move_on_after(30):
                    while not any(s == "succeeded" for s, _ in read_journal(journal).values()):
                        assert process.returncode is None, errors.read_text()
                        await anyio.sleep(0.05)
                assert emu.audit.expiry_applied, "the child applied nothing in 30 s"
                # Hold every request from now on, before it is applied; once the
                # requests already under way are answered and journalled, kill.
                emu.latency = HOLD
                before = emu.stats.requests

                def only_held_in_flight() -> bool:
                    held = emu.stats.requests - before
                    decided = sum(
                        state in ("succeeded", "failed")
                        for state, _ in read_journal(journal).values()
                    )
                    return held >= 1 and emu.stats.concurrent == held and decided == emu.stats.items

                await until(only_held_in_flight, "the child's requests to be held", timeout=20)
                assert process.returncode is None, "the child finished before it was killed"
                process.send_signal(signal.SIGKILL)
                await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            assert process.returncode == -signal.SIGKILL
            held_requests = emu.stats.requests - before
            emu.latency = 0.0

            rows = read_journal(journal)
            in_flight = {i for i, (state, _) in rows.items() if state == "in_flight"}
            assert len(in_flight) == CHUNK * held_requests
            finished = final_rows(rows)
            assert finished
            assert max(emu.audit.expiry_applied.values()) == 1

            async with client_for(emu) as client:
                report = await client.points.bulk_update_expiry(
                    InputFile(source), journal=journal, keep_all=True, chunk_size=CHUNK
                )

    assert report.resumed == len(finished)
    assert {o.index for o in report.outcomes() if o.resumed} == finished
    assert in_flight <= {o.index for o in report.outcomes() if not o.resumed}
    assert_matches_clean(report, clean)
    assert emu.audit.expiry_applied == clean.applied
    assert set(clean.applied.values()) == {1}
    assert emu.stats.items == clean.items


# -- 3. a journal is one job's ---------------------------------------------------------------------


async def test_a_journal_refuses_another_job_and_sends_nothing(tmp_path: Path) -> None:
    async with emulator() as emu, emulator() as other, client_for(emu) as client:
        source = write_input(tmp_path / "rows.jsonl", emu, 30)
        journal = tmp_path / "job.db"
        done = await client.points.bulk_update_expiry(InputFile(source), journal=journal)
        assert done.total == 30
        edited = tmp_path / "edited.jsonl"
        edited.write_bytes(source.read_bytes().replace(b"Goodwill", b"Goodwilm", 1))
        rows, requests, applied = (
            read_journal(journal),
            emu.stats.requests,
            Counter(emu.audit.expiry_applied),
        )

        async def same_file_other_target() -> BulkReport:
            async with client_for(other) as elsewhere:
                return await elsewhere.points.bulk_update_expiry(InputFile(source), journal=journal)

        attempts: dict[str, Callable[[], Any]] = {
            "another input file": lambda: client.points.bulk_update_expiry(
                InputFile(edited), journal=journal
            ),
            "another endpoint": lambda: client.points.bulk_update_redemption(
                InputFile(source, kind="redemption"), journal=journal
            ),
            "another target": same_file_other_target,
            "items, not the file": lambda: client.points.bulk_update_expiry(
                [data for _, data in file_rows(source)], journal=journal
            ),
        }
        for what, attempt in attempts.items():
            with pytest.raises(JournalMismatchError) as caught:
                await attempt()
            message = str(caught.value)
            assert f"journal {journal}" in message, what
            assert "another input file or target" in message, what
            assert (emu.stats.requests, other.stats.requests) == (requests, 0), what
            assert emu.audit.expiry_applied == applied, what
            assert read_journal(journal) == rows, what
            assert not journal.with_name("job.db.lock").exists(), what

        # Still the first job's: run again, it sends nothing.
        again = await client.points.bulk_update_expiry(InputFile(source), journal=journal)
    assert (again.resumed, again.requests) == (30, 0)
    assert counts(again) == counts(done)
    assert emu.stats.requests == requests


# -- 4. a dry run --------------------------------------------------------------------------------


async def test_a_dry_run_sends_nothing_and_makes_no_journal(tmp_path: Path) -> None:
    async with emulator() as emu, client_for(emu) as client:
        source = write_input(tmp_path / "rows.jsonl", emu, 60, broken_at=[4])
        clean = await Clean.run(source)
        journal = tmp_path / "job.db"
        report = await client.points.bulk_update_expiry(
            InputFile(source), journal=journal, dry_run=True, keep_all=True
        )
    assert report.dry_run is True
    assert (report.requests, emu.stats.requests, emu.stats.items) == (0, 0, 0)
    assert not emu.audit.expiry_applied
    assert report.resumed == 0
    lines = [line for line, _ in file_rows(source)]
    invalid_before = {o.index for o in clean.report.outcomes() if o.status is OutcomeStatus.INVALID}
    assert invalid_before
    for outcome in report.outcomes():
        assert outcome.line == lines[outcome.index]
        if outcome.index in invalid_before:
            assert outcome.status is OutcomeStatus.INVALID
            message = outcome.error_message or ""
            assert message.startswith(f"line {outcome.line}: ")
            if outcome.index == 4:
                assert "not valid JSON" in message
            else:  # the field, and why
                assert "programId" in message, message
        else:
            assert outcome.status is OutcomeStatus.NOT_ATTEMPTED, outcome
    assert report.invalid == len(invalid_before)
    assert report.not_attempted == 61 - len(invalid_before)
    # No journal appeared, nor anything next to it.
    assert names_in(tmp_path) == ["rows.jsonl"]


async def test_a_dry_run_with_a_journal_reports_what_earlier_runs_finished(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(30):
        async with emulator() as emu, client_for(emu) as client:
            source = write_input(tmp_path / "rows.jsonl", emu)
            journal = tmp_path / "job.db"
            await cancel_while_held(emu, client, source, journal)
            rows = read_journal(journal)
            finished = final_rows(rows)
            requests, applied = emu.stats.requests, Counter(emu.audit.expiry_applied)
            with open_db(journal) as db:
                meta = sorted(db.execute("SELECT key, value FROM meta"))
            report = await client.points.bulk_update_expiry(
                InputFile(source), journal=journal, dry_run=True, keep_all=True
            )
            assert (report.requests, emu.stats.requests) == (0, requests)
            assert emu.audit.expiry_applied == applied
            assert read_journal(journal) == rows  # a dry run writes no outcome
            with open_db(journal) as db:  # nor its counters
                assert sorted(db.execute("SELECT key, value FROM meta")) == meta

    assert report.dry_run is True
    assert report.total == ROWS
    assert report.resumed == len(finished)
    for outcome in report.outcomes():
        if outcome.index in finished:
            assert outcome.resumed
            assert outcome.status.value == rows[outcome.index][0]
        else:
            assert not outcome.resumed
            assert outcome.status in (OutcomeStatus.NOT_ATTEMPTED, OutcomeStatus.INVALID)
    assert report.not_attempted == ROWS - len(finished) - (
        report.invalid - sum(rows[i][0] == "invalid" for i in finished)
    )
    assert report.not_attempted > CHUNK  # the rows in flight and the rows never read


# -- 5. one job per journal ----------------------------------------------------------------------


async def test_a_second_job_on_a_journal_in_use_is_refused_before_sending(tmp_path: Path) -> None:
    async with emulator() as emu, client_for(emu) as client:
        source = write_input(tmp_path / "rows.jsonl", emu, 30)
        journal = tmp_path / "job.db"
        async with client.points.stream_update_expiry(
            InputFile(source), journal=journal
        ) as outcomes:
            async for _ in outcomes:
                pass  # finished, but the block (and the journal) is still held
            requests = emu.stats.requests
            for second in (
                client.points.bulk_update_expiry(InputFile(source), journal=journal),
                client.points.bulk_update_expiry(InputFile(source), journal=journal, dry_run=True),
            ):
                with pytest.raises(JournalError) as caught:
                    await second
                message = str(caught.value)
                assert "in use" in message
                assert f"journal {journal}" in message
                assert emu.stats.requests == requests
        # Let go: the next run may use it, and finds it all done.
        after = await client.points.bulk_update_expiry(InputFile(source), journal=journal)
    assert (after.resumed, after.requests) == (30, 0)
    assert outcomes.report.total == 30


# -- 6. the failures CSV of a resumed job ---------------------------------------------------------


async def test_the_csv_of_a_resumed_job_lists_every_row_that_did_not_succeed(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(40):
        async with emulator() as emu, client_for(emu) as client:
            source = write_input(tmp_path / "rows.jsonl", emu, blank_every=7, broken_at=[5, 90])
            clean = await Clean.run(source)
            journal = tmp_path / "job.db"
            await cancel_while_held(emu, client, source, journal)
            earlier = {
                i for i in final_rows(read_journal(journal)) if clean.statuses[i][0] != "succeeded"
            }
            assert earlier  # rows that did not succeed in the first run, not sent again
            report = await client.points.bulk_update_expiry(
                InputFile(source), journal=journal, chunk_size=CHUNK
            )
    out = tmp_path / "failures.csv"
    report.to_csv(out)
    with out.open(encoding="utf-8", newline="") as stream:
        table = list(csv.reader(stream))
    assert table[0] == CSV_HEADER
    written = [dict(zip(CSV_HEADER, row, strict=True)) for row in table[1:]]

    expected = tmp_path / "expected.csv"
    clean.report.to_csv(expected)  # a run without a journal (keep_all: every outcome)
    with expected.open(encoding="utf-8", newline="") as stream:
        wanted = [dict(zip(CSV_HEADER, row, strict=True)) for row in list(csv.reader(stream))[1:]]
    wanted = [row for row in wanted if row["status"] != "succeeded"]

    rows = file_rows(source)
    not_succeeded = [i for i, (status, _) in enumerate(clean.statuses) if status != "succeeded"]
    assert [int(r["index"]) for r in written] == not_succeeded
    assert earlier <= {int(r["index"]) for r in written}
    for row, want in zip(written, wanted, strict=True):
        index = int(row["index"])
        line, data = rows[index]
        assert row["line"] == str(line)
        assert row["status"] == clean.statuses[index][0].value
        if data is not None:
            assert row["pointsAwardedRefId"] == str(data["pointsAwardedRefId"])
            assert row["pointsAwardedRefType"] == data["pointsAwardedRefType"]
        if row["status"] == "failed":
            assert row["request_id"].startswith("emu-")
        # The same as the clean run's report, request ids aside.
        assert {k: v for k, v in row.items() if k != "request_id"} == {
            k: v for k, v in want.items() if k != "request_id"
        }
    assert any(int(r["line"]) != int(r["index"]) + 1 for r in written)


async def test_a_chunk_of_succeeded_rows_is_recorded_in_one_statement_and_exactly(
    tmp_path: Path,
) -> None:
    """Runs of consecutive succeeded rows a run marked are written by range; the rest row by row.

    Whatever the path, each row ends as the general statement would leave it.
    """
    from capillary_async._bulk._journal import Entry, Journal

    path = tmp_path / "job.db"
    journal = await Journal.open(path, "stamp")

    def ok(index: int, request_id: str, *refs: Any) -> Entry:
        return Entry(
            index, index + 1, "succeeded", *refs, request_id=request_id, settled=True, known=True
        )

    try:
        await journal.mark_in_flight(
            [(i, i + 1, True, i, "POINT_AWARDED", None) for i in range(10)]
        )
        await journal.record(
            [
                ok(2, "req-a"),
                ok(0, "req-a"),
                ok(1, "req-a"),
                Entry(
                    3, 4, "failed", None, None, 3034, "no such record", "req-a", True, known=True
                ),
                ok(4, "req-b"),
                ok(5, "req-b"),
                ok(6, "req-b"),
                ok(8, "req-c"),
                # "known" but absent: the range finds fewer rows and writes them in full
                ok(40, "req-d", 7, "POINT_AWARDED"),
                ok(41, "req-d", 7, "POINT_AWARDED"),
                Entry(20, 21, "invalid", None, None, None, "line 21: bad", None, True),
            ]
        )
    finally:
        await journal.close()
    with open_db(path) as db:
        rows = {
            idx: (state, code, message, request_id, settled, refs)
            for idx, state, code, message, request_id, settled, refs in db.execute(
                "SELECT idx, state, error_code, error_message, request_id, settled, refs FROM items"
            )
        }
    for i in (0, 1, 2):
        assert rows[i] == ("succeeded", None, None, "req-a", 1, f'[{i}, "POINT_AWARDED"]')
    assert rows[3] == ("failed", 3034, "no such record", "req-a", 1, '[3, "POINT_AWARDED"]')
    for i in (4, 5, 6):
        assert rows[i][:5] == ("succeeded", None, None, "req-b", 1)
    assert rows[8][3] == "req-c"
    assert rows[9][0] == "in_flight"  # no outcome yet
    assert rows[40][5] == '[7, "POINT_AWARDED"]'
    assert rows[40][:5] == ("succeeded", None, None, "req-d", 1)
    assert rows[41][:5] == ("succeeded", None, None, "req-d", 1)
    assert rows[20][:2] == ("invalid", None)


async def test_an_item_with_a_5000_digit_ref_id_is_invalid_and_the_journal_keeps_going(
    tmp_path: Path,
) -> None:
    """Its refs are stored as bounded text: json and SQLite cannot hold the number."""
    async with emulator() as emu, client_for(emu) as client:
        good = next(iter(sample_expiry_updates(emu.store, 1, seed=SEED, now=NOW)))
        items = [good, {**good, "pointsAwardedRefId": 10**5000}]
        report = await client.points.bulk_update_expiry(items, journal=tmp_path / "job.db")
    assert (report.succeeded, report.invalid, report.total) == (1, 1, 2)
    assert report.journal_error is None
    with open_db(tmp_path / "job.db") as db:
        states = dict(db.execute("SELECT idx, state FROM items"))
    assert states == {0: "succeeded", 1: "invalid"}
