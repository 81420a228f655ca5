"""The examples run as users run them: keep them working."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from capillary_async.testing import Emulator, Faults, sample_expiry_updates, write_csv, write_jsonl

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


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_web_app_shares_one_client_and_answers_from_capillary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    webapp = _load("webapp")
    async with Emulator() as emu:
        monkeypatch.setenv("CAPILLARY_BASE_URL", emu.base_url)
        monkeypatch.setenv("CAPILLARY_USERNAME", "demo")
        monkeypatch.setenv("CAPILLARY_PASSWORD", "demo")
        app = webapp.make_app()
        async with TestClient(TestServer(app)) as http:
            ready = await http.get("/ready")
            assert ready.status == 200
            assert await ready.json() == {"ready": True}
            client = app[webapp.CLIENT]

            redeemed = await http.put(
                "/redemptions/Hcmxfn",
                json={"mobile": "910000100067", "bill_number": "txn-80"},
                headers={"X-Store": "store-7"},
            )
            assert redeemed.status == 200, await redeemed.text()
            body = await redeemed.json()
            assert body["redemption_id"] == "Hcmxfn"
            assert body["bill_number"] == "txn-80"
            assert body["request_id"].startswith("emu-")
            assert emu.store.redemptions["Hcmxfn"].bill_number == "txn-80"

            award = emu.store.awards[(117000000, "POINT_AWARDED_LINEITEM_PROMOTION")]
            item = {
                "identifierName": "id", "identifierValue": "100000", "programId": 469,
                "pointsAwardedRefId": 117000000,
                "pointsAwardedRefType": "POINT_AWARDED_LINEITEM_PROMOTION",
                "expiryDate": {"expiryType": "FIXED_DATE", "expiryValue": "2030-01-31"},
            }  # fmt: skip
            stranger = {**item, "pointsAwardedRefId": 999, "identifierValue": "100001"}
            extended = await http.post("/expiry", json={"items": [item, stranger]})
            assert extended.status == 200, await extended.text()
            result = await extended.json()
            assert result["updated"] == [117000000]
            assert [r["ref_id"] for r in result["refused"]] == [999]
            assert award.expiry.date().isoformat() == "2030-01-31"

            bad = await http.put("/redemptions/Hcmxfn", json={"mobile": "910000100067"})
            assert bad.status == 422  # nothing to update: refused before sending
            assert "bill_id" in (await bad.json())["reason"]
            unknown = await http.put(
                "/redemptions/NOSUCH", json={"mobile": "910000100067", "bill_number": "x"}
            )
            assert unknown.status == 502
            assert (await unknown.json())["codes"]
            for bad_body in (b"{not json", b"[1]", b"null", b"\xff\xfe", b'{"items": 3}'):
                garbled = await http.post("/expiry", data=bad_body)
                assert garbled.status == 400, bad_body

            emu.faults = Faults(rate_500=1.0)  # every answer lost to a 500
            sent = emu.stats.by_path["/v2/points/updateExpiry"]
            days = {**item, "expiryDate": {"expiryType": "FIXED_DAYS", "expiryValue": 30}}
            unsure = await http.post("/expiry", json={"items": [days]})
            assert unsure.status == 409  # may have been applied: not a 5xx to retry
            assert "check before resending" in (await unsure.json())["error"]
            assert emu.stats.by_path["/v2/points/updateExpiry"] == sent + 1  # not repeated
            assert app[webapp.CLIENT] is client  # one client for every request
        assert client.closed  # cleanup_ctx closed it at shutdown


async def test_the_bulk_job_is_interrupted_and_resumed_and_applies_every_row_once(
    tmp_path: Path,
) -> None:
    async with Emulator(seed=3, customers=200, awards_per_customer=3, latency=0.05) as emu:
        rows = sample_expiry_updates(emu.store, 400, seed=5, bad=0.02, now=emu.clock.now())
        source = tmp_path / "extend.csv"
        write_csv(source, rows)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CAPILLARY_")},
            "CAPILLARY_BASE_URL": emu.base_url,
            "CAPILLARY_USERNAME": "demo",
            "CAPILLARY_PASSWORD": "demo",
        }
        command = [
            sys.executable, str(EXAMPLES / "bulk_job.py"), str(source),
            "--concurrency", "2", "--chunk-size", "10",
            "--journal", str(tmp_path / "extend.db"), "--failures", str(tmp_path / "f.csv"),
        ]  # fmt: skip
        first = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert first.stdout is not None
        done = 0
        while done < 100:  # a quarter of the rows are done: interrupt it as Ctrl-C would
            line = (await asyncio.wait_for(first.stdout.readline(), 30)).decode()
            assert line, "the job ended before it could be interrupted"
            if line.startswith("progress"):
                done = int(line.split()[1])
        first.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(first.communicate(), 30)
        assert first.returncode == 130, err.decode()
        assert b"run the same command again to resume" in out
        interrupted = json.loads(out.decode().splitlines()[-2])
        assert 0 < interrupted["succeeded"] < interrupted["total"] <= 400
        assert interrupted["input_complete"] is False  # the rest of the file was left unread
        assert interrupted["unknown"] == 0  # requests in flight finished

        second = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 1, err.decode()  # the planted bad rows did not succeed
        final = json.loads(out.decode().splitlines()[-1])
        assert final["total"] == 400
        assert final["not_attempted"] == final["unknown"] == 0
        assert final["resumed"] >= interrupted["succeeded"]
        assert final["succeeded"] + final["failed"] + final["invalid"] == 400
        applied = emu.audit.expiry_applied
        assert sum(applied.values()) == final["succeeded"]  # every success, once
        assert set(applied.values()) == {1}

        wrong = {**env, "CAPILLARY_PASSWORD": "not-the-password"}
        fresh = [*command[:-4], "--journal", str(tmp_path / "other.db"), *command[-2:]]
        refused = await asyncio.create_subprocess_exec(
            *fresh, env=wrong, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(refused.communicate(), 60)
        assert refused.returncode == 2, err.decode()
        assert err.decode().startswith("error: ")
        assert "not-the-password" not in out.decode() + err.decode()
        assert sum(emu.audit.expiry_applied.values()) == final["succeeded"]  # nothing sent
