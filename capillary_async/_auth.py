"""Credentials, and the per-client state that turns them into headers.

Credential objects are immutable and never show their secret: not in
``repr``, ``str``, logs or errors. Each client makes its own flow from them,
so an OAuth token is cached per client and renewed one request at a time.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import anyio

from . import _secrets
from ._config import Clock
from ._exceptions import (
    AuthenticationError,
    error_class_for_status,
    parse_error_envelope,
)

__all__ = [
    "Auth",
    "AuthFlow",
    "BasicAuth",
    "BearerToken",
    "OAuthCredentials",
    "TokenHeaderStyle",
]

TOKEN_PATH = "/v3/oauth/token/generate"  # noqa: S105 - a path, not a password
_REDACTED = "<redacted>"
_MD5_HEX = re.compile(r"[0-9a-fA-F]{32}")


class TokenHeaderStyle(enum.Enum):
    """Where a token goes: Capillary's pages disagree, so the caller chooses.

    ``OAUTH`` (the default, from the OAuth page) sends ``X-CAP-API-OAUTH-TOKEN``;
    ``BEARER`` (the updateExpiry page's example) sends ``Authorization: Bearer``
    together with ``X-CAP-API-AUTH``.
    """

    OAUTH = "oauth"
    BEARER = "bearer"

    def headers(self, token: str) -> dict[str, str]:
        """The headers that carry ``token`` in this style."""
        if self is TokenHeaderStyle.BEARER:
            return {"Authorization": f"Bearer {token}", "X-CAP-API-AUTH": token}
        return {"X-CAP-API-OAUTH-TOKEN": token}


# What an OAuth flow needs from the client: POST JSON without auth, get
# (status, parsed body, request id) back, with the client's retries.
PostJSON = Callable[[str, Mapping[str, Any]], Awaitable["tuple[int, Any, str | None]"]]


class AuthFlow(Protocol):
    """A client's live authentication state."""

    async def headers(self) -> dict[str, str]:
        """Headers for the next request (may fetch a token)."""
        ...

    async def renew(self, used: Mapping[str, str]) -> bool:
        """After a 401/498 for a request sent with ``used``: True if repeating may help."""
        ...


class Auth(Protocol):
    """Credentials: anything that can make a flow for a client."""

    def create_flow(self, post: PostJSON, clock: Clock) -> AuthFlow:
        """The per-client state for these credentials."""
        ...


class _StaticFlow:
    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers
        #: The same headers for every request: the client reads them without an await.
        self.static_headers = headers

    async def headers(self) -> dict[str, str]:
        return self._headers

    async def renew(self, used: Mapping[str, str]) -> bool:
        return False

    def __repr__(self) -> str:
        return "<static auth flow>"


class BasicAuth:
    """Basic auth as Capillary defines it: the till username and the MD5 of the password.

    Only the digest is kept. ``BasicAuth.from_md5`` takes a digest directly for
    users who were never given the plain password.
    """

    __slots__ = ("__weakref__", "_digest", "_username")
    _digest: str
    _username: str

    def __init__(self, username: str, password: str) -> None:
        if not isinstance(password, str) or not password:
            raise ValueError("password: must be a non-empty string")
        self._set(username, hashlib.md5(password.encode("utf-8")).hexdigest())  # noqa: S324 - Capillary's rule

    @classmethod
    def from_md5(cls, username: str, password_md5: str) -> BasicAuth:
        """Credentials from the password's MD5 hex digest, sent as it is (lower-cased)."""
        if not isinstance(password_md5, str) or not _MD5_HEX.fullmatch(password_md5):
            raise ValueError("password_md5: must be 32 hexadecimal characters (an MD5 digest)")
        self = cls.__new__(cls)
        self._set(username, password_md5.lower())
        return self

    def _set(self, username: str, digest: str) -> None:
        if not isinstance(username, str) or not username or ":" in username:
            raise ValueError("username: must be a non-empty string without ':'")
        object.__setattr__(self, "_username", username)
        object.__setattr__(self, "_digest", digest)
        _secrets.hold(self, digest, self.header_value.split(" ", 1)[1])
        _secrets.hold(self, f"{username}:{digest}", runs=False)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("BasicAuth is immutable")

    @property
    def username(self) -> str:
        """The till username."""
        return self._username

    @property
    def header_value(self) -> str:
        """The ``Authorization`` header value (a secret: do not log it)."""
        raw = f"{self._username}:{self._digest}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def create_flow(self, post: PostJSON, clock: Clock) -> AuthFlow:
        return _StaticFlow({"Authorization": self.header_value})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BasicAuth):
            return NotImplemented
        return (self._username, self._digest) == (other._username, other._digest)

    def __hash__(self) -> int:
        return hash((BasicAuth, self._username, self._digest))

    def __repr__(self) -> str:
        return f"BasicAuth(username={self._username!r}, password={_REDACTED})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("BasicAuth is not picklable: credentials stay in memory")


class BearerToken:
    """A token the caller obtains and renews; sent as ``header_style`` says."""

    __slots__ = ("__weakref__", "_style", "_token")
    _style: TokenHeaderStyle
    _token: str

    def __init__(
        self, token: str, *, header_style: TokenHeaderStyle = TokenHeaderStyle.OAUTH
    ) -> None:
        if not isinstance(token, str) or not token.strip():
            raise ValueError("token: must be a non-empty string")
        if not _usable_token(token):
            raise ValueError(
                "token: must be visible ASCII without spaces or line breaks, "
                f"at most {_MAX_TOKEN:,} characters (HTTP headers carry nothing else)"
            )
        object.__setattr__(self, "_token", token)
        object.__setattr__(self, "_style", TokenHeaderStyle(header_style))
        _secrets.hold(self, token)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("BearerToken is immutable")

    @property
    def header_style(self) -> TokenHeaderStyle:
        """Where the token is sent."""
        return self._style

    def create_flow(self, post: PostJSON, clock: Clock) -> AuthFlow:
        return _StaticFlow(self._style.headers(self._token))

    def __repr__(self) -> str:
        return f"BearerToken(token={_REDACTED}, header_style={self._style.name})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("BearerToken is not picklable: credentials stay in memory")


class OAuthCredentials:
    """A client key and secret, exchanged for short-lived tokens at ``/v3/oauth/token/generate``.

    The token is cached and renewed before ``ttlSeconds`` runs out (at 80% of
    its life, and at most a minute early), one renewal at a time however many
    requests wait. A 401 or 498 renews once and repeats the request.
    """

    __slots__ = ("__weakref__", "_key", "_secret", "_style")
    _key: str
    _secret: str
    _style: TokenHeaderStyle

    def __init__(
        self,
        key: str,
        secret: str,
        *,
        header_style: TokenHeaderStyle = TokenHeaderStyle.OAUTH,
    ) -> None:
        if not isinstance(key, str) or not key.strip():
            raise ValueError("key: must be a non-empty string")
        if not isinstance(secret, str) or not secret:
            raise ValueError("secret: must be a non-empty string")
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_secret", secret)
        _secrets.hold(self, secret)
        object.__setattr__(self, "_style", TokenHeaderStyle(header_style))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("OAuthCredentials is immutable")

    @property
    def key(self) -> str:
        """The client key (not a secret: it names the client)."""
        return self._key

    @property
    def header_style(self) -> TokenHeaderStyle:
        """Where tokens are sent."""
        return self._style

    def create_flow(self, post: PostJSON, clock: Clock) -> AuthFlow:
        return _OAuthFlow(self, post, clock)

    def _token_request(self) -> dict[str, str]:
        return {"key": self._key, "secret": self._secret}

    def __repr__(self) -> str:
        return (
            f"OAuthCredentials(key={self._key!r}, secret={_REDACTED}, "
            f"header_style={self._style.name})"
        )

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("OAuthCredentials is not picklable: credentials stay in memory")


class _OAuthFlow:
    def __init__(self, creds: OAuthCredentials, post: PostJSON, clock: Clock) -> None:
        self._creds = creds
        self._post = post
        self._clock = clock
        self._token: str | None = None
        self._release_token: Callable[[], object] = lambda: None
        self._renew_at = 0.0
        self._lock = anyio.Lock()

    def _valid(self) -> str | None:
        if self._token is not None and self._clock.monotonic() < self._renew_at:
            return self._token
        return None

    async def _current(self) -> str:
        token = self._valid()
        if token is not None:
            return token
        async with self._lock:  # single flight: waiters find the fresh token
            token = self._valid()
            if token is None:
                token = await self._fetch()
            return token

    async def _fetch(self) -> str:
        started = self._clock.monotonic()
        status, body, request_id = await self._post(TOKEN_PATH, self._creds._token_request())
        data = body.get("data") if isinstance(body, Mapping) else None
        errors = body.get("errors") if isinstance(body, Mapping) else None
        token = data.get("accessToken") if isinstance(data, Mapping) else None
        ttl = data.get("ttlSeconds") if isinstance(data, Mapping) else None
        if isinstance(token, str) and token:
            # Known as a secret before any text about this answer is written,
            # even if the answer is refused below; the token it replaces joins
            # the recently used ones.
            self._release_token()
            self._release_token = _secrets.hold(self, token)
        if errors or not (200 <= status < 300):
            codes, message = parse_error_envelope(body)
            cls = error_class_for_status(status) if status >= 500 else AuthenticationError
            raise cls(  # no body attached: a token answer is not for keeping
                message or "token request refused",
                status=status,
                codes=codes,
                request_id=request_id,
            )
        if not isinstance(token, str) or not token:
            # The body is not attached: it may hold a token in an unexpected place.
            raise AuthenticationError(
                "token response carried no data.accessToken", status=status, request_id=request_id
            )
        if not _usable_token(token):
            # Sent on, it would fail every request with a raw ValueError (or
            # smuggle a header in): refused here, and never quoted.
            raise AuthenticationError(
                "the token endpoint answered an access token that cannot be sent in an HTTP "
                f"header (only visible ASCII, at most {_MAX_TOKEN:,} characters); refusing it",
                status=status,
                request_id=request_id,
            )
        life = _lifetime(ttl)
        self._token = token
        self._renew_at = started + life - min(60.0, life * 0.2)
        return token

    async def headers(self) -> dict[str, str]:
        return self._creds._style.headers(await self._current())

    async def renew(self, used: Mapping[str, str]) -> bool:
        used_token = _token_in(used)
        async with self._lock:
            # Only drop the token that failed: fifty requests refused with the
            # same expired token cause one renewal, not fifty.
            if self._token is not None and self._token == used_token:
                self._token = None
        return True

    def __repr__(self) -> str:
        return f"<OAuth flow key={self._creds.key!r} token={'set' if self._token else 'none'}>"


def _lifetime(ttl: object) -> float:
    """``ttlSeconds`` as seconds: 300 when absent or odd, at most a day (a 400-digit
    number must not overflow a float, nor park a token for ever)."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        return 300.0
    return float(min(ttl, _MAX_LIFE))


_MAX_LIFE = 86_400.0
_MAX_TOKEN = 8192
_TOKEN = re.compile(r"[\x21-\x7e]+")


def _usable_token(token: str) -> bool:
    return len(token) <= _MAX_TOKEN and _TOKEN.fullmatch(token) is not None


def _token_in(headers: Mapping[str, str]) -> str | None:
    for name, value in headers.items():
        lower = name.lower()
        if lower == "x-cap-api-oauth-token":
            return value
        if lower == "authorization" and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return None
