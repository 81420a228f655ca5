"""The emulator's state: customers, points-awarded records, redemptions, and an audit.

Deliberately independent of the SDK's models: the emulator reads raw JSON its
own way, so a bug in the models is caught by it rather than mirrored.
"""

from __future__ import annotations

import collections
import random
import string
from collections.abc import Iterator
from datetime import datetime, timedelta, tzinfo

import attrs

__all__ = [
    "REF_TYPES",
    "Audit",
    "Award",
    "Customer",
    "RedemptionRecord",
    "Stats",
    "Store",
    "seeded_awards",
]

REF_TYPES = (
    "POINT_AWARDED",
    "POINT_AWARDED_BILL_PROMOTION",
    "POINT_AWARDED_LINEITEM",
    "POINT_AWARDED_LINEITEM_PROMOTION",
    "POINT_AWARDED_CUSTOMER_PROMOTION",
)
DEFAULT_PROGRAM_ID = 469


@attrs.define
class Customer:
    """A loyalty customer, findable by any of the four identifiers updateExpiry takes."""

    id: int
    mobile: str
    external_id: str
    email: str

    def identifiers(self) -> dict[str, str]:
        return {
            "id": str(self.id),
            "mobile": self.mobile,
            "externalId": self.external_id,
            "email": self.email,
        }


@attrs.define
class Award:
    """A points-awarded record with its current expiry (aware, in the cluster timezone)."""

    ref_id: int
    ref_type: str
    customer_id: int
    program_id: int
    expiry: datetime
    currency_name: str = "POINTS"

    @property
    def key(self) -> tuple[int, str]:
        return (self.ref_id, self.ref_type)


@attrs.define
class RedemptionRecord:
    """A points redemption whose metadata updateRedemption may change."""

    id: int
    redemption_id: str
    customer_id: int
    program_id: int = DEFAULT_PROGRAM_ID
    external_reference_number: str | None = None
    points_redeemed: float = 100.0
    bill_id: int = -1
    bill_number: str | None = None
    purpose: str | None = None
    notes: str = "Redeemed to transfer points to the friend"
    validation_code: str = "NS3U05"
    redemption_time_ms: int = 1749721256000
    till_id: int = 75155295
    till_name: str = ""
    custom_fields: dict[str, str] = attrs.field(factory=dict)


@attrs.define
class Audit:
    """What was applied, how often and by which request: proof that nothing was lost or doubled."""

    expiry_applied: collections.Counter[tuple[int, str]] = attrs.field(factory=collections.Counter)
    redemption_applied: collections.Counter[str] = attrs.field(factory=collections.Counter)
    by_request: dict[str, list[tuple[str, object]]] = attrs.field(factory=dict)

    def record(self, request_id: str, kind: str, key: object) -> None:
        self.by_request.setdefault(request_id, []).append((kind, key))

    def times_applied(self, ref_id: int, ref_type: str = "POINT_AWARDED") -> int:
        """How many times an expiry update was applied to this points-awarded record."""
        return self.expiry_applied[(ref_id, ref_type)]

    def redemption_times_applied(self, redemption_id: str) -> int:
        """How many times this redemption's metadata was updated."""
        return self.redemption_applied[redemption_id]

    def requests_for(self, ref_id: int, ref_type: str = "POINT_AWARDED") -> list[str]:
        """The request ids that changed this record, in order."""
        key = (ref_id, ref_type)
        return [rid for rid, entries in self.by_request.items() if ("expiry", key) in entries]


@attrs.define
class Stats:
    """Counters of the traffic the emulator has seen."""

    requests: int = 0
    items: int = 0
    concurrent: int = 0
    peak_concurrent: int = 0
    #: Requests whose client went away before the answer (a timeout, a cancelled job).
    gone: int = 0
    by_path: collections.Counter[str] = attrs.field(factory=collections.Counter)
    by_status: collections.Counter[int] = attrs.field(factory=collections.Counter)
    faults: collections.Counter[str] = attrs.field(factory=collections.Counter)


class Store:
    """Records and their indices; add records by hand or with ``seed()``."""

    def __init__(self) -> None:
        self.customers: dict[int, Customer] = {}
        self.awards: dict[tuple[int, str], Award] = {}
        self.redemptions: dict[str, RedemptionRecord] = {}
        self._by_identifier: dict[tuple[str, str], Customer] = {}
        self._by_external_ref: dict[str, RedemptionRecord] = {}
        self.audit = Audit()

    # -- adding -----------------------------------------------------------------

    def add_customer(
        self,
        id: int,
        *,
        mobile: str | None = None,
        external_id: str | None = None,
        email: str | None = None,
    ) -> Customer:
        customer = Customer(
            id=id,
            mobile=mobile or f"91{id:010d}",
            external_id=external_id or f"ext-{id}",
            email=email or f"customer{id}@example.com",
        )
        self.customers[id] = customer
        for name, value in customer.identifiers().items():
            self._by_identifier[(name, value)] = customer
        return customer

    def add_award(
        self,
        ref_id: int,
        *,
        customer_id: int,
        expiry: datetime,
        ref_type: str = "POINT_AWARDED",
        program_id: int = DEFAULT_PROGRAM_ID,
        currency_name: str = "POINTS",
    ) -> Award:
        if customer_id not in self.customers:
            raise ValueError(f"customer_id: no customer {customer_id}; add it first")
        if expiry.tzinfo is None:
            raise ValueError("expiry: must be timezone-aware")
        award = Award(ref_id, ref_type, customer_id, program_id, expiry, currency_name)
        self.awards[award.key] = award
        return award

    def add_redemption(
        self,
        redemption_id: str,
        *,
        customer_id: int,
        external_reference_number: str | None = None,
        custom_fields: dict[str, str] | None = None,
        **fields: object,
    ) -> RedemptionRecord:
        if customer_id not in self.customers:
            raise ValueError(f"customer_id: no customer {customer_id}; add it first")
        record = RedemptionRecord(
            id=26445488 + len(self.redemptions),
            redemption_id=redemption_id,
            customer_id=customer_id,
            external_reference_number=external_reference_number,
            custom_fields=dict(custom_fields or {}),
            **fields,  # type: ignore[arg-type]
        )
        self.redemptions[redemption_id] = record
        if external_reference_number:
            self._by_external_ref[external_reference_number] = record
        return record

    # -- finding ------------------------------------------------------------------

    def find_customer(self, identifier_name: str, value: str) -> Customer | None:
        return self._by_identifier.get((identifier_name, value))

    def find_redemption(
        self, redemption_id: str | None, external_reference_number: str | None
    ) -> RedemptionRecord | None:
        if redemption_id is not None:
            return self.redemptions.get(redemption_id)
        if external_reference_number is not None:
            return self._by_external_ref.get(external_reference_number)
        return None

    # -- seeding ----------------------------------------------------------------

    def seed(
        self,
        *,
        seed: int,
        now: datetime,
        customers: int = 100,
        awards_per_customer: int = 5,
        redemptions: int = 20,
        program_id: int = DEFAULT_PROGRAM_ID,
    ) -> None:
        """Add a deterministic data set: the same ``seed`` and ``now`` give the same records."""
        rng = random.Random(seed)
        known = set(self.customers)
        for customer_id, ref_id, ref_type, expiry in seeded_awards(
            rng,
            now,
            customers=customers,
            awards_per_customer=awards_per_customer,
            first_customer=100_000 + len(self.customers),
            first_ref=117_000_000 + len(self.awards),
        ):
            if customer_id not in known:
                self.add_customer(customer_id)
                known.add(customer_id)
            self.add_award(
                ref_id,
                customer_id=customer_id,
                expiry=expiry,
                ref_type=ref_type,
                program_id=program_id,
            )
        customer_ids = sorted(self.customers)
        alphabet = string.ascii_letters + string.digits
        for n in range(redemptions):
            redemption_id = "".join(rng.choice(alphabet) for _ in range(6))
            while redemption_id in self.redemptions:
                redemption_id = "".join(rng.choice(alphabet) for _ in range(6))
            self.add_redemption(
                redemption_id,
                customer_id=rng.choice(customer_ids),
                external_reference_number=f"ext-ref-{seed}-{n}",
                custom_fields={"card_number": str(rng.randint(100000, 999999))}
                if n % 2 == 0
                else {},
                bill_number=f"txn-{n}",
                purpose="Points redemption",
                points_redeemed=float(rng.randint(1, 500)),
                program_id=program_id,
            )


def seeded_awards(
    rng: random.Random,
    now: datetime,
    *,
    customers: int,
    awards_per_customer: int,
    first_customer: int = 100_000,
    first_ref: int = 117_000_000,
) -> Iterator[tuple[int, int, str, datetime]]:
    """(customer id, ref id, ref type, expiry) of a seeded data set, lazily.

    ``Store.seed`` builds its records from this; a client in another process
    replays it to make input that matches, without holding the records.
    """
    ref_id = first_ref
    for n in range(customers):
        customer_id = first_customer + n
        for _ in range(awards_per_customer):
            days = rng.randint(30, 400)
            expiry = (now + timedelta(days=days)).replace(
                hour=23, minute=59, second=59, microsecond=0
            )
            yield customer_id, ref_id, rng.choice(REF_TYPES), expiry
            ref_id += 1


def end_of_day(day: datetime, tz: tzinfo) -> datetime:
    """23:59:59 of ``day``'s date in ``tz``: how Capillary stores expiry dates."""
    local = day.astimezone(tz)
    return local.replace(hour=23, minute=59, second=59, microsecond=0)
