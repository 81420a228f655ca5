"""``CapillaryClient``: one pooled session, auth, retries, error mapping.

A request goes ``request -> _request (retries) -> _send_authenticated
(token renewal) -> _send_once (one HTTP exchange, logged)``; each policy lives
in exactly one of those.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import aiohttp
import attrs

from . import _secrets
from ._auth import Auth, AuthFlow
from ._config import (
    CHECK_TIMEOUTS,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUTS,
    Clock,
    Cluster,
    RetryPolicy,
    SystemClock,
    Timeouts,
    resolve_base_url,
)
from ._endpoints import EXPIRY_LIST_FIELD, UPDATE_EXPIRY_PATH, not_capillary, speaks_capillary
from ._exceptions import (
    RETRY_STATUSES,
    APIError,
    CapillaryError,
    OutcomeUnknownError,
    TransportError,
    api_error,
    excerpt,
    is_ambiguous,
)
from ._limiter import Limiter, LocalLimiter
from ._resources import PointsResource
from ._retry import Action, decide, wrong_endpoint
from ._transport import AiohttpTransport, AsyncTransport, Request
from ._types import UNSET, AcceptFn, BeforeSend, Reply, _Unset
from ._wire import checked_headers, decode, encode, has_errors, text, user_agent

__all__ = ["CapillaryClient", "logger"]

logger = logging.getLogger("capillary_async")
logger.addHandler(logging.NullHandler())

_REQUEST_ID_HEADERS = ("x-cap-request-id", "x-cap-requestid")


class CapillaryClient:
    """An asyncio client for Capillary's APIs; share one per process.

    It owns a pooled ``aiohttp.ClientSession``, made on first use inside the
    running loop (or uses the ``session`` given, which it then never closes).
    Use it as an async context manager, or call ``aclose()``.

    ``timeout`` is a ``Timeouts``, a number of seconds for the whole exchange,
    or ``None`` for no limit; every call may override it. ``headers`` are added
    to every request (attribution headers, for example). A response body larger
    than ``max_response_bytes`` (16 MiB by default; ``None`` for no limit) is
    not read: the call raises ``ResponseTooLargeError``.

    One limiter paces every request the client sends (single calls first, then
    bulk work): ``rate_limit`` (requests per second) makes an in-process one;
    ``limiter`` takes any ``Limiter``, such as a ``RedisLimiter`` shared by a
    fleet. Either way a 429 or a ``Retry-After`` pauses every request.
    """

    def __init__(
        self,
        base_url: str | Cluster,
        *,
        auth: Auth,
        retry: RetryPolicy | None = None,
        timeout: Timeouts | float | None = DEFAULT_TIMEOUTS,
        max_connections: int = 100,
        session: aiohttp.ClientSession | None = None,
        allow_insecure: bool = False,
        headers: Mapping[str, str] | None = None,
        transport: AsyncTransport | None = None,
        clock: Clock | None = None,
        max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
        rate_limit: float | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        if not callable(getattr(auth, "create_flow", None)):
            raise TypeError("auth: expected BasicAuth, OAuthCredentials or BearerToken")
        if session is not None and transport is not None:
            raise ValueError("pass either session or transport, not both")
        self.cluster = base_url if isinstance(base_url, Cluster) else None
        self.base_url = resolve_base_url(base_url, allow_insecure=allow_insecure)
        self.auth = auth
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = Timeouts.coerce(timeout)
        if max_response_bytes is not None and (
            isinstance(max_response_bytes, bool) or max_response_bytes < 1
        ):
            raise ValueError("max_response_bytes: must be a positive number of bytes, or None")
        self.max_response_bytes = max_response_bytes
        self.clock: Clock = clock if clock is not None else SystemClock()
        if limiter is not None and rate_limit is not None:
            raise ValueError("pass rate_limit or limiter, not both (a limiter has its own rate)")
        if limiter is not None and not isinstance(limiter, Limiter):
            raise TypeError("limiter: expected an object with acquire, throttled and aclose")
        #: Paces every request of this client: single calls, bulk jobs, ``request()``.
        self.limiter: Limiter = (
            limiter if limiter is not None else LocalLimiter(rate_limit, clock=self.clock)
        )
        self._owns_limiter = limiter is None
        self._transport: AsyncTransport = (
            transport
            if transport is not None
            else AiohttpTransport(max_connections=max_connections, session=session)
        )
        self._headers = {
            "Accept": "application/json",
            "User-Agent": user_agent(),
            **checked_headers(headers or {}),
        }
        self._flow: AuthFlow | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.points: PointsResource = PointsResource(self)

    # -- lifecycle ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether ``aclose()`` has run: a closed client cannot be reopened."""
        return self._closed

    @property
    def transport(self) -> AsyncTransport:
        """The transport in use."""
        return self._transport

    async def __aenter__(self) -> CapillaryClient:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections (not a session the caller passed in)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._transport.aclose()
        finally:
            if self._owns_limiter:
                await self.limiter.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("CapillaryClient is closed: make a new one")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(
                "CapillaryClient is bound to the event loop it was first used in; "
                "make one client per loop"
            )

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<CapillaryClient {self.base_url} auth={self.auth!r}{state}>"

    # -- public ---------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeouts | float | _Unset | None = UNSET,
        retry: RetryPolicy | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Call any Capillary endpoint with this client's auth, retries and errors.

        Returns the parsed JSON body. ``idempotent`` (default: True for every
        method but POST and PATCH) says whether the request may be repeated
        after a failure that leaves its outcome unknown.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method not in ("POST", "PATCH")
        reply = await self._request(
            method,
            path,
            json=json,
            params=params,
            headers=headers,
            timeout=timeout,
            retry=retry,
            idempotent=idempotent,
        )
        return reply.body

    async def check(self, *, timeout: Timeouts | float | _Unset | None = UNSET) -> None:
        """Prove the target and the credentials with one request that changes nothing.

        For a web app's readiness probe, or before a bulk job. It sends
        updateExpiry with an empty list, which Capillary refuses (code 8931)
        only once it has authenticated the caller: that refusal, or another
        answer in Capillary's own words, passes. Otherwise it raises what the
        real calls would: ``AuthenticationError`` (a wrong password, key or
        token), ``PermissionDeniedError``, ``NotFoundError`` or ``APIError``
        for a 404 or 405 without Capillary's codes or an answer of another
        shape (an HTML page: the base URL is wrong; the message names it), a
        ``TransportError`` (nothing listens there), or a ``ServerError``. It
        makes two attempts at most, each of 15 s unless ``timeout`` says.
        """
        try:
            reply = await self._request(
                "POST",
                UPDATE_EXPIRY_PATH,
                json={EXPIRY_LIST_FIELD: []},
                timeout=CHECK_TIMEOUTS if isinstance(timeout, _Unset) else timeout,
                retry=attrs.evolve(self.retry, max_attempts=min(2, self.retry.max_attempts)),
                idempotent=True,  # an empty list applies nothing
            )
        except APIError as exc:
            if exc.codes and exc.status not in (401, 403, 498) and not wrong_endpoint(exc):
                return  # refused in Capillary's words, after authentication
            raise
        if not speaks_capillary(reply.body):
            raise not_capillary(reply, f"POST {self.base_url}{UPDATE_EXPIRY_PATH}")

    # -- the layers -----------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeouts | float | _Unset | None = UNSET,
        retry: RetryPolicy | None = None,
        idempotent: bool,
        accept: AcceptFn | None = None,
        authenticate: bool = True,
        sensitive: bool = False,
        why_not_idempotent: str = "it is not idempotent",
    ) -> Reply:
        """Send with retries: ``decide`` says whether to try again, this loop does it."""
        call = self._call(
            method,
            path,
            json=json,
            params=params,
            headers=headers,
            timeout=timeout,
            sensitive=sensitive,
        )
        policy = retry if retry is not None else self.retry
        attempt = 0
        applied_before = False  # an earlier attempt may have been applied
        while True:
            attempt += 1
            outcome = await self._attempt(call, attempt, accept=accept, authenticate=authenticate)
            if isinstance(outcome, Reply):
                return outcome
            error = outcome
            decision = decide(
                error, attempt, idempotent=idempotent, policy=policy, applied_before=applied_before
            )
            if decision.pause:  # a 429 or Retry-After: every request of the client waits
                await self.limiter.throttled(decision.delay, slow_down=decision.slow_down)
            if decision.action is not Action.RETRY:
                break
            applied_before = decision.maybe_applied
            logger.info(
                "%s %s: %s, retrying in %.2fs (attempt %d of %d)",
                method,
                path,
                type(error).__name__,
                decision.delay,
                attempt + 1,
                policy.max_attempts,
            )
            await self.clock.sleep(decision.delay)
        if decision.not_repeated:
            raise OutcomeUnknownError(
                f"{method} {path}: the server may or may not have applied this request "
                f"({type(error).__name__}: {error}); it was not repeated because "
                f"{why_not_idempotent}",
                cause=error,
            ) from error
        if applied_before and not is_ambiguous(error):
            # A later refusal cannot undo an earlier attempt that may have landed.
            raise OutcomeUnknownError(
                f"{method} {path}: an earlier attempt may have been applied, and the "
                f"last one failed ({type(error).__name__}: {error})",
                cause=error,
            ) from error
        raise error

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeouts | float | _Unset | None = UNSET,
        sensitive: bool = False,
    ) -> _Call:
        """What stays the same across the attempts of one request."""
        self._check_open()
        if not path.startswith("/"):
            raise ValueError(f"path: must start with '/', got {path!r}")
        return _Call(
            method=method,
            path=path,
            url=self.base_url + path + (f"?{urlencode(params)}" if params else ""),
            content=None if json is None else encode(json),
            headers=headers or {},
            timeout=self.timeout if isinstance(timeout, _Unset) else Timeouts.coerce(timeout),
            sensitive=sensitive,
        )

    async def _attempt(
        self,
        call: _Call,
        attempt: int,
        *,
        accept: AcceptFn | None = None,
        authenticate: bool = True,
        priority: bool = True,
        before_send: BeforeSend | None = None,
    ) -> Reply | CapillaryError:
        """One attempt: the answer the caller wants, or the error it failed with (returned).

        It waits for a slot of the client's limiter first (``priority``: a single
        call, ahead of bulk work). The bulk engine calls this directly: it
        applies ``decide`` per chunk itself, and passes ``before_send``, awaited
        once the request has its slot and its credentials, just before it is
        written (a journal marks its items in flight there; raising keeps it home).
        """
        if authenticate:  # (a token request is not an API call: not paced)
            await self.limiter.acquire(priority=priority)
        try:
            reply = await self._send_authenticated(
                call, attempt, authenticate=authenticate, before_send=before_send
            )
        except TransportError as exc:
            return exc
        if reply.status not in RETRY_STATUSES:
            if accept is not None and accept(reply.status, reply.body):
                return reply
            if 200 <= reply.status < 300 and not has_errors(reply.body):
                return reply
        return self._error(reply, call)

    @staticmethod
    def _error(reply: Reply, call: _Call) -> APIError:
        body = None if call.sensitive and 200 <= reply.status < 300 else reply.body
        return api_error(
            reply.status,
            body,
            request_id=reply.request_id,
            retry_after=reply.headers.get("retry-after"),
            where=f"{call.method} {call.url.partition('?')[0]}",
        )

    async def _post_unauthenticated(
        self, path: str, body: Mapping[str, Any]
    ) -> tuple[int, Any, str | None]:
        # For the OAuth token endpoint: every non-retryable answer goes back to
        # the auth flow, which knows what it means.
        try:
            reply = await self._request(
                "POST",
                path,
                json=dict(body),
                idempotent=True,
                authenticate=False,
                sensitive=True,
                accept=lambda _status, _body: True,
            )
        except OutcomeUnknownError as exc:
            raise exc.cause from None  # asking for a token changes nothing: no "unknown" here
        return reply.status, reply.body, reply.request_id

    def _auth_flow(self) -> AuthFlow:
        if self._flow is None:
            self._flow = self.auth.create_flow(self._post_unauthenticated, self.clock)
        return self._flow

    async def _send_authenticated(
        self,
        call: _Call,
        attempt: int,
        *,
        authenticate: bool,
        before_send: BeforeSend | None = None,
    ) -> Reply:
        """One attempt, renewing the token once if the server refuses it (401/498)."""
        if not authenticate:
            if before_send is not None:
                await before_send()
            return await self._send_once(call, {}, attempt)
        flow = self._auth_flow()
        auth_headers = await _before_send(flow.headers())
        if before_send is not None:
            await before_send()
        reply = await self._send_once(call, auth_headers, attempt)
        if reply.status in (401, 498) and await flow.renew(auth_headers):
            logger.info(
                "%s %s: token refused (%d), renewing once", call.method, call.path, reply.status
            )
            reply = await self._send_once(call, await _before_send(flow.headers()), attempt)
        return reply

    async def _send_once(self, call: _Call, auth_headers: Mapping[str, str], attempt: int) -> Reply:
        """One HTTP exchange, logged; never logs headers, and bodies only at DEBUG."""
        headers = {**self._headers, **call.headers, **auth_headers}
        if call.content is not None:
            headers["Content-Type"] = "application/json"
        request = Request(
            method=call.method,
            url=call.url,
            headers=headers,
            content=call.content,
            timeout=call.timeout,
            max_response_bytes=self.max_response_bytes,
        )
        debug = not call.sensitive and logger.isEnabledFor(logging.DEBUG)
        if debug and call.content is not None:
            logger.debug("%s %s request body: %s", call.method, call.path, text(call.content))
        started = time.perf_counter()
        try:
            response = await self._transport.send(request)
        except TransportError as exc:
            logger.info(
                "%s %s -> %s in %.1f ms (attempt %d)",
                call.method,
                call.path,
                type(exc).__name__,
                (time.perf_counter() - started) * 1000,
                attempt,
            )
            raise
        elapsed_ms = (time.perf_counter() - started) * 1000
        # A hostile or broken server may echo the credentials back: they leave
        # here, before the body or a header value becomes any text of ours.
        # (Not a token answer: a token issued again would be garbled; the flow
        # quotes nothing of it but through ``excerpt``, which redacts.)
        content = response.content if call.sensitive else _secrets.redact_bytes(response.content)
        request_id = next((v for v in map(response.header, _REQUEST_ID_HEADERS) if v), None)
        if request_id is not None:
            request_id = excerpt(request_id, 128)
        logger.info(
            "%s %s -> %d in %.1f ms (attempt %d, request id %s)",
            call.method,
            call.path,
            response.status,
            elapsed_ms,
            attempt,
            request_id,
        )
        if debug:
            logger.debug("%s %s response body: %s", call.method, call.path, text(content))
        body = decode(content)
        if not call.sensitive and b"\\u" in content:  # text spelled in escapes: redact it decoded
            body = _secrets.redact_value(body)
        return Reply(
            status=response.status,
            body=body,
            request_id=request_id,
            headers=response.headers,
        )


@attrs.frozen(kw_only=True)
class _Call:
    """What stays the same across the attempts of one request."""

    method: str
    path: str
    url: str
    content: bytes | None = attrs.field(repr=False)
    headers: Mapping[str, str] = attrs.field(repr=False)
    timeout: Timeouts
    sensitive: bool


async def _before_send(headers: Awaitable[dict[str, str]]) -> dict[str, str]:
    """Auth headers; a failure to get them is marked as raised before the request was sent."""
    try:
        return await headers
    except CapillaryError as exc:
        exc.before_send = True
        raise
