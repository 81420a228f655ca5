"""``CapillaryClient``: one pooled session, auth, retries, error mapping.

A request goes ``request -> _request (retries) -> _send_authenticated
(token renewal) -> _send_once (one HTTP exchange, logged)``; each policy lives
in exactly one of those.
"""

from __future__ import annotations

import asyncio
import copy
import ssl as ssl_module
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp
import attrs

from . import _secrets
from ._auth import Auth
from ._config import (
    CHECK_TIMEOUTS,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUTS,
    Clock,
    Cluster,
    RetryPolicy,
    SystemClock,
    Timeouts,
    checked_deadline,
    network_options,
    resolve_base_url,
)
from ._endpoints import EXPIRY_LIST_FIELD, UPDATE_EXPIRY_PATH, not_capillary, speaks_capillary
from ._env import base_url_from_env, credentials_from_env
from ._exceptions import (
    APIError,
)
from ._limiter import Limiter, LocalLimiter
from ._raw import RawResponse
from ._resources import PointsResource
from ._retry import OnRetry
from ._send import Sender, Shared, logger
from ._transport import AiohttpTransport, AsyncTransport
from ._types import UNSET, Reply, _Unset
from ._wire import checked_headers, user_agent

__all__ = ["CapillaryClient", "logger"]


class CapillaryClient(Sender):
    """An asyncio client for Capillary's APIs; share one per process (per event loop).

    ``client.points`` holds the calls: ``update_redemption``, ``update_expiry``,
    ``bulk_update_expiry`` / ``stream_update_expiry`` (any number of items,
    chunked and concurrent) and their redemption twins. ``request()`` calls any
    other endpoint; ``check()`` proves the target and credentials;
    ``with_options()`` varies the defaults per request. ``from_env()`` reads
    the target and credentials from ``CAPILLARY_*`` variables. The guides,
    and what each option does in detail: ``docs/`` (``docs/client.md``).

    It owns a pooled ``aiohttp.ClientSession``, made on first use inside the
    running loop; use it as an async context manager, or call ``aclose()``.

    Options (all keyword-only but the first):

    - ``base_url``: a ``Cluster`` or an ``https://`` URL (``http://`` only for
      loopback, or with ``allow_insecure=True``).
    - ``auth``: ``BasicAuth``, ``OAuthCredentials`` or ``BearerToken``.
    - ``retry``: a ``RetryPolicy`` (default: 4 attempts, jittered backoff,
      ``Retry-After`` honoured); ``RetryPolicy.disabled()`` for none.
    - ``timeout``: bounds each attempt: ``Timeouts(connect=10, total=60)``
      (the default), a number of seconds, or ``None``.
    - ``deadline``: seconds for a whole single call, retries, backoff and pace
      waits included (``DeadlineExceededError``); ``None`` (default) for none.
    - ``headers``: added to every request (attribution headers, say).
    - ``max_response_bytes``: a larger body is not read
      (``ResponseTooLargeError``); 16 MiB by default, ``None`` for no limit.
    - ``rate_limit`` (requests per second) or ``limiter`` (any ``Limiter``,
      such as a ``RedisLimiter`` shared by a fleet): one pace for every
      request, single calls first; a 429 or ``Retry-After`` pauses them all.
    - ``on_retry``: told of every retry (a ``RetryEvent``) before its wait.
    - ``max_connections`` (100), ``proxy`` (a URL; its credentials never
      appear in our text), ``ssl`` (an ``ssl.SSLContext``, or ``False`` for
      loopback only), ``trust_env`` (``HTTPS_PROXY``, ``NO_PROXY``, netrc).
    - ``session``: an ``aiohttp.ClientSession`` whose connection pool is lent
      (never closed by us, its defaults never applied); refused together
      with the four network options above.
    - ``transport`` and ``clock``: for tests (a ``MockTransport``; an object
      with ``monotonic()`` and ``async sleep()``).
    """

    def __init__(
        self,
        base_url: str | Cluster,
        *,
        auth: Auth,
        retry: RetryPolicy | None = None,
        timeout: Timeouts | float | None = DEFAULT_TIMEOUTS,
        max_connections: int | _Unset = UNSET,
        session: aiohttp.ClientSession | None = None,
        proxy: str | None = None,
        ssl: ssl_module.SSLContext | bool | None = None,
        trust_env: bool = False,
        allow_insecure: bool = False,
        headers: Mapping[str, str] | None = None,
        transport: AsyncTransport | None = None,
        clock: Clock | None = None,
        max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
        rate_limit: float | None = None,
        limiter: Limiter | None = None,
        deadline: float | None = None,
        on_retry: OnRetry | None = None,
    ) -> None:
        if not callable(getattr(auth, "create_flow", None)):
            raise TypeError("auth: expected BasicAuth, OAuthCredentials or BearerToken")
        if session is not None and transport is not None:
            raise ValueError("pass either session or transport, not both")
        if transport is not None and (
            proxy is not None
            or ssl is not None
            or trust_env
            or not isinstance(max_connections, _Unset)
        ):
            raise ValueError(
                "transport: it makes its own connections; proxy, ssl, trust_env and "
                "max_connections cannot apply to it"
            )
        self.cluster = base_url if isinstance(base_url, Cluster) else None
        self.base_url = resolve_base_url(base_url, allow_insecure=allow_insecure)
        network = network_options(
            self.base_url, session, max_connections, proxy, ssl, trust_env, allow_insecure
        )
        self._proxy_shown: str | None = network.get("shown")
        if network.get("secrets"):
            self._release_proxy = _secrets.hold(self, *network["secrets"])
        self.auth = auth
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = Timeouts.coerce(timeout)
        #: Seconds for a whole single call (retries, backoff, pace waits); None: no bound.
        self.deadline = checked_deadline(deadline)
        #: Told of every retry before its wait (a ``RetryEvent``): to count them, say.
        self.on_retry = _checked_hook(on_retry)
        self.max_response_bytes = _checked_size(max_response_bytes)
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
            else AiohttpTransport(
                max_connections=100 if isinstance(max_connections, _Unset) else max_connections,
                session=session,
                proxy=proxy,
                ssl=ssl,
                trust_env=trust_env,
            )
        )
        self._headers = {
            "Accept": "application/json",
            "User-Agent": user_agent(),
            **checked_headers(headers or {}),
        }
        #: The pool, the auth flow (its tokens), the loop and the closed state: one
        #: for this client and every client ``with_options`` derives from it.
        self._shared = Shared()
        self._derived = False
        self._points = PointsResource(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> CapillaryClient:
        """A client for the target and credentials the environment names.

        Reads what the command line reads: ``CAPILLARY_BASE_URL`` or
        ``CAPILLARY_CLUSTER``, and one of ``CAPILLARY_USERNAME`` with
        ``CAPILLARY_PASSWORD`` (or ``CAPILLARY_PASSWORD_MD5``),
        ``CAPILLARY_CLIENT_KEY`` with ``CAPILLARY_CLIENT_SECRET``, or
        ``CAPILLARY_TOKEN``. So the same code runs against a real cluster and
        against a local emulator. ``options`` are the constructor's other
        keywords. A missing or half-set variable raises ``ValueError`` naming
        it, never quoting a value.
        """
        insecure = bool(options.get("allow_insecure", False))
        base_url = base_url_from_env(env, allow_insecure=insecure)
        return cls(base_url, auth=credentials_from_env(env), **options)

    @property
    def points(self) -> PointsResource:
        """The points calls: ``update_redemption``, ``update_expiry``, and the bulk ones."""
        return self._points

    def with_options(
        self,
        *,
        timeout: Timeouts | float | _Unset | None = UNSET,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        max_response_bytes: int | _Unset | None = UNSET,
        deadline: float | _Unset | None = UNSET,
        on_retry: OnRetry | _Unset | None = UNSET,
    ) -> CapillaryClient:
        """This client with other defaults, sharing its pool, its tokens and its limiter.

        Cheap enough to make per request (a few attribute copies: no
        connection pool, no auth flow, no limiter of its own), and nothing to
        close: ``aclose()`` on a derived client does nothing; closing the
        original closes them all. ``headers`` are merged over this client's.
        """
        derived = copy.copy(self)
        derived._derived = True
        if not isinstance(timeout, _Unset):
            derived.timeout = Timeouts.coerce(timeout)
        if retry is not None:
            if not isinstance(retry, RetryPolicy):
                raise TypeError("retry: expected a RetryPolicy")
            derived.retry = retry
        if headers is not None:
            derived._headers = {**self._headers, **checked_headers(headers)}
        if not isinstance(max_response_bytes, _Unset):
            derived.max_response_bytes = _checked_size(max_response_bytes)
        if not isinstance(deadline, _Unset):
            derived.deadline = checked_deadline(deadline)
        if not isinstance(on_retry, _Unset):
            derived.on_retry = _checked_hook(on_retry)
        derived._points = PointsResource(derived)
        return derived

    # -- lifecycle ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether ``aclose()`` has run: a closed client cannot be reopened."""
        return self._shared.closed

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
        """Close the pooled connections (not a session the caller passed in).

        On a client made by ``with_options`` it does nothing: the original owns them.
        """
        if self._derived or self._shared.closed:
            return
        self._shared.closed = True
        try:
            await self._transport.aclose()
        finally:
            if self._owns_limiter:
                await self.limiter.aclose()

    def _check_open(self) -> None:
        shared = self._shared
        if shared.closed:
            raise RuntimeError("CapillaryClient is closed: make a new one")
        loop = asyncio.get_running_loop()
        if shared.loop is None:
            shared.loop = loop
        elif shared.loop is not loop:
            raise RuntimeError(
                "CapillaryClient is bound to the event loop it was first used in; "
                "make one client per loop"
            )

    def __repr__(self) -> str:
        state = " closed" if self._shared.closed else ""
        proxy = f" proxy={self._proxy_shown}" if self._proxy_shown else ""
        return f"<CapillaryClient {self.base_url} auth={self.auth!r}{proxy}{state}>"

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
        deadline: float | _Unset | None = UNSET,
        idempotent: bool | None = None,
    ) -> Any:
        """Call any Capillary endpoint with this client's auth, retries and errors.

        Returns the parsed JSON body. ``idempotent`` (default: True for every
        method but POST and PATCH) says whether the request may be repeated
        after a failure that leaves its outcome unknown.
        """
        raw = await self.with_raw_response.request(
            method,
            path,
            json=json,
            params=params,
            headers=headers,
            timeout=timeout,
            retry=retry,
            deadline=deadline,
            idempotent=idempotent,
        )
        return raw.body

    @property
    def with_raw_response(self) -> RawClient:
        """``request()`` answering a ``RawResponse`` (status, headers, request id, timing)."""
        return RawClient(self)

    async def check(
        self,
        *,
        timeout: Timeouts | float | _Unset | None = UNSET,
        deadline: float | _Unset | None = UNSET,
    ) -> None:
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
                deadline=deadline,
                idempotent=True,  # an empty list applies nothing
            )
        except APIError as exc:
            if exc.codes and exc.status < 500 and exc.status not in _NOT_READY:
                return  # refused in Capillary's words, after authentication
            raise
        if not speaks_capillary(reply.body):
            raise not_capillary(reply, f"POST {self.base_url}{UPDATE_EXPIRY_PATH}")


#: Answers in Capillary's words that still say the target or credentials will not do.
_NOT_READY = frozenset({401, 403, 407, 498})


def _checked_hook(hook: OnRetry | None) -> OnRetry | None:
    if hook is not None and not callable(hook):
        raise TypeError("on_retry: expected a function (or coroutine function), or None")
    return hook


def _checked_size(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError("max_response_bytes: must be a positive number of bytes, or None")
    return value


class RawClient:
    """``client.with_raw_response``: ``request()`` answering the raw response."""

    def __init__(self, client: CapillaryClient) -> None:
        self._client = client

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
        deadline: float | _Unset | None = UNSET,
        idempotent: bool | None = None,
    ) -> RawResponse[Any]:
        """``client.request()``, answering the raw response; ``.parse()`` gives the body."""
        method = method.upper()
        reply = await self._client._request(
            method,
            path,
            json=json,
            params=params,
            headers=headers,
            timeout=timeout,
            retry=retry,
            deadline=deadline,
            idempotent=method not in ("POST", "PATCH") if idempotent is None else idempotent,
            foreign_json=True,
        )
        return RawResponse(reply, _body)


def _body(reply: Reply) -> Any:
    return reply.body
