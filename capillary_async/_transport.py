"""The bottom layer: send one HTTP request, get one response, know nothing of Capillary.

``AiohttpTransport`` is the real one (one pooled session, no cookie jar);
``MockTransport`` answers from a function, for tests about our logic rather
than aiohttp's. aiohttp and OS errors are translated into ``TransportError``
here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import re
import ssl as ssl_module
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import attrs
from multidict import CIMultiDict, CIMultiDictProxy

from . import _secrets
from ._config import DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUTS, Timeouts
from ._exceptions import (
    ConnectError,
    ConnectionLostError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ResponseTooLargeError,
    TransportError,
)

__all__ = ["AiohttpTransport", "AsyncTransport", "MockTransport", "Request", "Response"]


@attrs.frozen(kw_only=True)
class Request:
    """One HTTP request, fully built. ``headers`` may hold secrets: never log them."""

    method: str
    url: str
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    content: bytes | None = attrs.field(default=None, repr=False)
    timeout: Timeouts = DEFAULT_TIMEOUTS
    #: The largest body to read; a transport raises ``ResponseTooLargeError`` past it.
    max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES
    #: Called once the request has been written to the connection (its headers sent):
    #: from then on, a failure may leave it applied.
    on_sent: Callable[[], None] | None = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class Response:
    """One HTTP response. Header names are lower-case."""

    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    content: bytes = b""

    def header(self, name: str) -> str | None:
        """A header's value by case-insensitive name."""
        return self.headers.get(name.lower())


class AsyncTransport(Protocol):
    """What the client needs from the layer below: send, and close."""

    async def send(self, request: Request) -> Response:
        """Send ``request``; raise ``TransportError`` if no full response came."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def _client_timeout(timeout: Timeouts) -> aiohttp.ClientTimeout:
    # Every field is set: aiohttp's defaults have changed between versions.
    # Waiting for a pooled connection counts against ``total`` only, so a busy
    # pool is not mistaken for an unreachable server.
    return aiohttp.ClientTimeout(
        total=timeout.total,
        connect=None,
        sock_connect=timeout.connect,
        sock_read=None,
        ceil_threshold=5,
    )


class AiohttpTransport:
    """One pooled ``aiohttp.ClientSession``, made lazily inside the running loop.

    ``proxy`` (a URL, credentials allowed and never shown), ``ssl`` (an
    ``ssl.SSLContext``: a corporate CA, a client certificate; ``False`` skips
    verification) and ``trust_env`` (``HTTPS_PROXY`` / ``NO_PROXY`` and netrc,
    as aiohttp reads them) shape the connections.

    A ``session`` passed in lends its connection pool (its connector) and
    nothing else: requests go through a session of ours on that pool, so its
    cookie jar, default headers, ``raise_for_status``, auth and timeouts never
    apply. It belongs to the caller and is never closed here.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        session: aiohttp.ClientSession | None = None,
        proxy: str | None = None,
        ssl: ssl_module.SSLContext | bool | None = None,
        trust_env: bool = False,
    ) -> None:
        if isinstance(max_connections, bool) or max_connections < 1:
            raise ValueError("max_connections: must be at least 1")
        self._max_connections = max_connections
        self._lent = session
        self._session: aiohttp.ClientSession | None = None
        self._proxy = proxy
        self._ssl = ssl
        self._trust_env = trust_env
        self._closed = False

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The session in use, once one exists (ours, on a lent session's pool)."""
        return self._session

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("transport is closed")
        lent = self._lent
        if lent is not None and lent.closed:
            raise RuntimeError("the session passed to CapillaryClient is closed")
        if self._session is None:
            if lent is not None:
                connector: aiohttp.BaseConnector = lent.connector  # type: ignore[assignment]
            else:
                connector = aiohttp.TCPConnector(
                    limit=self._max_connections,
                    limit_per_host=0,
                    ssl=True if self._ssl is None else self._ssl,
                )
            self._session = aiohttp.ClientSession(
                request_class=_TracedRequest,
                connector=connector,
                connector_owner=lent is None,
                # Cookies in Capillary's examples are browser leftovers: never send any.
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
                auto_decompress=True,
                trust_env=self._trust_env,
            )
        return self._session

    async def send(self, request: Request) -> Response:
        session = self._get_session()
        where = {"method": request.method, "url": request.url}
        failure: TransportError
        cause: BaseException
        progress = _Progress(request.on_sent)
        token = _PROGRESS.set(progress)
        try:
            async with session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.content,
                timeout=_cached_timeout(request.timeout),
                allow_redirects=False,
                raise_for_status=False,
                proxy=self._proxy,
            ) as resp:
                content = await _read_bounded(resp, request)
                if _CONTROL(b"\t".join([value for _, value in resp.raw_headers])):
                    raise _MalformedHeaderError  # aiohttp before 3.14 lets them through
                headers = {k.lower(): v for k, v in resp.headers.items()}
                return Response(status=resp.status, headers=headers, content=content)
        except asyncio.CancelledError:
            if not progress.started and progress.on_sent is not None:
                progress.on_sent()  # no progress reported (a patched session): assume it went
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            failure, cause = ConnectTimeoutError(f"timed out connecting to {_host(request)}"), exc
        except aiohttp.ClientConnectorError as exc:
            failure, cause = ConnectError(_connect_failure(exc, request)), exc
        except aiohttp.ClientHttpProxyError as exc:  # CONNECT refused: nothing reached the server
            failure = ConnectError(
                f"the proxy refused to connect to {_host(request)} ({exc.status})"
            )
            cause = exc
        except (aiohttp.ServerTimeoutError, asyncio.TimeoutError) as exc:
            failure, cause = ReadTimeoutError("timed out waiting for the response"), exc
        except (aiohttp.ClientError, OSError) as exc:
            # Never aiohttp's own text: its repr carries the request, headers
            # (credentials) included, and its str can echo what the server sent.
            failure, cause = ConnectionLostError(_lost(exc)), exc
        finally:
            _PROGRESS.reset(token)
        if progress.started and not progress.written and failure.sent:
            # Nothing was written (a proxy's CONNECT, a TLS handshake, a connection
            # that failed first): whatever went wrong, the server saw no request.
            failure = _unsent(failure, request)
        failure.method, failure.url = where["method"], where["url"]
        # Raised here, outside the handlers, so that the foreign error is only
        # the cause we chose to keep, never an implicit context.
        failure.__cause__ = _scrubbed(cause)
        failure.__suppress_context__ = True
        raise failure

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()  # on a lent pool, the pool stays open

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        session = self._session
        if session is not None and self._lent is None and not session.closed:
            _warn(
                "CapillaryClient was not closed: use 'async with' or 'await client.aclose()'",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )


async def _read_bounded(resp: aiohttp.ClientResponse, request: Request) -> bytes:
    """The body, refused past ``request.max_response_bytes`` (after decompression)."""
    limit = request.max_response_bytes
    if limit is None:
        return await resp.read()
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise ResponseTooLargeError(
            status=resp.status, limit=limit, method=request.method, url=request.url
        )
    if declared is not None and "content-encoding" not in resp.headers:
        return await resp.read()  # framed by its length, which is within the limit
    parts: list[bytes] = []
    size = 0
    async for block in resp.content.iter_chunked(1 << 16):
        size += len(block)
        if size > limit:
            raise ResponseTooLargeError(
                status=resp.status, limit=limit, method=request.method, url=request.url
            )
        parts.append(block)
    return b"".join(parts)


class _Progress:
    """How far one request got: written to the connection, or not yet."""

    __slots__ = ("on_sent", "started", "written")

    def __init__(self, on_sent: Callable[[], None] | None) -> None:
        self.on_sent = on_sent
        self.started = False  # aiohttp's tracing saw the request start (it reports progress)
        self.written = False


#: The progress of the request being made in this task (aiohttp builds and sends it here).
_PROGRESS: contextvars.ContextVar[_Progress | None] = contextvars.ContextVar(
    "capillary_progress", default=None
)


class _TracedRequest(aiohttp.ClientRequest):
    """aiohttp's request, telling ``_Progress`` when it is made and when it is written.

    Cheaper than a ``TraceConfig``, whose signals cost an await each at every
    step of every request. Made means aiohttp really handles it (not a
    patched session); written means a connection is ready and its headers go
    out now: any failure before that (connecting, a proxy's CONNECT, a TLS
    handshake) left the server without the request.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        progress = _PROGRESS.get()
        if progress is not None:
            progress.started = True

    async def send(self, conn: Any) -> aiohttp.ClientResponse:
        progress = _PROGRESS.get()
        if progress is not None and not progress.written:
            progress.written = True
            if progress.on_sent is not None:
                progress.on_sent()
        return await super().send(conn)


@functools.lru_cache(maxsize=64)
def _cached_timeout(timeout: Timeouts) -> aiohttp.ClientTimeout:
    return _client_timeout(timeout)


def _unsent(failure: TransportError, request: Request) -> TransportError:
    """A failure before the request was written: the server cannot have applied it."""
    if isinstance(failure, ReadTimeoutError):
        return ConnectTimeoutError(
            f"timed out before the request to {_host(request)} was sent "
            "(connecting, the TLS handshake or the proxy)"
        )
    return ConnectError(
        f"{failure} before the request to {_host(request)} was sent "
        "(connecting, the TLS handshake or the proxy)"
    )


def _host(request: Request) -> str:
    parts = urlsplit(request.url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


_DNS_ERROR: type[BaseException] | None = getattr(aiohttp, "ClientConnectorDNSError", None)


def _connect_failure(exc: aiohttp.ClientConnectorError, request: Request) -> str:
    host = _host(request)
    if _DNS_ERROR is not None and isinstance(exc, _DNS_ERROR):
        return f"could not resolve {host}"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return "could not connect to the proxy"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate of {host} could not be verified"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake with {host} failed"
    reason = exc.os_error.strerror if isinstance(exc.os_error, OSError) else None
    return f"could not connect to {host}" + (f" ({reason})" if reason else "")


#: A control character in a header value (a tab is allowed): not valid HTTP.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search


class _MalformedHeaderError(aiohttp.ClientError):
    """A header value holds a control character, which no valid response has."""


def _lost(exc: BaseException) -> str:
    if isinstance(exc, _MalformedHeaderError):
        return "the server sent a malformed HTTP response (a control character in a header)"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the response body was cut short or malformed"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "the server sent a malformed HTTP response"
    reason = exc.strerror if isinstance(exc, OSError) else None
    return "connection lost" + (f" ({reason})" if reason else f" ({type(exc).__name__})")


def _without_quotes(text: str) -> str:
    """A parser error's own words, without the bytes it quotes from the server.

    Those bytes may echo a secret, and only a piece of one (the parser quotes
    what one read gave it), which no redaction can recognise: they go whole.
    """
    for mark in ("b'", 'b"', "\n"):
        text = text.split(mark, 1)[0]
    return _secrets.redact(text.strip())


def _scrubbed(exc: BaseException) -> BaseException | None:
    """``exc`` (and what it chains) with the request and echoed secrets taken out, or None.

    The foreign error stays the cause for debugging, but aiohttp's
    ``ClientResponseError`` repr prints the request's headers, credentials
    included, and its parser errors quote what the server sent, which may echo
    them (so the quotes go). If a secret is still in any text of the chain
    after scrubbing, the chain is dropped.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        if isinstance(current, aiohttp.ClientResponseError):
            info = current.request_info
            # A proxy's URL (CONNECT refused) carries its user and password.
            current.request_info = aiohttp.RequestInfo(
                info.url.with_user(None),
                info.method,
                CIMultiDictProxy(CIMultiDict()),
                info.real_url.with_user(None),
            )
            current.args = (current.request_info, current.history)
            current.headers = None
        message = getattr(current, "message", None)
        if isinstance(message, str):
            with contextlib.suppress(AttributeError):
                current.message = _without_quotes(message)  # type: ignore[attr-defined]
        current.args = tuple(
            _without_quotes(arg) if isinstance(arg, str) else arg for arg in current.args
        )
        current = current.__cause__ or current.__context__
    for link in chain:
        try:
            texts = (str(link), repr(link))
        except Exception:  # noqa: BLE001 - a text that cannot be made cannot leak
            return None
        if any(_secrets.holds_secret(text) for text in texts):
            return None
    return exc


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class MockTransport:
    """Answer requests with a function: the handler may raise a ``TransportError``."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.closed = False

    async def send(self, request: Request) -> Response:
        if self.closed:
            raise RuntimeError("transport is closed")
        if request.on_sent is not None:
            request.on_sent()  # a handler is the server: it has the request
        result = self._handler(request)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, Response):
            raise TypeError("MockTransport handler must return a Response")
        limit = request.max_response_bytes
        if limit is not None and len(result.content) > limit:
            raise ResponseTooLargeError(
                status=result.status, limit=limit, method=request.method, url=request.url
            )
        return result

    async def aclose(self) -> None:
        self.closed = True
