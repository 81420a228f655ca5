"""Client workloads, each run in a fresh process so its CPU time and peak RSS are its own.

``python -m benchmarks._workloads NAME key=value ...`` prints one JSON object.
The SDK workloads and the baselines get the same input: wire-format dicts,
generated lazily from the emulator's seed, as they would come out of a file.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import resource
import sys
import time
import timeit
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import aiohttp

from capillary_async import (
    BasicAuth,
    CapillaryClient,
    ExpiryUpdate,
    ExpiryUpdateResult,
    InputFile,
    RetryPolicy,
    from_wire,
    to_wire,
)
from capillary_async.testing import Store, seeded_awards

BASIC = "Basic " + base64.b64encode(b"demo:" + hashlib.md5(b"demo").hexdigest().encode()).decode()
FAR = "2099-12-31"
PATH = "/v2/points/updateExpiry"


def items(
    n: int, *, seed: int, customers: int, apc: int, refused: float = 0.0
) -> Iterator[dict[str, Any]]:
    """``n`` valid items for the emulator seeded so, cycling over its records, lazily.

    ``refused``: the share of items naming a record the emulator does not hold,
    which it refuses one by one (code 3034) while applying the rest.
    """
    every = round(1 / refused) if refused else 0
    produced = 0
    while True:
        now = datetime(2026, 1, 1, tzinfo=timezone.utc)  # expiry dates do not matter here
        awards = seeded_awards(
            random.Random(seed), now, customers=customers, awards_per_customer=apc
        )
        for customer_id, held_id, ref_type, _ in awards:
            if produced == n:
                return
            produced += 1
            # A share names no record the emulator holds: refused, per item.
            ref_id = 10**12 + produced if every and produced % every == 0 else held_id
            yield {
                "identifierName": "id",
                "identifierValue": str(customer_id),
                "programId": 469,
                "pointsAwardedRefId": ref_id,
                "pointsAwardedRefType": ref_type,
                "expiryDate": {"expiryType": "FIXED_DATE", "expiryValue": FAR},
            }


def _usage() -> tuple[float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def _measure(run: Any) -> dict[str, Any]:
    cpu_before, _ = _usage()
    started = time.perf_counter()
    extra = asyncio.run(run)
    seconds = time.perf_counter() - started
    cpu_after, maxrss = _usage()
    return {"seconds": seconds, "cpu_seconds": cpu_after - cpu_before, "maxrss_kb": maxrss, **extra}


# -- bulk --------------------------------------------------------------------------------


async def sdk_bulk(
    url: str, n: int, chunk: int, concurrency: int, data: dict[str, Any]
) -> dict[str, Any]:
    retry = RetryPolicy(max_attempts=8)
    async with CapillaryClient(
        url, auth=BasicAuth("demo", "demo"), retry=retry, max_connections=concurrency
    ) as client:
        report = await client.points.bulk_update_expiry(
            items(n, **data), chunk_size=chunk, concurrency=concurrency
        )
    return {
        "items": report.total,
        "succeeded": report.succeeded,
        "not_succeeded": report.total - report.succeeded,
        "requests": report.requests,
        "retried_requests": report.retried_requests,
        "peak_held": report.peak_held,
        "held_limit": report.held_limit,
        "failed": report.failed,
    }


async def sdk_file(
    url: str, n: int, chunk: int, concurrency: int, data: dict[str, Any]
) -> dict[str, Any]:
    """The library's bulk job over a JSONL file (``path``), as the command line reads it."""
    async with CapillaryClient(
        url, auth=BasicAuth("demo", "demo"), max_connections=concurrency
    ) as client:
        report = await client.points.bulk_update_expiry(
            InputFile(data["path"]), chunk_size=chunk, concurrency=concurrency
        )
    return {
        "items": report.total,
        "succeeded": report.succeeded,
        "items_per_second": report.items_per_second,
    }


async def sdk_stream(
    url: str, n: int, chunk: int, concurrency: int, data: dict[str, Any]
) -> dict[str, Any]:
    succeeded = 0
    async with CapillaryClient(
        url, auth=BasicAuth("demo", "demo"), max_connections=concurrency
    ) as client:
        async with client.points.stream_update_expiry(
            items(n, **data), chunk_size=chunk, concurrency=concurrency
        ) as outcomes:
            async for outcome in outcomes:
                succeeded += outcome.ok
        report = outcomes.report
    return {
        "items": report.total,
        "succeeded": succeeded,
        "peak_held": report.peak_held,
        "held_limit": report.held_limit,
    }


async def raw_bulk(
    url: str, n: int, chunk: int, concurrency: int, data: dict[str, Any]
) -> dict[str, Any]:
    """Baseline (a): what a competent user writes without the SDK."""
    semaphore = asyncio.Semaphore(concurrency)
    succeeded = 0
    headers = {"Authorization": BASIC, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(part: list[dict[str, Any]]) -> None:
            nonlocal succeeded
            async with semaphore:
                body = json.dumps({"expiryDateUpdateRequest": part})
                async with session.post(url + PATH, data=body, headers=headers) as response:
                    answer = json.loads(await response.read())
                    succeeded += len(answer.get("currencyExpiryUpdateResponse", []))

        source = items(n, **data)
        pending: set[asyncio.Task[None]] = set()
        while part := [item for _, item in zip(range(chunk), source, strict=False)]:
            if len(pending) >= concurrency * 2:  # bounded, like the SDK
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            pending.add(asyncio.create_task(send(part)))
        if pending:
            await asyncio.wait(pending)
    return {"items": n, "succeeded": succeeded}


async def naive_bulk(
    url: str, n: int, chunk: int, concurrency: int, data: dict[str, Any]
) -> dict[str, Any]:
    """Baseline (b): one chunk after another."""
    succeeded = 0
    headers = {"Authorization": BASIC, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        source = items(n, **data)
        while part := [item for _, item in zip(range(chunk), source, strict=False)]:
            body = json.dumps({"expiryDateUpdateRequest": part})
            async with session.post(url + PATH, data=body, headers=headers) as response:
                answer = json.loads(await response.read())
                succeeded += len(answer.get("currencyExpiryUpdateResponse", []))
    return {"items": n, "succeeded": succeeded}


# -- single calls ---------------------------------------------------------------------------


def _redemption(data: dict[str, Any]) -> dict[str, Any]:
    store = Store()
    store.seed(
        seed=data["seed"],
        now=datetime(2026, 1, 1, tzinfo=timezone.utc),
        customers=data["customers"],
        awards_per_customer=data["apc"],
        redemptions=1,
    )
    record = next(iter(store.redemptions.values()))
    return {
        "redemptionId": record.redemption_id,
        "billNumber": "bench",
        "entity": {
            "type": "CUSTOMER",
            "identifierType": "id",
            "identifierValue": str(record.customer_id),
        },
    }


async def sdk_single(
    url: str, n: int, chunk: int, concurrency: int, data: dict[str, Any]
) -> dict[str, Any]:
    body = _redemption(data)
    latencies = []
    async with CapillaryClient(url, auth=BasicAuth("demo", "demo")) as client:
        for _ in range(n):
            started = time.perf_counter()
            await client.points.update_redemption(body)
            latencies.append(time.perf_counter() - started)
    return {"items": n, "latencies_us": _percentiles(latencies)}


async def sdk_single_untraced(
    url: str, n: int, chunk: int, concurrency: int, data: dict[str, Any]
) -> dict[str, Any]:
    """``sdk_single`` with the tracing code path removed: what tracing costs when off."""
    from capillary_async import _otel

    _otel.trace = None  # type: ignore[assignment]
    return await sdk_single(url, n, chunk, concurrency, data)


async def raw_single(
    url: str, n: int, chunk: int, concurrency: int, data: dict[str, Any]
) -> dict[str, Any]:
    body = json.dumps(_redemption(data))
    headers = {"Authorization": BASIC, "Content-Type": "application/json"}
    latencies = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            started = time.perf_counter()
            async with session.put(
                url + "/v2/points/updateRedemption", data=body, headers=headers
            ) as response:
                json.loads(await response.read())
            latencies.append(time.perf_counter() - started)
    return {"items": n, "latencies_us": _percentiles(latencies)}


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6  # noqa: E731
    return {"p50": pick(0.50), "p99": pick(0.99)}


# -- models ---------------------------------------------------------------------------------


def models(repeat: int) -> dict[str, Any]:
    """to_wire of a 100-item request and from_wire of a 100-item answer, against hand code."""
    raw = list(items(100, seed=1, customers=25, apc=4))
    models_ = [from_wire(ExpiryUpdate, item) for item in raw]
    body = {
        "currencyExpiryUpdateResponse": [
            {
                "customerId": int(item["identifierValue"]),
                "programId": 469,
                "currencyName": "POINTS",
                "pointsExpiryUpdateLogs": {
                    "paType": item["pointsAwardedRefType"],
                    "paId": item["pointsAwardedRefId"],
                    "oldExpiryDate": "2026-08-09 23:59:59",
                    "oldExpiryDateISO": "2026-08-09T23:59:59Z",
                    "newExpiryDate": "2099-12-31 23:59:59",
                    "newExpiryDateISO": "2099-12-31T23:59:59Z",
                    "eventLogId": 41420339,
                    "eventDate": "2026-01-07 10:35:28",
                    "eventDateISO": "2026-01-07T10:35:28Z",
                },
            }
            for item in raw
        ]
    }

    def hand_to_wire() -> list[dict[str, Any]]:
        return [
            {
                "identifierName": m.identifier_name.value,
                "identifierValue": m.identifier_value,
                "programId": m.program_id,
                "pointsAwardedRefId": m.points_awarded_ref_id,
                "pointsAwardedRefType": m.points_awarded_ref_type.value,
                "expiryDate": {
                    "expiryType": m.expiry_date.expiry_type.value,
                    "expiryValue": m.expiry_date.expiry_value,
                },
            }
            for m in models_
        ]

    def hand_from_wire() -> list[tuple[Any, ...]]:
        return [
            (
                entry["pointsExpiryUpdateLogs"]["paId"],
                entry["pointsExpiryUpdateLogs"]["paType"],
                datetime.fromisoformat(
                    entry["pointsExpiryUpdateLogs"]["newExpiryDateISO"][:-1] + "+00:00"
                ),
            )
            for entry in body["currencyExpiryUpdateResponse"]
        ]

    assert to_wire(models_) == hand_to_wire()

    def best(call: Any) -> float:
        return min(timeit.repeat(call, number=repeat, repeat=5)) / repeat * 1e6

    return {
        "to_wire_us": {"sdk": best(lambda: to_wire(models_)), "hand": best(hand_to_wire)},
        "from_wire_us": {
            "sdk": best(lambda: from_wire(ExpiryUpdateResult, body)),
            "hand": best(hand_from_wire),
        },
        "validate_us": {"sdk": best(lambda: [from_wire(ExpiryUpdate, i) for i in raw])},
    }


WORKLOADS = {
    "sdk_bulk": sdk_bulk,
    "sdk_file": sdk_file,
    "sdk_stream": sdk_stream,
    "raw_bulk": raw_bulk,
    "naive_bulk": naive_bulk,
    "sdk_single": sdk_single,
    "sdk_single_untraced": sdk_single_untraced,
    "raw_single": raw_single,
}


def main(argv: list[str]) -> None:
    name, *pairs = argv
    options = dict(pair.split("=", 1) for pair in pairs)
    if name == "models":
        print(json.dumps(models(int(options.get("repeat", "200")))))
        return
    data: dict[str, Any] = {k: int(options[k]) for k in ("seed", "customers", "apc")}
    if "refused" in options:
        data["refused"] = float(options["refused"])
    if "path" in options:
        data = {"path": options["path"]}
    run = WORKLOADS[name](
        options["url"],
        int(options["n"]),
        int(options.get("chunk", "100")),
        int(options.get("concurrency", "1")),
        data,
    )
    print(json.dumps(_measure(run)))


if __name__ == "__main__":
    main(sys.argv[1:])
