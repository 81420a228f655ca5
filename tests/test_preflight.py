"""A wrong URL or wrong credentials: found before anything is applied, and named.

``client.check()`` proves the target and the credentials with a request that
changes nothing; the command line makes it before the first row (exit 2), and a
job that meets a 404 for its endpoint stops instead of running through the file.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import aiohttp.web
import pytest

from capillary_async import (
    APIError,
    AuthenticationError,
    BasicAuth,
    CapillaryClient,
    ConnectError,
    OutcomeStatus,
    ReadTimeoutError,
    RetryPolicy,
    ServerError,
)
from capillary_async.testing import Emulator, Faults, write_jsonl

from .loopback import serving
from .test_cli import SECRET, cli_env, emu, run_cli, sample  # noqa: F401 - emu: a fixture
from .test_cli_hostile import ESCAPE, in_process


def client_for(base_url: str, password: str = SECRET) -> CapillaryClient:
    return CapillaryClient(
        base_url, auth=BasicAuth("demo", password), retry=RetryPolicy(max_attempts=1)
    )


async def test_check_passes_against_the_emulator_and_applies_nothing(
    emu: Emulator,  # noqa: F811
) -> None:
    async with client_for(emu.base_url) as client:
        await client.check()
    assert emu.stats.requests == 1
    assert emu.stats.by_status == {400: 1}  # refused with 8931, once authenticated
    assert emu.stats.items == 0
    assert not emu.audit.expiry_applied


async def test_check_names_a_wrong_password(emu: Emulator) -> None:  # noqa: F811
    async with client_for(emu.base_url, password="wrong") as client:
        with pytest.raises(AuthenticationError) as info:
            await client.check()
    assert info.value.status == 401
    assert "wrong" not in str(info.value)


async def test_check_names_a_wrong_url(emu: Emulator) -> None:  # noqa: F811
    async with client_for(emu.base_url + "/v2") as client:
        with pytest.raises(APIError) as info:
            await client.check()
    assert info.value.status == 404
    assert f"POST {emu.base_url}/v2/v2/points/updateExpiry answered 404" in str(info.value)
    assert "check the base URL" in str(info.value)


async def test_check_says_when_nothing_listens() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client_for(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(ConnectError):
            await client.check()


async def test_a_job_meeting_a_404_for_its_endpoint_stops_and_keeps_rows_resendable(
    emu: Emulator,  # noqa: F811
) -> None:
    items = sample(emu, 200)
    async with client_for(emu.base_url + "/v2") as client:
        report = await client.points.bulk_update_expiry(items, chunk_size=10, concurrency=2)
    assert report.requests <= 2  # not one request per chunk of the whole input
    assert report.stop_reason is not None
    assert "the endpoint is not there" in report.stop_reason
    assert "/v2/v2/points/updateExpiry answered 404" in report.stop_reason
    assert report.total == 200
    assert report.succeeded == 0
    for outcome in report.failures():  # nothing settled: a rerun sends them all
        assert outcome.status in (OutcomeStatus.FAILED, OutcomeStatus.NOT_ATTEMPTED)
        assert not outcome.settled


async def test_a_job_with_preflight_raises_before_reading_anything(
    emu: Emulator,  # noqa: F811
) -> None:
    read = []

    def rows() -> object:
        for item in sample(emu, 20):
            read.append(item)
            yield item

    async with client_for(emu.base_url, password="wrong") as client:
        with pytest.raises(AuthenticationError):
            await client.points.bulk_update_expiry(rows(), preflight=True)
    assert read == []
    assert emu.stats.requests == 1


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("password", "Invalid username or password (HTTP 401"),
        ("url", "/v2/v2/points/updateExpiry answered 404"),
    ],
)
async def test_the_command_line_exits_2_before_anything_is_applied(
    emu: Emulator,  # noqa: F811
    tmp_path: Path,
    problem: str,
    expected: str,
) -> None:
    items = sample(emu, 100)
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    journal, report = tmp_path / "job.db", tmp_path / "report.json"
    env = cli_env(emu)
    if problem == "password":
        env["CAPILLARY_PASSWORD"] = "not-the-password"
    else:
        env["CAPILLARY_BASE_URL"] = emu.base_url + "/v2"
    args = ["expiry", "apply", str(source), "--journal", str(journal), "--report", str(report)]
    code, out, err = await run_cli(*args, env=env)
    assert code == 2, err
    assert "the target or the credentials do not work" in err
    assert expected in err
    assert "nothing was applied" in err
    assert "Traceback" not in err
    assert "not-the-password" not in out + err
    # The preflight alone (the emulator does not count a path it does not serve).
    assert emu.stats.requests == (1 if problem == "password" else 0)
    assert not emu.audit.expiry_applied
    # Skipped, the same wrong password is a job stopped by its first refusal (exit 1).
    if problem == "password":
        code, out, err = await run_cli(*args, "--no-preflight", env=env)
        assert code == 1, err
        summary = json.loads(report.read_text())
        assert "refused the credentials" in summary["stop_reason"]
        assert summary["succeeded"] == 0


async def test_a_preflight_refusal_reaches_the_terminal_without_control_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
        text = json.dumps({"errors": [{"code": 401, "message": f"denied{ESCAPE}"}]})
        return aiohttp.web.Response(status=401, text=text, content_type="application/json")

    source = tmp_path / "in.jsonl"
    source.write_text('{"pointsAwardedRefId": 1}\n')
    async with serving(answer) as url:
        env = cli_env(None, CAPILLARY_BASE_URL=url, CAPILLARY_USERNAME="u")
        env["CAPILLARY_PASSWORD"] = SECRET
        code, out, err = await in_process(capsys, "expiry", "apply", str(source), env=env)
    assert code == 2
    assert "the credentials do not work: denied\\x1b[2J" in err
    assert "\x1b" not in out + err


# -- found by a hostile review ----------------------------------------------------------------


async def portal(request: aiohttp.web.Request) -> aiohttp.web.Response:
    """A wrong URL that answers everything: a portal's sign-in page, with 200."""
    return aiohttp.web.Response(status=200, text="<html><body>Sign in</body></html>")


async def test_check_refuses_an_answer_that_is_not_capillarys() -> None:
    async with serving(portal) as url, client_for(url) as client:
        with pytest.raises(APIError, match="not as Capillary's API does") as info:
            await client.check()
    assert info.value.status == 200
    assert "/v2/points/updateExpiry" in str(info.value)


async def test_a_job_whose_answers_cannot_be_read_stops_instead_of_running_through(
    emu: Emulator,  # noqa: F811
) -> None:
    items = sample(emu, 500)
    async with serving(portal) as url, client_for(url) as client:
        report = await client.points.bulk_update_expiry(items, chunk_size=10, concurrency=1)
    assert report.requests == 3  # not 50
    assert "3 answers in a row could not be read" in (report.stop_reason or "")
    assert report.unknown == 30  # sent, and nobody can tell what the server did
    assert report.not_attempted == 470


async def test_the_command_line_refuses_a_portal_before_applying_anything(
    emu: Emulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, sample(emu, 50))
    async with serving(portal) as url:
        code, _, err = await run_cli(
            "expiry", "apply", str(source), env=cli_env(emu, CAPILLARY_BASE_URL=url)
        )
    assert code == 2, err
    assert "not as Capillary's API does" in err


async def test_check_makes_two_attempts_at_most() -> None:
    calls = []
    release = asyncio.Event()

    async def hang(request: aiohttp.web.Request) -> aiohttp.web.Response:
        calls.append(request)
        await release.wait()
        return aiohttp.web.Response(status=500)

    retry = RetryPolicy(max_attempts=5, backoff_base=0.01, jitter=False)
    async with serving(hang) as url:
        client = CapillaryClient(url, auth=BasicAuth("demo", SECRET), retry=retry)
        async with client:
            with pytest.raises(ReadTimeoutError):
                await client.check(timeout=0.1)
        release.set()
    assert len(calls) == 2


async def test_a_dry_run_with_a_journal_from_the_command_line(
    emu: Emulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    source, journal = tmp_path / "in.jsonl", tmp_path / "job.db"
    write_jsonl(source, sample(emu, 20))
    code, _, err = await run_cli(
        "expiry", "apply", str(source), "--journal", str(journal), env=cli_env(emu)
    )
    assert code == 0, err
    requests = emu.stats.requests
    env = {k: v for k, v in cli_env(emu).items() if not k.startswith("CAPILLARY_PASSWORD")}
    code, out, err = await run_cli(
        "expiry", "apply", str(source), "--journal", str(journal), "--dry-run", env=env
    )
    assert code == 0, err
    assert "20 rows" in out
    assert emu.stats.requests == requests  # a dry run sends nothing, not even the preflight


async def test_check_fails_while_the_service_is_unavailable(
    emu: Emulator,  # noqa: F811
) -> None:
    """A 503 carries Capillary's code 4001, but says the service is not ready."""
    emu.faults = Faults(rate_503=1.0)
    retry = RetryPolicy(max_attempts=2, backoff_base=0.001, jitter=False)
    client = CapillaryClient(emu.base_url, auth=BasicAuth("demo", SECRET), retry=retry)
    async with client:
        with pytest.raises(ServerError) as info:
            await client.check()
    assert info.value.status == 503
