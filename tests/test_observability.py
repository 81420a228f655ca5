"""Logs per part with structured fields, ``CAPILLARY_LOG``, and the ``on_retry`` hook."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from capillary_async import RetryEvent, RetryPolicy

from .conftest import FakeClock
from .test_hostile import client_with, item, success_for


def flaky(*statuses: int) -> Any:
    """Answers with these statuses first, then successes."""
    queue = list(statuses)

    def handler(request: Any) -> Any:
        from capillary_async import Response

        if queue:
            return Response(status=queue.pop(0), headers={"x-cap-request-id": "r-1"}, content=b"")
        return success_for(request)

    return handler


async def test_records_come_from_one_logger_per_part_with_structured_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="capillary_async")
    async with client_with(flaky(503)) as client:
        await client.points.update_expiry([item(1)])
        await client.points.bulk_update_expiry([item(2)], fail_fast=True)
    names = {record.name for record in caplog.records}
    assert "capillary_async.client" in names
    exchanges = [r for r in caplog.records if getattr(r, "status", None) is not None]
    assert [r.status for r in exchanges][:2] == [503, 200]  # type: ignore[attr-defined]
    first = exchanges[0]
    assert (first.method, first.path, first.attempt) == (  # type: ignore[attr-defined]
        "POST",
        "/v2/points/updateExpiry",
        1,
    )
    assert first.request_id == "r-1"  # type: ignore[attr-defined]
    assert first.elapsed_ms >= 0  # type: ignore[attr-defined]
    retry = next(r for r in caplog.records if hasattr(r, "retry_in"))
    assert retry.error_type == "ServerError"  # type: ignore[attr-defined]


async def test_on_retry_is_told_of_each_retry_of_calls_and_chunks() -> None:
    events: list[RetryEvent] = []

    async def count(event: RetryEvent) -> None:
        events.append(event)

    retry = RetryPolicy(max_attempts=4, jitter=False)
    async with client_with(flaky(503, 429), retry=retry, on_retry=events.append) as client:
        await client.points.update_expiry([item(1)])
    assert [(e.attempt, e.error.status, e.items) for e in events] == [  # type: ignore[attr-defined]
        (1, 503, None),
        (2, 429, None),
    ]
    assert events[0].path == "/v2/points/updateExpiry"
    assert events[0].request_id == "r-1"
    events.clear()
    async with client_with(flaky(503), retry=retry, on_retry=count) as client:
        report = await client.points.bulk_update_expiry([item(n) for n in range(1, 5)])
    assert report.succeeded == 4
    assert [(e.attempt, e.items) for e in events] == [(1, 4)]  # a chunk of four, retried once


async def test_a_hook_that_raises_never_fails_the_call(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: RetryEvent) -> None:
        raise ZeroDivisionError

    async with client_with(flaky(503), on_retry=broken, clock=FakeClock()) as client:
        result = await client.points.update_expiry([item(1)])
    assert len(result.updates) == 1
    assert "on_retry raised ZeroDivisionError" in caplog.text
    derived = client.with_options(on_retry=None)
    assert derived.on_retry is None
    with pytest.raises(TypeError, match="on_retry"):
        client.with_options(on_retry=3)  # type: ignore[arg-type]


SCRIPT = textwrap.dedent(
    """
    import asyncio
    from capillary_async import BasicAuth, CapillaryClient
    from capillary_async.testing import Emulator, sample_expiry_updates

    async def main():
        async with Emulator(seed=1, password="Log-S3cret-pw!") as emu:
            rows = list(sample_expiry_updates(emu.store, 2, now=emu.clock.now()))
            auth = BasicAuth("demo", "Log-S3cret-pw!")
            async with CapillaryClient(emu.base_url, auth=auth) as client:
                await client.points.update_expiry(rows)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("level", ["debug", "info", "bogus", ""])
def test_capillary_log_turns_on_a_readable_handler(level: str) -> None:
    env = {**os.environ, "CAPILLARY_LOG": level}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    err = done.stderr
    if level in ("debug", "info"):
        assert "INFO capillary_async.client: POST /v2/points/updateExpiry -> 200" in err
        assert ("request body" in err) == (level == "debug")
    elif level == "bogus":
        assert "CAPILLARY_LOG must be debug, info or warning; ignored" in err
    else:
        assert "capillary_async" not in err
    md5 = hashlib.md5(b"Log-S3cret-pw!").hexdigest()
    header = base64.b64encode(f"demo:{md5}".encode()).decode()
    for secret in ("Log-S3cret-pw!", md5, header):
        assert secret not in err


@pytest.mark.parametrize("kind", ["basic", "token"])
async def test_no_secret_reaches_a_records_structured_fields(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A server echoing the credentials in its request id and body: every field stays clean."""
    from capillary_async import Response

    from .test_hostile import auth_for, secret_forms

    def echo(request: Any) -> Any:
        header = request.headers.get("Authorization") or request.headers.get(
            "X-CAP-API-OAUTH-TOKEN"
        )
        body = json.dumps({"errors": [{"code": 500, "message": f"you sent {header}"}]})
        return Response(
            status=503, headers={"x-cap-request-id": str(header)}, content=body.encode()
        )

    caplog.set_level(logging.DEBUG, logger="capillary_async")
    retry = RetryPolicy(max_attempts=2, backoff_base=0.001, jitter=False)
    events: list[RetryEvent] = []
    async with client_with(
        echo, auth=auth_for(kind), retry=retry, on_retry=events.append
    ) as client:
        with pytest.raises(Exception, match="you sent"):
            await client.points.update_expiry([item(1)])
    seen = " ".join(repr(vars(record)) for record in caplog.records)
    seen += repr([vars(event) if hasattr(event, "__dict__") else repr(event) for event in events])
    seen += " ".join(str(event.error) + str(event.request_id) for event in events)
    for secret in secret_forms(kind):
        assert secret not in seen


async def test_a_query_written_into_the_path_is_kept_out_of_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="capillary_async")
    async with client_with(success_for) as client:
        body = {"expiryDateUpdateRequest": []}
        await client.request("POST", "/v2/points/updateExpiry?apikey=SECRETQUERY", json=body)
    assert "SECRETQUERY" not in caplog.text
    assert {getattr(r, "path", None) for r in caplog.records} == {"/v2/points/updateExpiry"}
