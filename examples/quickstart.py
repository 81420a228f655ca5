"""A real round trip of both points endpoints, with no credentials to set.

It starts a small stand-in for Capillary on 127.0.0.1 (it answers in the
documented shapes and checks Basic auth with the MD5 rule), then uses the SDK
exactly as against a real cluster:

    python examples/quickstart.py
    python examples/quickstart.py --base-url https://eu.api.capillarytech.com  # real cluster
        (with CAPILLARY_USERNAME and CAPILLARY_PASSWORD set)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
from datetime import date, datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from capillary_async import (
    BasicAuth,
    CapillaryClient,
    Entity,
    ExpiryDate,
    ExpiryUpdate,
    RedemptionUpdate,
    StandardMeta,
)

DEMO_USER, DEMO_PASSWORD = "demo", "demo"


def _authorised(request: web.Request) -> bool:
    digest = hashlib.md5(DEMO_PASSWORD.encode()).hexdigest()  # noqa: S324 - Capillary's rule
    expected = "Basic " + base64.b64encode(f"{DEMO_USER}:{digest}".encode()).decode()
    return request.headers.get("Authorization") == expected


async def _update_redemption(request: web.Request) -> web.Response:
    if not _authorised(request):
        return web.json_response({"errors": [{"code": 401, "message": "Unauthorized"}]}, status=401)
    body = await request.json()
    return web.json_response(
        {
            "id": 26503632,
            "programId": 973,
            "pointsRedeemed": 101.0,
            "billId": body.get("billId", -1),
            "billNumber": body.get("billNumber"),
            "validationCode": "NS3U05",
            "redemptionId": body.get("redemptionId"),
            "customFields": [
                {"name": k, "value": v} for k, v in (body.get("customFields") or {}).items()
            ],
            "customerId": 564332013,
            "redemptionPurpose": body.get("purpose"),
            "redemptionDate": "2025-06-26T15:28:28Z",
            "warnings": [],
        },
        headers={"X-CAP-REQUEST-ID": "local-1"},
    )


async def _update_expiry(request: web.Request) -> web.Response:
    if not _authorised(request):
        return web.json_response({"errors": [{"code": 401, "message": "Unauthorized"}]}, status=401)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    updates: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for n, item in enumerate((await request.json())["expiryDateUpdateRequest"]):
        expiry = item["expiryDate"]
        if expiry["expiryType"] == "FIXED_DATE" and expiry["expiryValue"] <= now.date().isoformat():
            failures.append(
                {
                    "pointsAwardedRefId": item["pointsAwardedRefId"],
                    "pointsAwardedRefType": item["pointsAwardedRefType"],
                    "errorCode": 3037,
                    "errorMessage": "Invalid expiry date: Expiry date must be in the future",
                }
            )
            continue
        new = datetime.fromisoformat(expiry["expiryValue"] + "T23:59:59+00:00")
        old = now + timedelta(days=30)
        updates.append(
            {
                "customerId": int(item["identifierValue"]),
                "programId": item["programId"],
                "currencyName": "POINTS",
                "pointsExpiryUpdateLogs": {
                    "paType": item["pointsAwardedRefType"],
                    "paId": item["pointsAwardedRefId"],
                    "oldExpiryDate": old.strftime("%Y-%m-%d %H:%M:%S"),
                    "oldExpiryDateISO": old.isoformat().replace("+00:00", "Z"),
                    "newExpiryDate": new.strftime("%Y-%m-%d %H:%M:%S"),
                    "newExpiryDateISO": new.isoformat().replace("+00:00", "Z"),
                    "eventLogId": 41420339 + n,
                    "eventDate": now.strftime("%Y-%m-%d %H:%M:%S"),
                    "eventDateISO": now.isoformat().replace("+00:00", "Z"),
                    "standardMeta": item.get("standardMeta", {}),
                },
            }
        )
    return web.json_response(
        {"currencyExpiryUpdateResponse": updates, "failures": failures},
        status=201 if failures else 200,
        headers={"X-CAP-REQUEST-ID": "local-2"},
    )


async def run(base_url: str | None) -> None:
    runner = None
    if base_url is None:
        app = web.Application()
        app.router.add_put("/v2/points/updateRedemption", _update_redemption)
        app.router.add_post("/v2/points/updateExpiry", _update_expiry)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        auth = BasicAuth(DEMO_USER, DEMO_PASSWORD)
        print(f"local stand-in server at {base_url} (user {DEMO_USER!r})")
    else:
        auth = BasicAuth(os.environ["CAPILLARY_USERNAME"], os.environ["CAPILLARY_PASSWORD"])
    try:
        async with CapillaryClient(base_url, auth=auth) as client:
            redemption = await client.points.update_redemption(
                RedemptionUpdate(
                    redemption_id="Fnpztw",
                    bill_number="txn-79",
                    purpose="Update redemption details",
                    entity=Entity(
                        type="CUSTOMER", identifier_type="mobile", identifier_value="919731013853"
                    ),
                    custom_fields={"card_number": "123456"},
                )
            )
            print(f"\nupdateRedemption (request id {redemption.request_id}):")
            print(
                f"  redemption {redemption.redemption_id}: bill {redemption.bill_number}, "
                f"purpose {redemption.redemption_purpose!r}, custom fields "
                f"{[(f.name, f.value) for f in redemption.custom_fields]}"
            )

            meta = StandardMeta(who_raised="ops", who_approved="Admin", reason_for_trigger="demo")
            items = [
                ExpiryUpdate(
                    identifier_name="id",
                    identifier_value="172440986",
                    program_id=469,
                    points_awarded_ref_id=117521910,
                    points_awarded_ref_type="POINT_AWARDED",
                    expiry_update_reason_type="EXTEND_EXPIRY",
                    standard_meta=meta,
                    expiry_date=ExpiryDate(
                        expiry_type="FIXED_DATE", expiry_value=date.today() + timedelta(days=365)
                    ),
                ),
                ExpiryUpdate(
                    identifier_name="id",
                    identifier_value="172440986",
                    program_id=469,
                    points_awarded_ref_id=117521911,
                    points_awarded_ref_type="POINT_AWARDED",
                    expiry_date=ExpiryDate(expiry_type="FIXED_DATE", expiry_value="2020-01-01"),
                ),
            ]
            result = await client.points.update_expiry(items)
            print(f"\nupdateExpiry (request id {result.request_id}):")
            for entry in result.updates:
                logs = entry.points_expiry_update_logs
                if logs is None:
                    continue
                print(
                    f"  updated {logs.pa_type} {logs.pa_id}: "
                    f"{logs.old_expiry_date_iso} -> {logs.new_expiry_date_iso}"
                )
            for failure in result.failures:
                print(
                    f"  refused {failure.points_awarded_ref_type} {failure.points_awarded_ref_id}: "
                    f"{failure.error_code} {failure.error_message}"
                )
    finally:
        if runner is not None:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="a real cluster instead of the local stand-in")
    asyncio.run(run(parser.parse_args().base_url))


if __name__ == "__main__":
    main()
