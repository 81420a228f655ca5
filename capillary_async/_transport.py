"""The bottom layer: send one HTTP request, get one response, know nothing of Capillary.

``AiohttpTransport`` is the real one (one pooled session, no cookie jar);
``MockTransport`` answers from a function, for tests about our logic rather
than aiohttp's. aiohttp and OS errors are translated into ``TransportError``
here and nowhere else.
"""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import aiohttp
import attrs

from ._config import DEFAULT_TIMEOUTS, Timeouts
from ._exceptions import (
    ConnectError,
    ConnectionLostError,
    ConnectTimeoutError,
    ReadTimeoutError,
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

    A session passed in belongs to the caller and is never closed here.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections: must be at least 1")
        self._max_connections = max_connections
        self._session = session
        self._owns_session = session is None
        self._closed = False

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The session in use, once one exists."""
        return self._session

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("transport is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                # Cookies in Capillary's examples are browser leftovers: never send any.
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
                auto_decompress=True,
                trust_env=False,
            )
        return self._session

    async def send(self, request: Request) -> Response:
        session = self._get_session()
        where = {"method": request.method, "url": request.url}
        try:
            async with session.request(
                request.method,
                request.url,
                headers=dict(request.headers),
                data=request.content,
                timeout=_client_timeout(request.timeout),
                allow_redirects=False,
            ) as resp:
                content = await resp.read()
                headers = {k.lower(): v for k, v in resp.headers.items()}
                return Response(status=resp.status, headers=headers, content=content)
        except aiohttp.ConnectionTimeoutError as exc:
            raise ConnectTimeoutError(f"timed out connecting: {exc}", **where) from exc
        except aiohttp.ClientConnectorError as exc:
            raise ConnectError(f"could not connect: {exc.os_error}", **where) from exc
        except (aiohttp.ServerTimeoutError, asyncio.TimeoutError) as exc:
            raise ReadTimeoutError("timed out waiting for the response", **where) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionLostError(f"connection lost: {exc!r}", **where) from exc

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        session = self._session
        if session is not None and self._owns_session and not session.closed:
            _warn(
                "CapillaryClient was not closed: use 'async with' or 'await client.aclose()'",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class MockTransport:
    """Answer requests with a function: the handler may raise a ``TransportError``."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.closed = False

    async def send(self, request: Request) -> Response:
        if self.closed:
            raise RuntimeError("transport is closed")
        result = self._handler(request)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, Response):
            raise TypeError("MockTransport handler must return a Response")
        return result

    async def aclose(self) -> None:
        self.closed = True
