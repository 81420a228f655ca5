"""Configuration as small frozen values: clusters, timeouts, retry policy, clock."""

from __future__ import annotations

import base64
import enum
import ipaddress
import math
import random
import ssl as ssl_module
import time
from collections.abc import Callable
from datetime import timedelta, timezone, tzinfo
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiohttp
import anyio
import attrs

from ._exceptions import excerpt
from ._types import _Unset

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUTS",
    "Clock",
    "Cluster",
    "RetryPolicy",
    "SystemClock",
    "Timeouts",
    "resolve_base_url",
]

_IST = timezone(timedelta(hours=5, minutes=30), "IST")


class Cluster(enum.Enum):
    """Capillary's documented API hosts, with the cluster timezone where it is known.

    The timezone is the one the server uses for ``expiryValue`` dates and the
    ``...ISO`` timestamps it answers with.
    """

    EU = ("https://eu.api.capillarytech.com", timezone.utc)
    APAC = ("https://apac.api.capillarytech.com", _IST)
    APAC2 = ("https://apac2.api.capillarytech.com", None)
    SEA = ("https://sea.api.capillarytech.com", None)
    US = ("https://us.api.capillarytech.com", None)
    USHC = ("https://ushc.api.capillarytech.com", None)
    NORTH_AMERICA = ("https://north-america.api.capillarytech.com", None)
    CN = ("https://api.capillarytech.cn.com", None)

    def __init__(self, base_url: str, tz: tzinfo | None) -> None:
        self.base_url = base_url
        self.timezone = tz

    @classmethod
    def from_name(cls, name: str) -> Cluster:
        """Look a cluster up by name, case-insensitively (``"eu"``, ``"north-america"``)."""
        key = name.strip().upper().replace("-", "_")
        try:
            return cls[key]
        except KeyError:
            names = ", ".join(m.name for m in cls)
            raise ValueError(f"unknown cluster {name!r}: expected one of {names}") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def checked_deadline(value: float | None) -> float | None:
    """A call's deadline: seconds (a positive, finite number), or None for none."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf
    ):
        raise ValueError("deadline: must be a positive number of seconds, or None")
    return None if value is None else float(value)


def is_loopback_url(url: str) -> bool:
    """Whether a URL's host is loopback (a local test server)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return host is not None and _is_loopback(host)


def resolve_base_url(base: str | Cluster, *, allow_insecure: bool = False) -> str:
    """Turn a cluster or URL into a base URL without a trailing slash.

    Plain ``http://`` would send credentials in clear text, so it is refused
    unless the host is loopback (a local emulator) or the caller insists.
    """
    if isinstance(base, Cluster):
        return base.base_url
    if not isinstance(base, str) or not base:
        raise ValueError("base_url: expected a Cluster or an https:// URL")
    try:
        parts = urlsplit(base)
        host = parts.hostname
        parts.port  # noqa: B018 - a bad port raises here, not at the first request
    except ValueError:
        raise ValueError("base_url: not a URL (bad host or port)") from None
    if parts.username is not None or parts.password is not None:
        # Never quoted: it holds a password. Credentials go in auth=.
        raise ValueError("base_url: must not carry a user name or password; pass them as auth=")
    shown = excerpt(base, 200)
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"base_url: {shown!r} is not an http(s) URL with a host")
    if parts.query or parts.fragment:
        raise ValueError(f"base_url: {shown!r} must not carry a query or fragment")
    if parts.scheme == "http" and not allow_insecure and not _is_loopback(host):
        raise ValueError(
            f"base_url: {shown!r} is plain http to a non-loopback host, which would send "
            "credentials in clear text; use https:// or pass allow_insecure=True"
        )
    return base.rstrip("/")


def resolve_proxy(proxy: str) -> tuple[str, str, tuple[str, ...]]:
    """A proxy URL checked: (the URL, the URL as it may be shown, its secret forms).

    Credentials in it (``http://user:password@proxy:3128``) are never shown:
    the password, ``user:password`` and its base64 (the ``Proxy-Authorization``
    header's value) are redacted from every text of ours.
    """
    if not isinstance(proxy, str) or not proxy:
        raise ValueError("proxy: expected an http:// or https:// URL")
    try:
        parts = urlsplit(proxy)
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise ValueError("proxy: not a URL (bad host or port)") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("proxy: expected an http:// or https:// URL with a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("proxy: must be scheme://[user:password@]host[:port], with nothing after")
    where = f"[{host}]" if ":" in host else host
    shown = (
        f"{parts.scheme}://"
        + ("<redacted>@" if parts.username or parts.password else "")
        + where
        + (f":{port}" if port else "")
    )
    secrets: tuple[str, ...] = ()
    if parts.password or parts.username:
        # A user alone (``http://TOKEN@proxy``) is the secret; so are the forms
        # as written in the URL (``%40`` for ``@``) and as sent (base64).
        user = unquote(parts.username or "")
        password = unquote(parts.password or "")
        pair = f"{user}:{password}"
        raw = parts.password or parts.username or ""
        secrets = (password or user, raw, pair, base64.b64encode(pair.encode()).decode())
    return proxy, shown, secrets


@attrs.frozen(kw_only=True)
class Timeouts:
    """Per-request time limits in seconds; ``None`` disables one.

    ``connect`` bounds opening a connection (a failure there is always safe to
    retry); ``total`` bounds the whole exchange, connection included.
    """

    connect: float | None = 10.0
    total: float | None = 60.0

    def __attrs_post_init__(self) -> None:
        for name in ("connect", "total"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"timeout.{name}: must be a positive number of seconds or None")

    @classmethod
    def coerce(cls, value: Timeouts | float | None) -> Timeouts:
        """Accept a ``Timeouts``, a number (the total) or ``None`` (no limits)."""
        if isinstance(value, Timeouts):
            return value
        if value is None:
            return cls(connect=None, total=None)
        return cls(connect=min(10.0, float(value)), total=float(value))


DEFAULT_TIMEOUTS = Timeouts()
#: Each attempt of ``client.check()``: a probe must answer quickly, or say it cannot.
CHECK_TIMEOUTS = Timeouts(connect=10.0, total=15.0)

#: The largest response body read by default: far above any real answer (a
#: 100-item updateExpiry answer is about 60 KB), far below what hurts a process.
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When and how long to wait before repeating a failed request.

    Backoff is exponential with full jitter (a uniform draw between zero and
    ``min(backoff_cap, backoff_base * 2 ** (attempt - 1))``), so many workers
    that fail together do not come back together. A server's ``Retry-After``
    wins over the backoff when ``respect_retry_after`` is set, capped at
    ``max_retry_after`` so a confused server cannot park a job for hours.
    ``max_attempts`` counts the first try: 1 disables retries.
    """

    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    jitter: bool = True
    respect_retry_after: bool = True
    max_retry_after: float = 120.0

    def __attrs_post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("retry.max_attempts: must be at least 1 (1 disables retries)")
        values = (self.backoff_base, self.backoff_cap, self.max_retry_after)
        if not all(0 <= value < math.inf for value in values):  # NaN fails too
            raise ValueError(
                "retry: backoff_base, backoff_cap and max_retry_after must be finite and >= 0"
            )

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1)

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        *,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None and self.respect_retry_after:
            return max(0.0, min(retry_after, self.max_retry_after))
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** (attempt - 1))
        return ceiling * rand() if self.jitter else ceiling


class Clock(Protocol):
    """Time as the client sees it; inject a fake one to test renewal and backoff."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


def network_options(  # noqa: PLR0917 - the client's network options, checked together
    base_url: str,
    session: aiohttp.ClientSession | None,
    max_connections: int | _Unset,
    proxy: str | None,
    ssl: ssl_module.SSLContext | bool | None,
    trust_env: bool,
    allow_insecure: bool,
) -> dict[str, Any]:
    """Network options checked: refused with ``session=``, ``ssl=False`` off loopback."""
    if session is not None and not isinstance(session, aiohttp.ClientSession):
        raise TypeError("session: expected an aiohttp.ClientSession, or None")
    if session is not None:
        given = [
            name
            for name, value in (
                ("max_connections", not isinstance(max_connections, _Unset)),
                ("proxy", proxy is not None),
                ("ssl", ssl is not None),
                ("trust_env", trust_env),
            )
            if value
        ]
        if given:
            raise ValueError(
                f"{given[0]}: cannot apply to a session passed in (it lends its connection "
                "pool, made with its own settings); set it on that session's connector, or "
                "let the client make its own session"
            )
    if not isinstance(trust_env, bool):
        raise TypeError("trust_env: must be True or False")
    if ssl is not None and not isinstance(ssl, (bool, ssl_module.SSLContext)):
        raise TypeError("ssl: expected an ssl.SSLContext, True, False or None")
    if ssl is False and not allow_insecure and not is_loopback_url(base_url):
        raise ValueError(
            "ssl: False turns certificate checks off, which is for a loopback test server "
            "only; trust a CA with an ssl.SSLContext instead (or pass allow_insecure=True)"
        )
    if proxy is None:
        return {}
    _, shown, secrets = resolve_proxy(proxy)
    return {"shown": shown, "secrets": secrets}
