"""The examples run as users run them: keep them working."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from capillary_async.testing import Emulator, sample_expiry_updates, write_jsonl

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_quickstart_makes_a_real_round_trip_of_both_endpoints() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "emulator at http://127.0.0.1:" in out
    assert re.search(r"updateRedemption \(request id emu-\d+\)", out)
    assert re.search(r"redemption \w{6}: bill txn-79, purpose 'Update redemption details'", out)
    assert re.search(r"updateExpiry \(request id emu-\d+\)", out)
    assert re.search(r"updated POINT_AWARDED\w* 1170\d+: .+ -> .+", out)
    assert re.search(r"refused POINT_AWARDED\w* 1170\d+: 3037 ", out)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_the_worker_stops_on_a_signal_and_accounts_for_every_item_it_took(
    tmp_path: Path, signum: signal.Signals
) -> None:
    async with Emulator(seed=11, customers=300, awards_per_customer=2) as emu:
        rows = sample_expiry_updates(emu.store, 400, now=emu.clock.now())
        source = tmp_path / "rows.jsonl"
        write_jsonl(source, rows)
        env = {**os.environ, "CAPILLARY_USERNAME": "demo", "CAPILLARY_PASSWORD": "demo"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLES / "worker.py"), "--base-url", emu.base_url,
            "--input", str(source), "--every", "0.002", "--report-every", "20",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        assert process.stdout is not None
        while not (await asyncio.wait_for(process.stdout.readline(), 30)).startswith(b"progress"):
            pass  # it has taken items and sent some: stop it mid-stream
        process.send_signal(signum)
        rest, err = await asyncio.wait_for(process.communicate(), 30)
        applied = sum(emu.audit.expiry_applied.values())
    assert process.returncode == 0, err.decode()
    final = rest.decode().strip().splitlines()[-1]
    found = re.search(
        r"worker stopped \((SIG\w+)\): taken (\d+), outcomes (\d+): succeeded (\d+), "
        r"failed (\d+), invalid (\d+), unknown (\d+), not_attempted (\d+); "
        r"requeued (\d+), (\d+) on the queue",
        final,
    )
    assert found, final
    name, taken, outcomes, succeeded, failed, invalid, unknown, not_attempted, requeued, left = (
        found.group(1),
        *map(int, found.groups()[1:]),
    )
    assert name == signum.name
    assert 0 < taken == outcomes == succeeded + failed + invalid + unknown + not_attempted
    assert unknown == 0  # requests in flight finished
    assert requeued == not_attempted
    assert succeeded == applied  # what it says it applied, the server applied
    produced = taken - requeued + left  # the rest is on the queue, for the next worker
    assert produced <= 400
