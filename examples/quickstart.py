"""A real round trip of both points endpoints, with no credentials to set.

By default it starts the built-in Capillary emulator in-process on 127.0.0.1
(seeded records, Basic auth ``demo`` / ``demo``) and uses the SDK exactly as
against a real cluster:

    python examples/quickstart.py
    python examples/quickstart.py --base-url https://eu.api.capillarytech.com
        (a real cluster: set CAPILLARY_USERNAME and CAPILLARY_PASSWORD, and pass
        --redemption-id and --ref-id of records of yours)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import date, timedelta

from capillary_async import (
    BasicAuth,
    CapillaryClient,
    Entity,
    ExpiryDate,
    ExpiryUpdate,
    ItemFailure,
    PointsExpiryUpdateLog,
    RedemptionUpdate,
    StandardMeta,
)
from capillary_async.testing import Emulator


@contextlib.asynccontextmanager
async def target(args: argparse.Namespace) -> AsyncIterator[tuple[str, BasicAuth, Emulator | None]]:
    """The real cluster asked for, or a seeded emulator."""
    if args.base_url:
        auth = BasicAuth(os.environ["CAPILLARY_USERNAME"], os.environ["CAPILLARY_PASSWORD"])
        yield args.base_url, auth, None
        return
    async with Emulator(seed=7) as emulator:
        print(f"emulator at {emulator.base_url} (Basic auth demo / demo)")
        yield emulator.base_url, BasicAuth("demo", "demo"), emulator


async def run(args: argparse.Namespace) -> None:
    async with target(args) as (base_url, auth, emulator):
        if emulator is not None:  # pick records the emulator holds
            record = next(iter(emulator.store.redemptions.values()))
            customer = emulator.store.customers[record.customer_id]
            award = next(a for a in emulator.store.awards.values() if a.customer_id == customer.id)
            args.redemption_id, args.ref_id, args.ref_type = (
                record.redemption_id,
                award.ref_id,
                award.ref_type,
            )
            args.mobile, args.program_id = customer.mobile, award.program_id
        async with CapillaryClient(base_url, auth=auth) as client:
            redemption = await client.points.update_redemption(
                RedemptionUpdate(
                    redemption_id=args.redemption_id,
                    bill_number="txn-79",
                    purpose="Update redemption details",
                    entity=Entity(
                        type="CUSTOMER", identifier_type="mobile", identifier_value=args.mobile
                    ),
                )
            )
            print(f"\nupdateRedemption (request id {redemption.request_id}):")
            print(
                f"  redemption {redemption.redemption_id}: bill {redemption.bill_number}, "
                f"purpose {redemption.redemption_purpose!r}, "
                f"points redeemed {redemption.points_redeemed}"
            )

            def update(expiry: ExpiryDate) -> ExpiryUpdate:
                return ExpiryUpdate(
                    identifier_name="mobile",
                    identifier_value=args.mobile,
                    program_id=args.program_id,
                    points_awarded_ref_id=args.ref_id,
                    points_awarded_ref_type=args.ref_type,
                    expiry_update_reason_type="EXTEND_EXPIRY",
                    standard_meta=StandardMeta(who_raised="ops", who_approved="Admin"),
                    expiry_date=expiry,
                )

            result = await client.points.update_expiry(
                [
                    update(ExpiryDate(expiry_type="FIXED_DATE", expiry_value=date(2020, 1, 1))),
                    update(
                        ExpiryDate(
                            expiry_type="FIXED_DATE",
                            expiry_value=date.today() + timedelta(days=365),
                        )
                    ),
                ]
            )
            print(f"\nupdateExpiry (request id {result.request_id}):")
            for entry in result.updates:
                # Result models keep what they cannot read as the JSON it was.
                logs = getattr(entry, "points_expiry_update_logs", None)
                if isinstance(logs, PointsExpiryUpdateLog):
                    print(
                        f"  updated {logs.pa_type} {logs.pa_id}: "
                        f"{logs.old_expiry_date_iso} -> {logs.new_expiry_date_iso}"
                    )
            for failure in result.failures:
                if not isinstance(failure, ItemFailure):
                    continue  # an entry Capillary garbled stays the JSON it was
                print(
                    f"  refused {failure.points_awarded_ref_type} "
                    f"{failure.points_awarded_ref_id}: {failure.error_code} "
                    f"{failure.error_message}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description="Both points endpoints, end to end.")
    parser.add_argument("--base-url", help="a real cluster instead of the emulator")
    parser.add_argument("--redemption-id")
    parser.add_argument("--mobile", help="the redemption's customer's mobile number")
    parser.add_argument("--ref-id", type=int, help="a points-awarded ref id of that customer")
    parser.add_argument("--ref-type", default="POINT_AWARDED")
    parser.add_argument("--program-id", type=int, default=469)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
