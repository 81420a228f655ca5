"""The emulator's HTTP side: auth, the two points endpoints, OAuth, latency and faults.

It reads raw JSON with its own rules (never the SDK's models), answers in the
shapes of Capillary's documentation, and can be made slow, rate-limited or
faulty on purpose, reproducibly from a seed.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import contextlib
import hashlib
import itertools
import json
import math
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, Literal, Protocol

import attrs
from aiohttp import web

from ._store import REF_TYPES, Award, Customer, Stats, Store, end_of_day

__all__ = [
    "Emulator",
    "EmulatorClock",
    "Faults",
    "ManualTime",
    "SystemTime",
    "parse_timezone",
]

Envelope = Literal["currencyExpiryUpdateResponse", "updateCurrencyExpiryDateResponse", "entity"]
ENVELOPES: tuple[Envelope, ...] = (
    "currencyExpiryUpdateResponse",
    "updateCurrencyExpiryDateResponse",
    "entity",
)
TOKEN_PATH = "/v3/oauth/token/generate"
EXPIRY_PATH = "/v2/points/updateExpiry"
REDEMPTION_PATH = "/v2/points/updateRedemption"
STATS_PATH = "/_emulator/stats"

IDENTIFIER_NAMES = frozenset({"mobile", "id", "externalId", "email"})
EXPIRY_TYPES = ("FIXED_DATE", "FIXED_DAYS", "FIXED_MONTHS", "IMMEDIATE")
REASON_TYPES = ("EARLY_EXPIRY", "EXTEND_EXPIRY")
CATEGORY_TYPES = ("REGULAR", "PROMISED")
ENTITY_TYPES = frozenset({"CUSTOMER", "USERGROUP2", "FLEET"})
STANDARD_META_KEYS = frozenset({"who_raised", "who_approved", "reason_for_trigger"})
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DIGITS = re.compile(r"[0-9]+")


# -- time -------------------------------------------------------------------------


class EmulatorClock(Protocol):
    """The emulator's idea of now: expiry arithmetic and token lifetimes use it."""

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...


class SystemTime:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class ManualTime:
    """A clock that moves only when told: expire tokens or cross midnight in a test."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 7, 10, 35, 28, tzinfo=timezone.utc)
        if start.tzinfo is None:
            raise ValueError("start: must be timezone-aware")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self._now += timedelta(seconds=seconds)


def parse_timezone(value: str | tzinfo) -> tzinfo:
    """``"UTC"``, ``"Z"`` or an offset such as ``"+05:30"``, or a ``tzinfo`` as is."""
    if isinstance(value, tzinfo):
        return value
    text = value.strip()
    if text.upper() in ("UTC", "Z", "+00:00"):
        return timezone.utc
    match = re.fullmatch(r"([+-])([0-9]{2}):?([0-9]{2})", text)
    if not match:
        raise ValueError(f"timezone: expected UTC or an offset such as +05:30, got {value!r}")
    sign = -1 if match.group(1) == "-" else 1
    return timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))


def _iso(moment: datetime) -> str:
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _legacy(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


# -- faults -----------------------------------------------------------------------

FaultKind = Literal[
    "429", "429_no_retry_after", "500", "503", "521", "drop_before", "drop_after", "slow"
]


@attrs.frozen(kw_only=True)
class Faults:
    """Per-request fault rates (0 to 1) for the points endpoints, drawn from a seeded RNG.

    ``drop_before`` closes the connection without processing; ``drop_after``
    applies the request, then closes the connection (the ambiguous case);
    ``slow`` applies it and answers only after ``slow_seconds`` (longer than a
    client's timeout). ``retry_after`` is the ``Retry-After`` of the 429s that
    carry one.
    """

    rate_429: float = 0.0
    rate_429_no_retry_after: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_521: float = 0.0
    drop_before: float = 0.0
    drop_after: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 30.0
    retry_after: float = 1.0

    def __attrs_post_init__(self) -> None:
        total = sum(rate for _, rate in self._table())
        if any(rate < 0 for _, rate in self._table()) or total > 1.0 + 1e-9:
            raise ValueError("faults: rates must be >= 0 and add up to at most 1")

    def _table(self) -> list[tuple[FaultKind, float]]:
        return [
            ("429", self.rate_429),
            ("429_no_retry_after", self.rate_429_no_retry_after),
            ("500", self.rate_500),
            ("503", self.rate_503),
            ("521", self.rate_521),
            ("drop_before", self.drop_before),
            ("drop_after", self.drop_after),
            ("slow", self.slow),
        ]

    def draw(self, rng: random.Random) -> FaultKind | None:
        """The fault for the next request, or None."""
        roll = rng.random()
        for kind, rate in self._table():
            if roll < rate:
                return kind
            roll -= rate
        return None


NO_FAULTS = Faults()


class _Bucket:
    """Requests-per-second limit as a token bucket, on real time."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 if a request may pass, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


# -- responses ----------------------------------------------------------------------


class _Refusal(Exception):  # noqa: N818 - internal control flow, not an error
    """A request refused as a whole: answered with a v2 ``errors`` envelope."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _errors(code: int, message: str) -> dict[str, Any]:
    return {"errors": [{"status": False, "code": code, "message": message}]}


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < 2**63 else None  # a Java long, as Capillary stores ids
    if isinstance(value, str) and len(value) <= 19 and _DIGITS.fullmatch(value):
        number = int(value)
        return number if 0 < number < 2**63 else None
    return None


class _ItemFailure(Exception):  # noqa: N818 - internal control flow
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- the emulator ----------------------------------------------------------------------


class Emulator:
    """A stateful local stand-in for Capillary's points APIs, on a real HTTP port.

    ``async with Emulator() as emu:`` serves on an ephemeral port of
    127.0.0.1; ``emu.base_url`` is where, ``emu.store`` holds the records,
    ``emu.audit`` what was applied and ``emu.stats`` the traffic. Settings
    (``faults``, ``latency``, ``envelope``, ``partial_status``, ``max_items``,
    ``rate_limit``, ``token_ttl``) may be changed while it runs.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = 0,
        customers: int = 100,
        awards_per_customer: int = 5,
        redemptions: int = 20,
        timezone: str | tzinfo = "UTC",
        clock: EmulatorClock | None = None,
        latency: float | tuple[float, float] = 0.0,
        faults: Faults = NO_FAULTS,
        rate_limit: float | None = None,
        envelope: Envelope = "currencyExpiryUpdateResponse",
        partial_status: int = 201,
        max_items: int = 100,
        token_ttl: int = 300,
        username: str = "demo",
        password: str = "demo",
        client_key: str = "demo",
        client_secret: str = "demo",
    ) -> None:
        self.host = host
        self.port = port
        self.tz = parse_timezone(timezone)
        self.clock: EmulatorClock = clock if clock is not None else SystemTime()
        self.latency = latency
        self.faults = faults
        self.rate_limit = rate_limit
        self.envelope: Envelope = envelope
        self.partial_status = partial_status
        self.max_items = max_items
        self.token_ttl = token_ttl
        self.username = username
        self.client_key = client_key
        self._password_md5 = hashlib.md5(password.encode()).hexdigest()  # noqa: S324
        self._client_secret = client_secret
        self.store = Store()
        self.stats = Stats()
        self._rng = random.Random(0 if seed is None else seed)
        self._fault_rng = random.Random((0 if seed is None else seed) + 0x5EED)
        self._tokens: dict[str, datetime] = {}
        self._request_ids = itertools.count(1)
        self._event_log_ids = itertools.count(41420339)
        self._bucket: _Bucket | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        if seed is not None:
            self.store.seed(
                seed=seed,
                now=self.clock.now().astimezone(self.tz),
                customers=customers,
                awards_per_customer=awards_per_customer,
                redemptions=redemptions,
            )

    # -- lifecycle ------------------------------------------------------------------

    @property
    def audit(self) -> Any:
        """What was applied, how often and by which request (``Audit``)."""
        return self.store.audit

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` once started."""
        if self._runner is None:
            raise RuntimeError("the emulator is not running: use 'async with Emulator()'")
        return f"http://{self.host}:{self.port}"

    @property
    def credentials(self) -> dict[str, str]:
        """The accepted Basic username and OAuth key (the passwords are the ones you set)."""
        return {"username": self.username, "client_key": self.client_key}

    def make_app(self) -> web.Application:
        """The aiohttp application, to embed in a server of your own."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(TOKEN_PATH, self._token)
        app.router.add_post(EXPIRY_PATH, self._endpoint(self._update_expiry))
        app.router.add_put(REDEMPTION_PATH, self._endpoint(self._update_redemption))
        app.router.add_get(STATS_PATH, self._stats)
        return app

    async def _stats(self, request: web.Request) -> web.Response:
        """Counters and the audit's totals, for a client in another process (benchmarks)."""
        audit = self.store.audit
        payload = {
            "requests": self.stats.requests,
            "items": self.stats.items,
            "peak_concurrent": self.stats.peak_concurrent,
            "faults": dict(self.stats.faults),
            "statuses": {str(k): v for k, v in self.stats.by_status.items()},
            "expiry_applications": sum(audit.expiry_applied.values()),
            "records_changed": len(audit.expiry_applied),
            "redemption_applications": sum(audit.redemption_applied.values()),
        }
        return web.json_response(payload)

    async def start(self) -> Emulator:
        """Start serving; returns self."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        self._stopping = asyncio.Event()
        runner = web.AppRunner(
            self.make_app(), access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        """Stop serving; slow responses still pending are cut short."""
        runner, self._runner = self._runner, None
        self._stopping.set()
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        where = f"http://{self.host}:{self.port}" if self._runner else "stopped"
        return f"<Emulator {where} customers={len(self.store.customers)}>"

    # -- plumbing ---------------------------------------------------------------------

    def _respond(self, status: int, payload: Any, request_id: str) -> web.Response:
        self.stats.by_status[status] += 1
        return web.Response(
            status=status,
            body=b"" if payload is None else _dumps(payload),
            content_type="application/json",
            headers={"X-CAP-REQUEST-ID": request_id},
        )

    def _next_request_id(self) -> str:
        return f"emu-{next(self._request_ids):08d}"

    async def _delay(self) -> None:
        latency = self.latency
        seconds = self._rng.uniform(*latency) if isinstance(latency, tuple) else latency
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _authenticate(self, request: web.Request) -> tuple[int, str] | None:
        """None when the caller may proceed, else (status, message)."""
        header = request.headers.get("Authorization", "")
        token = request.headers.get("X-CAP-API-OAUTH-TOKEN")
        if token is None and header.startswith("Bearer "):
            token = header[len("Bearer ") :]
        if token is not None:
            expires = self._tokens.get(token)
            if expires is None:
                return 401, "Invalid token"
            if self.clock.now() >= expires:
                return 498, f"Token expired at {_iso(expires)}"
            return None
        if header.startswith("Basic "):
            try:
                user, _, digest = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return 401, "Malformed Basic credentials"
            if user == self.username and digest.lower() == self._password_md5:
                return None
            return 401, "Invalid username or password"
        return 401, "Authentication required"

    def _endpoint(
        self, handler: Callable[[Any, str], tuple[int, Any]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            request_id = self._next_request_id()
            self.stats.requests += 1
            self.stats.by_path[request.path] += 1
            self.stats.concurrent += 1
            self.stats.peak_concurrent = max(self.stats.peak_concurrent, self.stats.concurrent)
            try:
                return await self._serve(request, request_id, handler)
            finally:
                self.stats.concurrent -= 1

        return endpoint

    async def _serve(
        self,
        request: web.Request,
        request_id: str,
        handler: Callable[[Any, str], tuple[int, Any]],
    ) -> web.StreamResponse:
        await self._delay()
        refused = self._authenticate(request)
        if refused is not None:
            status, message = refused
            return self._respond(status, _errors(status, message), request_id)
        if self.rate_limit:
            if self._bucket is None or self._bucket.rate != self.rate_limit:
                self._bucket = _Bucket(self.rate_limit)
            wait = self._bucket.take()
            if wait > 0:
                self.stats.faults["rate_limited"] += 1
                response = self._respond(429, _errors(429, "Too many requests"), request_id)
                response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
                return response
        fault = self.faults.draw(self._fault_rng)
        if fault is not None:
            self.stats.faults[fault] += 1
        early = self._early_fault(fault, request, request_id)
        if early is not None:
            return early
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return self._respond(400, _errors(400, "Request body is not valid JSON"), request_id)
        try:
            status, payload = handler(body, request_id)
        except _Refusal as refusal:
            status, payload = refusal.status, _errors(refusal.code, refusal.message)
        if fault == "drop_after":
            return self._drop(request)
        if fault == "slow":
            await self._wait_or_stop(self.faults.slow_seconds)
        return self._respond(status, payload, request_id)

    def _early_fault(
        self, fault: FaultKind | None, request: web.Request, request_id: str
    ) -> web.StreamResponse | None:
        if fault == "429":
            response = self._respond(429, _errors(429, "Too many requests"), request_id)
            response.headers["Retry-After"] = f"{self.faults.retry_after:g}"
            return response
        if fault == "429_no_retry_after":
            return self._respond(429, _errors(429, "Too many requests"), request_id)
        if fault == "500":
            return self._respond(500, _errors(500, "Internal server error"), request_id)
        if fault == "503":
            return self._respond(503, _errors(4001, "Service unavailable, retry later"), request_id)
        if fault == "521":
            message = "Multiple actions are running for the same customer, try after some time"
            return self._respond(521, _errors(521, message), request_id)
        if fault == "drop_before":
            return self._drop(request)
        return None

    def _drop(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()
        self.stats.by_status[0] += 1
        return web.Response(status=500)

    async def _wait_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- OAuth --------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        request_id = self._next_request_id()
        self.stats.requests += 1
        self.stats.by_path[request.path] += 1
        await self._delay()
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if (
            not isinstance(body, Mapping)
            or body.get("key") != self.client_key
            or body.get("secret") != self._client_secret
        ):
            payload = {"data": None, **_errors(320001, "Invalid client key and secret")}
            payload["errors"][0].pop("status")
            return self._respond(401, payload, request_id)
        token = secrets.token_urlsafe(24)
        self._tokens[token] = self.clock.now() + timedelta(seconds=self.token_ttl)
        data = {"accessToken": token, "ttlSeconds": self.token_ttl}
        return self._respond(200, {"data": data, "errors": None}, request_id)

    def expire_tokens(self) -> None:
        """Make every issued token expired (answered with 498 from now on)."""
        past = self.clock.now() - timedelta(seconds=1)
        for token in self._tokens:
            self._tokens[token] = past

    # -- updateExpiry ---------------------------------------------------------------------

    def _update_expiry(self, body: Any, request_id: str) -> tuple[int, Any]:
        items = body.get("expiryDateUpdateRequest") if isinstance(body, Mapping) else None
        if not isinstance(items, list) or not items:
            raise _Refusal(8931, "Points expiry update request is invalid or empty")
        if len(items) > self.max_items:
            raise _Refusal(
                8931,
                f"Too many items in expiryDateUpdateRequest: {len(items)}, "
                f"at most {self.max_items} per request",
            )
        for item in items:
            _check_enums(item)
        self.stats.items += len(items)
        now = self.clock.now().astimezone(self.tz)
        updates: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for item in items:
            try:
                updates.append(self._apply_expiry(item, now, request_id))
            except _ItemFailure as failure:
                source = item if isinstance(item, Mapping) else {}
                failures.append(
                    {
                        "pointsAwardedRefId": source.get("pointsAwardedRefId"),
                        "pointsAwardedRefType": source.get("pointsAwardedRefType"),
                        "errorCode": failure.code,
                        "errorMessage": failure.message,
                    }
                )
        status = self.partial_status if failures else 200
        return status, self._expiry_envelope(updates, failures)

    def _expiry_envelope(
        self, updates: list[dict[str, Any]], failures: list[dict[str, Any]]
    ) -> dict[str, Any]:
        if self.envelope == "entity":
            return {
                "entity": {"updateCurrencyExpiryDateResponse": updates, "failures": failures},
                "errors": [],
                "warnings": [],
            }
        payload: dict[str, Any] = {self.envelope: updates}
        if failures:
            payload["failures"] = failures
        return payload

    def _find(self, item: Mapping[str, Any]) -> tuple[Customer, Award]:
        """Validate an item's fields and find its customer and record (or fail it)."""
        name = item.get("identifierName")
        if name not in IDENTIFIER_NAMES:
            raise _ItemFailure(8932, "Identifier name is required for the points expiry update")
        value = item.get("identifierValue")
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise _ItemFailure(8933, "Identifier value is required for the points expiry update")
        program_id = _positive_int(item.get("programId"))
        if program_id is None:
            raise _ItemFailure(8934, "Program ID is required for points expiry update")
        meta = item.get("standardMeta")
        if meta is not None and (
            not isinstance(meta, Mapping)
            or not set(meta) <= STANDARD_META_KEYS
            or not all(isinstance(v, str) for v in meta.values())
        ):
            raise _ItemFailure(8935, "Invalid standard meta key")
        ref_id = _positive_int(item.get("pointsAwardedRefId"))
        if ref_id is None:
            raise _ItemFailure(8937, "Points awarded reference ID is required")
        ref_type = item.get("pointsAwardedRefType")
        if ref_type is None:
            raise _ItemFailure(8938, "Points awarded reference type is required")
        customer = self.store.find_customer(name, value)
        if customer is None:
            raise _ItemFailure(8015, "Customer not found for the given identifiers")
        award = self.store.awards.get((ref_id, ref_type))
        if award is None or award.customer_id != customer.id or award.program_id != program_id:
            raise _ItemFailure(
                3034, f"No points awarded found for reference type {ref_type} and ID {ref_id}"
            )
        return customer, award

    def _new_expiry(self, item: Mapping[str, Any], now: datetime) -> datetime:
        expiry = item.get("expiryDate")
        if not isinstance(expiry, Mapping) or expiry.get("expiryType") is None:
            raise _ItemFailure(8942, "Points expiry date is mandatory")
        kind, value = expiry["expiryType"], expiry.get("expiryValue")
        if kind == "IMMEDIATE":
            return now.replace(microsecond=0)
        if kind == "FIXED_DATE":
            if not isinstance(value, str) or not _DATE.fullmatch(value):
                raise _ItemFailure(8942, "Points expiry date is mandatory")
            try:
                day = date.fromisoformat(value)
            except ValueError:
                raise _ItemFailure(8942, "Points expiry date is mandatory") from None
            new = datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=self.tz)
        else:
            count = _positive_int(value)
            if count is None:
                raise _ItemFailure(8942, "Points expiry date is mandatory")
            if kind == "FIXED_DAYS":
                new = end_of_day(now + timedelta(days=count), self.tz)
            else:
                new = end_of_day(_add_months(now, count), self.tz)
        if new <= now:
            raise _ItemFailure(3037, "Invalid expiry date: Expiry date must be in the future")
        return new

    def _apply_expiry(self, item: Any, now: datetime, request_id: str) -> dict[str, Any]:
        if not isinstance(item, Mapping):
            raise _ItemFailure(8931, "Points expiry update request is invalid or empty")
        customer, award = self._find(item)
        new = self._new_expiry(item, now)
        old = award.expiry.astimezone(self.tz)
        award.expiry = new
        self.store.audit.expiry_applied[award.key] += 1
        self.store.audit.record(request_id, "expiry", award.key)
        logs: dict[str, Any] = {"paType": award.ref_type, "paId": award.ref_id}
        for key in ("expiryUpdateReasonType", "expiryUpdateReasonNote"):
            if item.get(key) is not None:
                logs[key] = item[key]
        logs.update(
            {
                "oldExpiryDate": _legacy(old),
                "oldExpiryDateISO": _iso(old),
                "newExpiryDate": _legacy(new),
                "newExpiryDateISO": _iso(new),
                "eventLogId": next(self._event_log_ids),
                "eventDate": _legacy(now),
                "eventDateISO": _iso(now.replace(microsecond=0)),
            }
        )
        for key in ("standardMeta", "customMeta"):
            if item.get(key) is not None:
                logs[key] = item[key]
        return {
            "customerId": customer.id,
            "programId": award.program_id,
            "currencyName": award.currency_name,
            "pointsExpiryUpdateLogs": logs,
        }

    # -- updateRedemption --------------------------------------------------------------------

    def _update_redemption(self, body: Any, request_id: str) -> tuple[int, Any]:
        if not isinstance(body, Mapping):
            raise _Refusal(750, "Redemption update failed: the body must be a JSON object")
        redemption_id = body.get("redemptionId") or None
        external = body.get("externalReferenceNumber") or None
        if (redemption_id is None) == (external is None):
            raise _Refusal(749, "Exactly one redemption identifier needed to identify redemption.")
        fields = ("billId", "billNumber", "purpose", "customFields")
        if all(body.get(key) is None for key in fields):
            raise _Refusal(748, "No metadata update requested.")
        entity = body.get("entity")
        if not isinstance(entity, Mapping) or not all(
            entity.get(key) for key in ("type", "identifierType", "identifierValue")
        ):
            raise _Refusal(1219, "Entity details not set/invalid.")
        if entity["type"] not in ENTITY_TYPES:
            raise _Refusal(1212, "Entity type passed is not valid.")
        bill_id = body.get("billId")
        if bill_id is not None and _positive_int(bill_id) is None:
            raise _Refusal(750, "Redemption update failed: billId must be a positive whole number")
        purpose = body.get("purpose")
        if purpose is not None and (not isinstance(purpose, str) or len(purpose) > 255):
            raise _Refusal(750, "Redemption update failed: purpose must be at most 255 characters")
        custom = body.get("customFields")
        if custom is not None and (
            not isinstance(custom, Mapping) or not all(isinstance(v, str) for v in custom.values())
        ):
            raise _Refusal(750, "Redemption update failed: customFields must map names to strings")
        record = self.store.find_redemption(redemption_id, external)
        customer = self.store.find_customer(
            str(entity["identifierType"]), str(entity["identifierValue"])
        )
        if (
            record is None
            or entity["type"] != "CUSTOMER"
            or customer is None
            or customer.id != record.customer_id
        ):
            raise _Refusal(8015, "Invalid or malformed identifier provided in request body.")
        for name in custom or {}:
            if name not in record.custom_fields:
                raise _Refusal(
                    750,
                    f"Redemption update failed: custom field {name!r} was not set when the "
                    "points were redeemed",
                )
        if bill_id is not None:
            record.bill_id = int(bill_id)
        if body.get("billNumber") is not None:
            record.bill_number = str(body["billNumber"])
        if purpose is not None:
            record.purpose = purpose
        if custom:
            record.custom_fields.update(custom)
        self.store.audit.redemption_applied[record.redemption_id] += 1
        self.store.audit.record(request_id, "redemption", record.redemption_id)
        return 200, self._redemption_body(record)

    def _redemption_body(self, record: Any) -> dict[str, Any]:
        redeemed_at = datetime.fromtimestamp(record.redemption_time_ms / 1000, tz=self.tz)
        payload: dict[str, Any] = {
            "id": record.id,
            "programId": record.program_id,
            "pointsRedeemed": record.points_redeemed,
            "billId": record.bill_id,
            "billNumber": record.bill_number,
            "validationCode": record.validation_code,
            "notes": record.notes,
            "redemptionTime": record.redemption_time_ms,
            "pointsRedemptionTime": record.redemption_time_ms - 19_800_000,
            "tillId": record.till_id,
            "tillName": record.till_name,
            "pointDeductionList": [],
            "redemptionId": record.redemption_id,
            "customerId": record.customer_id,
            "redemptionPurpose": record.purpose,
            "redemptionDate": _iso(redeemed_at),
            "warnings": [],
        }
        if record.custom_fields:
            payload["customFields"] = [
                {"name": name, "value": value} for name, value in record.custom_fields.items()
            ]
        return payload


def _check_enums(item: Any) -> None:
    """Enum violations refuse the whole request (8941), as the docs show."""
    if not isinstance(item, Mapping):
        return
    expiry = item.get("expiryDate")
    checks: list[tuple[Any, tuple[str, ...]]] = [
        (item.get("pointsAwardedRefType"), REF_TYPES),
        (item.get("expiryUpdateReasonType"), REASON_TYPES),
        (item.get("pointCategoryType"), CATEGORY_TYPES),
        (expiry.get("expiryType") if isinstance(expiry, Mapping) else None, EXPIRY_TYPES),
    ]
    for value, allowed in checks:
        if value is not None and value not in allowed:
            raise _Refusal(8941, f"Valid values are: [{', '.join(allowed)}]")
