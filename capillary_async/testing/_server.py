"""The emulator's HTTP side: lifecycle, auth, OAuth, latency and faults.

The endpoints' logic is in ``_handlers``, clocks in ``_clock``, faults in
``_faults``; the names other modules import from here are re-exported.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import logging
import math
import random
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta, tzinfo
from typing import Any

from aiohttp import web

from ._clock import EmulatorClock, ManualTime, SystemTime, _iso, parse_timezone
from ._faults import NO_FAULTS, FaultKind, Faults, _Bucket
from ._handlers import ENVELOPES as ENVELOPES  # noqa: PLC0414
from ._handlers import Envelope, _dumps, _errors, _PointsHandlers, _Refusal
from ._store import Stats, Store

#: The emulator's own log (the ``emulator`` command prints it): clients that went away.
logger = logging.getLogger("capillary_async.emulator")

__all__ = [
    "Emulator",
    "EmulatorClock",
    "Faults",
    "ManualTime",
    "SystemTime",
    "parse_timezone",
]

TOKEN_PATH = "/v3/oauth/token/generate"
EXPIRY_PATH = "/v2/points/updateExpiry"
REDEMPTION_PATH = "/v2/points/updateRedemption"
STATS_PATH = "/_emulator/stats"


class Emulator(_PointsHandlers):
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
            except ConnectionResetError:  # aiohttp's own included
                # A client that gave up mid-request (a timeout, a cancelled job):
                # routine for a server, one line rather than aiohttp's traceback.
                self.stats.gone += 1
                logger.info(
                    "a client went away before its answer (%s %s, request %s)",
                    request.method,
                    request.path,
                    request_id,
                )
                return web.Response(status=499)  # nobody reads it: the connection is gone
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
