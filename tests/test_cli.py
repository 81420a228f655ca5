"""The installed ``capillary-async`` executable, end to end, against the emulator."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from capillary_async import BasicAuth, BearerToken, OAuthCredentials
from capillary_async._bulk import failure_columns
from capillary_async._bulk._files import count_rows, open_input, unflatten
from capillary_async.cli._env import UsageError, credentials_from_env, target_from
from capillary_async.cli._progress import Display
from capillary_async.testing import Emulator, sample_expiry_updates, write_csv, write_jsonl

from .conftest import open_db

EXE = str(Path(sys.executable).with_name("capillary-async"))
SECRET = "pw-Zq81x-never-printed"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(seed=3, customers=1000, awards_per_customer=4, password=SECRET) as emulator:
        yield emulator


def cli_env(emu: Emulator | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPILLARY_")}
    if emu is not None:
        env.update(
            CAPILLARY_USERNAME="demo",
            CAPILLARY_PASSWORD=SECRET,
            CAPILLARY_BASE_URL=emu.base_url,
        )
    env.update(extra)
    return env


async def run_cli(
    *args: str, env: dict[str, str], stdin: bytes | None = None, timeout: float = 120
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        EXE,
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    assert process.returncode is not None
    assert SECRET not in out.decode() + err.decode()  # never printed, whatever happens
    return process.returncode, out.decode(), err.decode()


def sample(emu: Emulator, count: int, *, bad: float = 0.0, seed: int = 1) -> list[dict[str, Any]]:
    return list(sample_expiry_updates(emu.store, count, seed=seed, bad=bad, now=emu.clock.now()))


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


# -- the demo -------------------------------------------------------------------------------


async def test_demo_runs_with_no_setup(tmp_path: Path) -> None:
    code, out, err = await run_cli("demo", "--dir", str(tmp_path), env=cli_env(None))
    assert code == 0, err
    assert "Capillary emulator on http://127.0.0.1:" in out
    assert "20,000 rows" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["total"] == 20_000
    assert 100 < report["total"] - report["succeeded"] < 1000  # a few hundred planted bad rows
    assert {"3034", "3037", "8015", "8934"} <= set(report["failures_by_code"])
    assert report["invalid"] > 0
    failures = read_csv(tmp_path / "failures.csv")
    assert len(failures) == report["total"] - report["succeeded"]
    assert "expiry apply: " in err  # progress lines on a non-terminal


# -- apply ----------------------------------------------------------------------------------


async def test_apply_jsonl_with_report_and_failures(emu: Emulator, tmp_path: Path) -> None:
    items = sample(emu, 1500, bad=0.05)
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    report_path, failures_path = tmp_path / "report.json", tmp_path / "failures.csv"
    code, _out, err = await run_cli(
        "expiry",
        "apply",
        str(source),
        "--chunk-size",
        "50",
        "--concurrency",
        "4",
        "--report",
        str(report_path),
        "--failures",
        str(failures_path),
        env=cli_env(emu),
    )
    assert code == 1, err
    report = json.loads(report_path.read_text())
    for key in (
        "total",
        "succeeded",
        "failed",
        "invalid",
        "unknown",
        "not_attempted",
        "requests",
        "retried_requests",
        "elapsed_seconds",
        "items_per_second",
        "failures_by_code",
    ):
        assert key in report
    assert report["total"] == 1500
    bad = sum(1 for i in items if i["programId"] == "not-a-number")
    assert report["invalid"] == bad
    assert report["succeeded"] + report["failed"] + report["invalid"] == 1500
    rows = read_csv(failures_path)
    assert list(rows[0]) == failure_columns(["pointsAwardedRefId", "pointsAwardedRefType"])
    assert len(rows) == 1500 - report["succeeded"]
    for row in rows:
        item = items[int(row["line"]) - 1]
        assert row["pointsAwardedRefId"] == str(item["pointsAwardedRefId"])
    applied = sum(emu.audit.expiry_applied.values())
    assert applied == report["succeeded"]
    assert emu.stats.requests == report["requests"] + 1  # and the preflight


async def test_apply_csv_with_malformed_rows(emu: Emulator, tmp_path: Path) -> None:
    good = sample(emu, 40)
    source = tmp_path / "in.csv"
    write_csv(source, good)
    lines = source.read_text().splitlines()
    header = lines[0].split(",")
    broken = [
        lines[1].replace("FIXED_DATE", "FIXED_WEEKS"),  # unknown enum: line 42
        '"id,172440986,469',  # bad quoting: line 43
        lines[2].replace(f",{good[1]['programId']},", ",four-six-nine,", 1),  # line 44
        ",".join(lines[3].split(",")[: header.index("expiryDate.expiryType")]),  # missing columns
    ]
    source.write_text("\n".join([*lines, *broken]) + "\n")
    failures = tmp_path / "failures.csv"
    code, _, err = await run_cli(
        "expiry", "apply", str(source), "--failures", str(failures), env=cli_env(emu)
    )
    assert code == 1, err
    rows = {int(r["line"]): r for r in read_csv(failures)}
    assert sorted(rows) == [42, 43, 44, 45]
    assert all(r["status"] == "invalid" for r in rows.values())
    assert "FIXED_WEEKS" in rows[42]["error_message"]
    assert rows[42]["error_code"] == "8941"
    assert "bad CSV" in rows[43]["error_message"]
    assert "programId" in rows[44]["error_message"]
    assert "expiryDate" in rows[45]["error_message"]
    assert all(r["error_message"].startswith(f"line {n}:") for n, r in rows.items())
    assert sum(emu.audit.expiry_applied.values()) == 40


async def test_apply_from_stdin_all_good_exits_0(emu: Emulator) -> None:
    items = sample(emu, 120)
    payload = "".join(json.dumps(i) + "\n" for i in items).encode()
    code, out, err = await run_cli("expiry", "apply", "-", env=cli_env(emu), stdin=payload)
    assert code == 0, err
    assert "succeeded" in out
    assert "120" in out
    assert sum(emu.audit.expiry_applied.values()) == 120


async def test_redemption_apply_from_csv(emu: Emulator, tmp_path: Path) -> None:
    records = list(emu.store.redemptions.values())[:5]
    lines = ["redemptionId,billNumber,entity.type,entity.identifierType,entity.identifierValue"]
    lines += [
        f"{r.redemption_id},fixed-{r.redemption_id},CUSTOMER,id,{r.customer_id}" for r in records
    ]
    lines.append("nope00,x,CUSTOMER,id,100000")
    source = tmp_path / "redemptions.csv"
    source.write_text("\n".join(lines) + "\n")
    failures = tmp_path / "failures.csv"
    code, _, err = await run_cli(
        "redemption", "apply", str(source), "--failures", str(failures), env=cli_env(emu)
    )
    assert code == 1, err
    (row,) = read_csv(failures)
    assert (row["line"], row["redemptionId"], row["status"], row["error_code"]) == (
        "7",
        "nope00",
        "failed",
        "8015",
    )
    assert all(r.bill_number == f"fixed-{r.redemption_id}" for r in records)


async def test_dry_run_validates_and_sends_nothing(emu: Emulator, tmp_path: Path) -> None:
    items = sample(emu, 200, bad=0.1)
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    report = tmp_path / "report.json"
    code, out, _ = await run_cli(
        "expiry", "apply", str(source), "--dry-run", "--report", str(report), env=cli_env(None)
    )
    assert code == 1
    data = json.loads(report.read_text())
    bad = sum(1 for i in items if i["programId"] == "not-a-number")
    assert (data["total"], data["invalid"]) == (200, bad)
    assert "nothing sent" in out
    write_jsonl(source, sample(emu, 50))
    code, _, _ = await run_cli("expiry", "apply", str(source), "--dry-run", env=cli_env(None))
    assert code == 0
    assert emu.stats.requests == 0


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"CAPILLARY_USERNAME": ""}, "CAPILLARY_USERNAME"),
        ({"CAPILLARY_PASSWORD": ""}, "CAPILLARY_PASSWORD"),
        ({"CAPILLARY_CLIENT_KEY": "k"}, "CAPILLARY_CLIENT_SECRET"),
        ({"CAPILLARY_BASE_URL": ""}, "CAPILLARY_BASE_URL"),
        ({"CAPILLARY_BASE_URL": "", "CAPILLARY_CLUSTER": "MARS"}, "unknown cluster"),
    ],
)
async def test_usage_errors_exit_2_and_send_nothing(
    emu: Emulator, tmp_path: Path, extra: dict[str, str], named: str
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, sample(emu, 10))
    env = cli_env(emu, **extra)
    if extra.get("CAPILLARY_USERNAME") == "":  # no credentials at all
        env.pop("CAPILLARY_PASSWORD")
    code, out, err = await run_cli("expiry", "apply", str(source), env=env)
    assert code == 2
    assert named in err
    assert SECRET not in out + err
    assert emu.stats.requests == 0


async def test_bad_options_and_missing_files_exit_2(emu: Emulator, tmp_path: Path) -> None:
    env = cli_env(emu)
    code, _, err = await run_cli("expiry", "apply", str(tmp_path / "missing.jsonl"), env=env)
    assert (code, "no such file" in err) == (2, True)
    code, _, _ = await run_cli("expiry", "apply", "x.jsonl", "--chunk-size", "0", env=env)
    assert code == 2
    code, _, err = await run_cli("expiry", "apply", "x.jsonl", "--rate", "1e-300", env=env)
    assert (code, "at least 0.001" in err) == (2, True)
    code, _, err = await run_cli("expiry", "apply", "-", "--journal", "j.db", env=env, stdin=b"")
    assert (code, "standard input" in err) == (2, True)
    assert emu.stats.requests == 0


async def test_a_journal_is_tied_to_its_input(emu: Emulator, tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(first, sample(emu, 20))
    write_jsonl(second, sample(emu, 20, seed=2)[::-1])
    journal = str(tmp_path / "job.db")
    code, _, err = await run_cli(
        "expiry", "apply", str(first), "--journal", journal, env=cli_env(emu)
    )
    assert code == 0, err
    requests = emu.stats.requests
    code, _, err = await run_cli(
        "expiry", "apply", str(second), "--journal", journal, env=cli_env(emu)
    )
    assert code == 2
    assert "another input file" in err
    # The advice never leads to sending applied rows again under a new journal.
    assert "Do not start a new journal for an edited copy" in " ".join(err.split())
    assert emu.stats.requests == requests
    code, out, _ = await run_cli(
        "expiry", "apply", str(first), "--journal", journal, env=cli_env(emu)
    )
    assert code == 0  # the same file resumes: everything is already done
    assert emu.stats.requests == requests + 1  # the preflight alone
    assert "20 rows" in out


# -- resume after SIGKILL, and Ctrl-C -----------------------------------------------------------


def journal_states(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    with open_db(path) as db:
        try:
            return dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state"))
        except sqlite3.OperationalError:
            return {}


async def start(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        EXE,
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def wait_for_progress(path: Path, at_least: int) -> None:
    for _ in range(3000):
        if journal_states(path).get("succeeded", 0) >= at_least:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the job made no progress")


def mixed(emu: Emulator, count: int) -> list[dict[str, Any]]:
    items = sample(emu, count)
    for n, item in enumerate(items):
        if n % 3 == 0:
            item["expiryDate"] = {"expiryType": "FIXED_DAYS", "expiryValue": "30"}
    return items


async def test_sigkill_then_resume_applies_every_item_once(emu: Emulator, tmp_path: Path) -> None:
    emu.latency = 0.03
    items = mixed(emu, 3000)
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    journal = tmp_path / "job.db"
    report = tmp_path / "report.json"
    args = ["expiry", "apply", str(source), "--journal", str(journal), "--report", str(report)]
    args += ["--chunk-size", "20", "--concurrency", "2"]
    process = await start(*args, env=cli_env(emu))
    await wait_for_progress(journal, 400)
    process.kill()
    await process.communicate()
    assert process.returncode == -signal.SIGKILL
    states = journal_states(journal)
    assert 400 <= states.get("succeeded", 0) < 3000
    with open_db(journal) as db:
        in_flight = dict(
            db.execute(
                "SELECT idempotent, COUNT(*) FROM items WHERE state = 'in_flight' GROUP BY 1"
            )
        )
    unsafe_in_flight = in_flight.get(0, 0)

    emu.latency = 0.0
    code, _out, err = await run_cli(*args, env=cli_env(emu))
    assert code == (1 if unsafe_in_flight else 0), err
    final = json.loads(report.read_text())
    assert final["total"] == 3000  # the report covers every input line
    assert final["unknown"] == unsafe_in_flight
    assert final["succeeded"] == 3000 - unsafe_in_flight
    with open_db(journal) as db:
        lines = [row[0] for row in db.execute("SELECT line FROM items ORDER BY idx")]
        unknown = {row[0] for row in db.execute("SELECT idx FROM items WHERE state = 'unknown'")}
    assert lines == list(range(1, 3001))
    for n, item in enumerate(items):
        times = emu.audit.times_applied(item["pointsAwardedRefId"], item["pointsAwardedRefType"])
        if item["expiryDate"]["expiryType"] == "FIXED_DATE":
            assert times >= 1  # idempotent: at least once
        elif n in unknown:
            assert times <= 1  # in flight at the kill: applied once or not at all, never twice
        else:
            assert times == 1  # exactly once


async def test_ctrl_c_finishes_in_flight_saves_and_resumes(emu: Emulator, tmp_path: Path) -> None:
    emu.latency = 0.03
    items = mixed(emu, 2000)
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    journal, report = tmp_path / "job.db", tmp_path / "report.json"
    args = ["expiry", "apply", str(source), "--journal", str(journal)]
    args += ["--chunk-size", "20", "--concurrency", "2"]
    process = await start(*args, "--report", str(report), env=cli_env(emu))
    await wait_for_progress(journal, 200)
    process.send_signal(signal.SIGINT)
    out, err = await process.communicate()
    assert process.returncode == 130
    assert "interrupted" in err.decode()
    states = journal_states(journal)
    assert "in_flight" not in states  # requests in flight were finished and recorded
    assert 200 <= states["succeeded"] < 2000
    # The summary says what was not read, and how to resume.
    summary = json.loads(report.read_text())
    assert summary["input_complete"] is False
    assert summary["input_total"] == 2000
    assert summary["unread"] == 2000 - summary["total"] > 0
    text = out.decode()
    assert f"not read:     {summary['unread']:>10,} of the input's 2,000 rows" in text
    assert f"to resume:    capillary-async expiry apply {source} --journal {journal}" in text

    emu.latency = 0.0
    code, _out_text, err_text = await run_cli(*args, env=cli_env(emu))
    assert code == 0, err_text
    assert journal_states(journal) == {"succeeded": 2000}
    for item in items:  # exactly once, FIXED_DAYS included
        assert (
            emu.audit.times_applied(item["pointsAwardedRefId"], item["pointsAwardedRefType"]) == 1
        )


async def test_ctrl_c_without_a_journal_keeps_the_scratch_one_to_resume_from(
    emu: Emulator, tmp_path: Path
) -> None:
    emu.latency = 0.03
    items = mixed(emu, 1000)
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    args = ["expiry", "apply", str(source), "--chunk-size", "20", "--concurrency", "2"]
    process = await start(*args, env=cli_env(emu))
    for _ in range(3000):
        if sum(emu.audit.expiry_applied.values()) >= 100:
            break
        await asyncio.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = await process.communicate()
    assert process.returncode == 130
    found = re.search(r"rerun the same command with --journal (\S+) to finish", err.decode())
    assert found, err.decode()
    emu.latency = 0.0
    code, out, err_text = await run_cli(*args, "--journal", found[1], env=cli_env(emu))
    assert code == 0, err_text
    assert "1,000 rows" in out
    for item in items:  # exactly once, FIXED_DAYS included
        assert (
            emu.audit.times_applied(item["pointsAwardedRefId"], item["pointsAwardedRefType"]) == 1
        )


# -- pieces, in process ------------------------------------------------------------------------


def test_credentials_from_the_environment() -> None:
    basic = credentials_from_env({"CAPILLARY_USERNAME": "u", "CAPILLARY_PASSWORD": "p"})
    assert basic == BasicAuth("u", "p")
    digest = credentials_from_env(
        {"CAPILLARY_USERNAME": "u", "CAPILLARY_PASSWORD_MD5": "83878c91171338902e0fe0fb97a8c47a"}
    )
    assert digest == BasicAuth("u", "p")
    assert isinstance(
        credentials_from_env({"CAPILLARY_CLIENT_KEY": "k", "CAPILLARY_CLIENT_SECRET": "s"}),
        OAuthCredentials,
    )
    assert isinstance(credentials_from_env({"CAPILLARY_TOKEN": "t"}), BearerToken)
    for env, named in [
        ({}, "no credentials"),
        ({"CAPILLARY_CLIENT_SECRET": "s"}, "CAPILLARY_CLIENT_KEY"),
        ({"CAPILLARY_PASSWORD": "p"}, "CAPILLARY_USERNAME"),
        ({"CAPILLARY_USERNAME": "u", "CAPILLARY_PASSWORD": "p", "CAPILLARY_TOKEN": "t"}, "one"),
        (
            {
                "CAPILLARY_USERNAME": "u",
                "CAPILLARY_PASSWORD": "p",
                "CAPILLARY_PASSWORD_MD5": "83878c91171338902e0fe0fb97a8c47a",
            },
            "not both",
        ),
        ({"CAPILLARY_USERNAME": "u", "CAPILLARY_PASSWORD_MD5": "zz"}, "password_md5"),
    ]:
        with pytest.raises(UsageError, match=named) as info:
            credentials_from_env(env)
        assert "zz" not in str(info.value)


def test_targets() -> None:
    assert target_from(None, "eu", {}) == "https://eu.api.capillarytech.com"
    assert target_from(None, None, {"CAPILLARY_CLUSTER": "APAC"}).startswith("https://apac.")
    assert (
        target_from("https://x.example/", None, {"CAPILLARY_CLUSTER": "EU"}) == "https://x.example"
    )
    with pytest.raises(UsageError, match="clear text"):
        target_from("http://x.example", None, {})
    with pytest.raises(UsageError, match="not both"):
        target_from("https://x.example", "EU", {})


def test_inputs(tmp_path: Path) -> None:
    assert unflatten({"a.b": "1", "a.c": "", "d": "2"}) == {"a": {"b": "1"}, "d": "2"}
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n\n3,4")
    assert count_rows(str(path)) == 3  # a header, one blank, no final newline
    with open_input(str(path), None) as rows:
        assert [(r.line, r.data) for r in rows] == [
            (2, {"a": "1", "b": "2"}),
            (4, {"a": "3", "b": "4"}),
        ]


def test_rich_progress_renders(tmp_path: Path) -> None:
    stream = io.StringIO()
    with Display("expiry apply", 10, stream=stream, fancy=True) as display:
        display.update(5, 1)
    assert "expiry apply" in stream.getvalue()
    assert "5/10" in stream.getvalue()


async def test_retry_unknown_resends_rows_left_in_flight(emu: Emulator, tmp_path: Path) -> None:
    items = mixed(emu, 30)
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    journal = tmp_path / "job.db"
    args = ["expiry", "apply", str(source), "--journal", str(journal)]
    code, _, err = await run_cli(*args, env=cli_env(emu))
    assert code == 0, err
    # as if the process had died with rows 0-5 in flight (0 and 3 are FIXED_DAYS)
    with open_db(journal) as db:
        db.execute("UPDATE items SET state = 'in_flight' WHERE idx < 6")
    code, _, _ = await run_cli(*args, env=cli_env(emu))
    assert code == 1
    with open_db(journal) as db:
        states = dict(db.execute("SELECT idx, state FROM items WHERE idx < 6"))
    assert states == {
        0: "unknown",
        1: "succeeded",
        2: "succeeded",
        3: "unknown",
        4: "succeeded",
        5: "succeeded",
    }
    requests = emu.stats.requests
    code, _, _ = await run_cli(*args, env=cli_env(emu))
    # Unknown FIXED_DAYS rows wait: the preflight is the one request.
    assert (code, emu.stats.requests) == (1, requests + 1)
    code, _, _ = await run_cli(*args, "--retry-unknown", env=cli_env(emu))
    assert code == 0
    assert emu.stats.requests == requests + 3  # the preflight, and the two unknown rows
    assert journal_states(journal) == {"succeeded": 30}


async def test_emulator_command_serves(tmp_path: Path) -> None:
    process = await start(
        "emulator", "--port", "0", "--seed", "1", "--customers", "3", env=cli_env(None)
    )
    try:
        assert process.stderr is not None
        banner = b""
        while b"Ctrl-C" not in banner:
            banner += await asyncio.wait_for(process.stderr.readline(), 30)
        assert b"on http://127.0.0.1:" in banner
        assert b"3 customers" in banner
    finally:
        process.send_signal(signal.SIGINT)
        await process.communicate()
    assert process.returncode in (0, 130)


async def test_version_names_the_package_and_the_python() -> None:
    from capillary_async import __version__

    code, out, _ = await run_cli("--version", env=cli_env(None))
    assert code == 0
    assert out.strip() == f"capillary-async {__version__} (Python {sys.version.split()[0]})"


def test_every_option_of_every_command_says_what_it_does_and_its_default() -> None:
    import argparse

    from capillary_async.cli import build_parser
    from capillary_async.testing._command import _FAULT_HELP, FAULT_OPTIONS

    assert _FAULT_HELP.keys() == FAULT_OPTIONS.keys()

    def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        found = [parser]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    found += parsers(child)
        return found

    checked = 0
    for parser in parsers(build_parser()):
        for action in parser._actions:
            if isinstance(
                action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
            ):
                continue
            name = action.option_strings[-1] if action.option_strings else action.dest
            assert action.help, f"{parser.prog} {name}: no help text"
            default = action.default
            if default not in (None, False, True) and action.option_strings:
                assert "default" in action.help, f"{parser.prog} {name}: default not shown"
            checked += 1
    assert checked > 60
    for kind in ("expiry", "redemption"):
        apply = next(p for p in parsers(build_parser()) if p.prog.endswith(f"{kind} apply"))
        assert f"capillary-async {kind} apply rows.jsonl" in (apply.epilog or "")
        assert "exit codes:" in (apply.epilog or "")
