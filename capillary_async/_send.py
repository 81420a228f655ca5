"""The layers under ``CapillaryClient``: one request with retries, auth renewal, one exchange.

A request goes ``_request (retries) -> _attempt (the pace, one answer or error)
-> _send_authenticated (token renewal) -> _send_once (one HTTP exchange,
logged)``; each policy lives in exactly one of those. ``CapillaryClient``
inherits them and holds the state they use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import anyio
import attrs

from . import _otel, _secrets
from ._auth import Auth, AuthFlow
from ._config import Clock, RetryPolicy, Timeouts, checked_deadline
from ._exceptions import (
    RETRY_STATUSES,
    APIError,
    CapillaryError,
    DeadlineExceededError,
    OutcomeUnknownError,
    TransportError,
    api_error,
    excerpt,
    is_ambiguous,
)
from ._limiter import Limiter
from ._logs import get_logger
from ._retry import Action, OnRetry, RetryEvent, decide, notify
from ._transport import AsyncTransport, Request, Response
from ._types import UNSET, AcceptFn, BeforeSend, Reply, _Unset
from ._wire import checked_headers, decode, encode, has_errors, text

__all__ = ["Sender", "Shared", "logger"]

logger = get_logger("client")

_REQUEST_ID_HEADERS = ("x-cap-request-id", "x-cap-requestid")


class _Tries:
    """How far a call got: for the message, and the verdict, when its deadline runs out."""

    __slots__ = ("applied_before", "attempts", "in_flight", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.attempts = 0
        self.in_flight = False  # the current attempt was written and has no answer yet
        self.applied_before = False

    async def sent(self) -> None:
        """An attempt is about to go (it has its slot and its credentials)."""
        self.attempts += 1

    def written(self) -> None:
        """The attempt was written to the connection: the server may have it."""
        self.in_flight = True


class Shared:
    """What a client shares with the clients ``with_options`` derives from it."""

    __slots__ = ("closed", "flow", "loop")

    def __init__(self) -> None:
        self.flow: AuthFlow | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False


class Sender:
    """The send path of a client; ``CapillaryClient`` supplies the state."""

    base_url: str
    auth: Auth
    retry: RetryPolicy
    timeout: Timeouts
    clock: Clock
    limiter: Limiter
    max_response_bytes: int | None
    deadline: float | None
    on_retry: OnRetry | None
    _transport: AsyncTransport
    _headers: dict[str, str]
    _shared: Shared

    if TYPE_CHECKING:

        def _check_open(self) -> None: ...

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
        deadline: float | _Unset | None = UNSET,
        idempotent: bool,
        accept: AcceptFn | None = None,
        authenticate: bool = True,
        sensitive: bool = False,
        why_not_idempotent: str = "it is not idempotent",
        foreign_json: bool = False,
    ) -> Reply:
        """One call, within its deadline (retries, backoff and pace waits included).

        ``foreign_json``: ``json`` is a caller's own value (``client.request``),
        written by the standard library exactly as it would (a date or an enum
        refused with its ``TypeError``), not by orjson, which would write them.
        """
        call = self._call(
            method,
            path,
            json=json,
            params=params,
            headers=headers,
            timeout=timeout,
            sensitive=sensitive,
            foreign_json=foreign_json,
        )
        policy = retry if retry is not None else self.retry
        limit = self.deadline if isinstance(deadline, _Unset) else checked_deadline(deadline)
        tries = _Tries(time.perf_counter())
        if limit is None or not authenticate:  # (a token request is inside its call's deadline)
            return await self._retrying(
                call, policy, idempotent, accept, authenticate, tries, why_not_idempotent
            )
        with anyio.move_on_after(limit):
            return await self._retrying(
                call, policy, idempotent, accept, authenticate, tries, why_not_idempotent
            )
        maybe = tries.in_flight or tries.applied_before
        late = DeadlineExceededError(
            f"{method} {path}: the deadline of {limit:g} s ran out after "
            f"{tries.attempts} attempt{'s' if tries.attempts != 1 else ''}"
            + ("; the last one was sent and no answer came" if tries.in_flight else "")
            + ("" if tries.attempts else " (waiting for the pace or a token)"),
            attempts=tries.attempts,
            sent=maybe,
            method=method,
            url=call.url,
        )
        if maybe and not idempotent:
            raise OutcomeUnknownError(
                f"{method} {path}: the server may or may not have applied this request "
                f"({late}); it was not repeated because {why_not_idempotent}",
                cause=late,
            )
        raise late

    async def _retrying(  # noqa: PLR0917 - one call's settings, handed down once
        self,
        call: _Call,
        policy: RetryPolicy,
        idempotent: bool,
        accept: AcceptFn | None,
        authenticate: bool,
        tries: _Tries,
        why_not_idempotent: str,
    ) -> Reply:
        """Send with retries: ``decide`` says whether to try again, this loop does it."""
        method, path = call.method, call.path
        attempt = 0
        applied_before = False  # an earlier attempt may have been applied
        while True:
            attempt += 1
            outcome = await self._attempt(
                call,
                attempt,
                accept=accept,
                authenticate=authenticate,
                before_send=tries.sent,
                on_sent=tries.written,
            )
            tries.in_flight = False
            if isinstance(outcome, Reply):
                outcome.attempts = attempt
                outcome.elapsed = time.perf_counter() - tries.started
                return outcome
            error = outcome
            decision = decide(
                error, attempt, idempotent=idempotent, policy=policy, applied_before=applied_before
            )
            if decision.pause:  # a 429 or Retry-After: every request of the client waits
                await self.limiter.throttled(decision.delay, slow_down=decision.slow_down)
            if decision.action is not Action.RETRY:
                break
            applied_before = tries.applied_before = decision.maybe_applied
            logger.info(
                "%s %s: %s, retrying in %.2fs (attempt %d of %d)",
                method,
                path,
                type(error).__name__,
                decision.delay,
                attempt + 1,
                policy.max_attempts,
                extra={
                    "method": method,
                    "path": path,
                    "attempt": attempt,
                    "retry_in": decision.delay,
                    "error_type": type(error).__name__,
                    "request_id": error.request_id,
                },
            )
            _otel.retry_reason.set(_reason(error))
            await notify(
                self.on_retry,
                RetryEvent(
                    method=method,
                    path=path,
                    attempt=attempt,
                    delay=decision.delay,
                    error=error,
                    request_id=error.request_id,
                ),
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
        foreign_json: bool = False,
    ) -> _Call:
        """What stays the same across the attempts of one request."""
        self._check_open()
        if not path.startswith("/"):
            raise ValueError(f"path: must start with '/', got {path!r}")
        return _Call(
            method=method,
            path=path.partition("?")[0],  # spans and logs name the endpoint, never a query
            url=self.base_url + path + (f"?{urlencode(params)}" if params else ""),
            content=None if json is None else encode(json, foreign=foreign_json),
            headers=checked_headers(headers) if headers else {},
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
        on_sent: Callable[[], None] | None = None,
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
                call, attempt, authenticate=authenticate, before_send=before_send, on_sent=on_sent
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
            headers=reply.headers,
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
        shared = self._shared
        if shared.flow is None:
            shared.flow = self.auth.create_flow(self._post_unauthenticated, self.clock)
        return shared.flow

    async def _send_authenticated(
        self,
        call: _Call,
        attempt: int,
        *,
        authenticate: bool,
        before_send: BeforeSend | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> Reply:
        """One attempt, renewing the token once if the server refuses it (401/498)."""
        if not authenticate:
            if before_send is not None:
                await before_send()
            return await self._send_once(call, {}, attempt, on_sent)
        flow = self._auth_flow()
        static = getattr(flow, "static_headers", None)  # Basic auth and fixed tokens
        auth_headers = static if static is not None else await _before_send(flow.headers())
        if before_send is not None:
            await before_send()
        reply = await self._send_once(call, auth_headers, attempt, on_sent)
        if reply.status in (401, 498) and await flow.renew(auth_headers):
            logger.info(
                "%s %s: token refused (%d), renewing once", call.method, call.path, reply.status
            )
            reply = await self._send_once(
                call, await _before_send(flow.headers()), attempt, on_sent
            )
        return reply

    async def _exchange_traced(
        self, call: _Call, request: Request, attempt: int, started: float
    ) -> tuple[Response, str | None]:
        """The exchange inside a client span (tracing is on)."""
        with _otel.attempt_span(call.method, call.path, call.url, attempt) as span:
            try:
                response = await self._transport.send(request)
            except TransportError as exc:
                _otel.finish_attempt(span, error=type(exc).__name__)
                _log_failure(call, exc, started, attempt)
                raise
            request_id = _request_id(response.headers)
            _otel.finish_attempt(span, status=response.status, request_id=request_id)
        return response, request_id

    async def _send_once(
        self,
        call: _Call,
        auth_headers: Mapping[str, str],
        attempt: int,
        on_sent: Callable[[], None] | None = None,
    ) -> Reply:
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
            on_sent=on_sent,
        )
        debug = not call.sensitive and logger.isEnabledFor(logging.DEBUG)
        if debug and call.content is not None:
            logger.debug("%s %s request body: %s", call.method, call.path, text(call.content))
        started = time.perf_counter()
        if _otel.tracing():
            response, request_id = await self._exchange_traced(call, request, attempt, started)
        else:  # the common case, without a span's context manager
            try:
                response = await self._transport.send(request)
            except TransportError as exc:
                _log_failure(call, exc, started, attempt)
                raise
            request_id = _request_id(response.headers)
        elapsed_ms = (time.perf_counter() - started) * 1000
        # A hostile or broken server may echo the credentials back: they leave
        # here, before the body or a header value becomes any text of ours.
        # (Not a token answer: a token issued again would be garbled; the flow
        # quotes nothing of it but through ``excerpt``, which redacts.)
        content = response.content if call.sensitive else _secrets.redact_bytes(response.content)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "%s %s -> %d in %.1f ms (attempt %d, request id %s)",
                call.method,
                call.path,
                response.status,
                elapsed_ms,
                attempt,
                request_id,
                extra={
                    "method": call.method,
                    "path": call.path,
                    "status": response.status,
                    "elapsed_ms": elapsed_ms,
                    "attempt": attempt,
                    "request_id": request_id,
                },
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


def _request_id(headers: Mapping[str, str]) -> str | None:
    for name in _REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return excerpt(value, 128)
    return None


def _reason(error: CapillaryError) -> str:
    """An error as a span names it: the HTTP status, or the kind of failure."""
    status = getattr(error, "status", None)
    return str(status) if isinstance(status, int) else type(error).__name__


def _log_failure(call: _Call, exc: TransportError, started: float, attempt: int) -> None:
    elapsed_ms = (time.perf_counter() - started) * 1000
    logger.info(
        "%s %s -> %s in %.1f ms (attempt %d)",
        call.method,
        call.path,
        type(exc).__name__,
        elapsed_ms,
        attempt,
        extra={
            "method": call.method,
            "path": call.path,
            "error_type": type(exc).__name__,
            "elapsed_ms": elapsed_ms,
            "attempt": attempt,
        },
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
