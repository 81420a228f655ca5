"""The one exception tree of capillary_async.

CapillaryError
├── TransportError               the HTTP exchange itself failed
│   ├── ConnectError             never reached the server: safe to repeat
│   ├── ConnectTimeoutError           never reached the server: safe to repeat
│   ├── ReadTimeoutError         sent, no answer in time: outcome unknown
│   ├── ConnectionLostError      sent, connection dropped or answer malformed: outcome unknown
│   ├── ResponseTooLargeError    answered with a body over ``max_response_bytes``: not read
│   └── DeadlineExceededError    the call's ``deadline`` ran out (``attempts``; ``sent``)
├── APIError                     the server answered with an error (``retry_after`` if it said)
│   ├── BadRequestError          400, or a top-level ``errors`` envelope
│   ├── AuthenticationError      401, 498 (token expired), bad OAuth key/secret or token
│   ├── PermissionDeniedError    403
│   ├── NotFoundError            404
│   ├── RateLimitError           429
│   └── ServerError              5xx, 521 included
├── OutcomeUnknownError          not repeated: repeating a non-idempotent request
│                                whose fate is unknown could apply it twice
└── ValidationError              client-side checks (also a ``ValueError``)

Every message is written here or at the raise site from what we choose to
show: never from a foreign exception's text or repr (aiohttp's carries the
request headers), and server text only as a bounded ``excerpt``.

Usage mistakes (a closed client, an ``http://`` URL) are plain ``ValueError`` /
``RuntimeError``: they are bugs to fix, not conditions to handle.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from . import _secrets

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "CapillaryError",
    "ConnectError",
    "ConnectTimeoutError",
    "ConnectionLostError",
    "DeadlineExceededError",
    "InputError",
    "JournalError",
    "JournalIOError",
    "JournalMismatchError",
    "NotFoundError",
    "OutcomeUnknownError",
    "PermissionDeniedError",
    "RateLimitError",
    "ReadTimeoutError",
    "ResponseTooLargeError",
    "ServerError",
    "TransportError",
    "ValidationError",
]


class CapillaryError(Exception):
    """Base of every error this package raises on purpose."""

    request_id: str | None = None
    #: Raised before the request itself went out (while getting a token, say):
    #: whatever it says, the request cannot have been applied.
    before_send: bool = False


class TransportError(CapillaryError):
    """The HTTP exchange failed before a complete response arrived."""

    #: True when the request may have reached the server and been applied.
    sent: bool = True

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        super().__init__(message)
        self.method = method
        self.url = url


class ConnectError(TransportError):
    """The connection could not be opened: the server saw nothing."""

    sent = False


class ConnectTimeoutError(TransportError):
    """Opening the connection took too long: the server saw nothing."""

    sent = False


class ReadTimeoutError(TransportError):
    """The request went out but no full answer came in time."""


class ConnectionLostError(TransportError):
    """The connection dropped after the request was (perhaps) sent, or the answer was not HTTP."""


class ResponseTooLargeError(TransportError):
    """The answer's body was larger than ``max_response_bytes``; reading stopped there.

    The request reached the server (``status`` is what it answered), so a
    non-idempotent one may have been applied. It is not retried: a server that
    sent too much once will do it again.
    """

    def __init__(self, *, status: int, limit: int, method: str = "", url: str = "") -> None:
        super().__init__(
            f"the response body (HTTP {status}) is larger than max_response_bytes={limit:,}; "
            "not read",
            method=method,
            url=url,
        )
        self.status = status
        self.limit = limit


class DeadlineExceededError(TransportError):
    """The call's ``deadline`` ran out: retries, backoff and pace waits included.

    ``attempts`` were made; ``sent`` says whether the last one may have reached
    the server (it was written and no answer came). A non-idempotent request
    that may have been applied raises ``OutcomeUnknownError`` with this as its
    cause instead.
    """

    def __init__(
        self, message: str, *, attempts: int, sent: bool, method: str = "", url: str = ""
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.attempts = attempts
        self.sent = sent


class APIError(CapillaryError):
    """The server answered with an error status or error envelope.

    ``codes`` are Capillary's numeric error codes from the ``errors`` envelope
    (empty when the body carried none); ``request_id`` is what Capillary
    support asks for.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        codes: Sequence[int] = (),
        body: Any = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        message = excerpt(message)
        super().__init__(message)
        self.message = message
        #: The server's ``Retry-After`` in seconds (429, 503...), if it sent one.
        self.retry_after = retry_after
        self.status = status
        self.codes: tuple[int, ...] = tuple(codes)
        self.body = body
        self.request_id = request_id
        #: The answer's headers (names lower-case; values bounded, credentials redacted).
        self.headers: Mapping[str, str] = {
            name: excerpt(value, 2000) for name, value in (headers or {}).items()
        }

    @property
    def code(self) -> int | None:
        """The first Capillary error code, the one that usually matters."""
        return self.codes[0] if self.codes else None

    def __str__(self) -> str:
        parts = [f"HTTP {self.status}"]
        if self.codes:
            parts.append("code " + ", ".join(str(c) for c in self.codes))
        text = f"{self.message} ({'; '.join(parts)})"
        if self.request_id:
            text += f" [request id {self.request_id}]"
        return text


class BadRequestError(APIError):
    """400, or a request refused as a whole by a top-level ``errors`` envelope."""


class AuthenticationError(APIError):
    """401 (bad credentials or token), 498 (token expired), or a refused OAuth key."""


class PermissionDeniedError(APIError):
    """403: the credentials lack the access group for this API."""


class NotFoundError(APIError):
    """404."""


class RateLimitError(APIError):
    """429. ``retry_after`` is the server's ``Retry-After`` in seconds, if it sent one."""


class ServerError(APIError):
    """5xx, including Capillary's 521 ("multiple actions for the same customer")."""


class OutcomeUnknownError(CapillaryError):
    """A request may or may not have been applied, and repeating it was not safe.

    Raised instead of retrying a non-idempotent request (an updateExpiry with
    FIXED_DAYS or FIXED_MONTHS items) after a timeout, a dropped connection, a
    502 or a 504. The original error is ``__cause__`` and ``cause``.
    """

    def __init__(self, message: str, *, cause: CapillaryError) -> None:
        super().__init__(message)
        self.cause = cause
        self.request_id = cause.request_id


class ValidationError(CapillaryError, ValueError):
    """Input that Capillary would refuse, caught before anything is sent.

    ``field`` names the offending field (the wire path, such as
    ``expiryDate.expiryValue``, when the input came from wire data), ``reason``
    says what is wrong, and ``code`` is the Capillary error code the server
    would have answered, where one exists.
    """

    def __init__(self, field: str, reason: str, *, code: int | None = None) -> None:
        self.field = field
        self.reason = reason
        self.code = code
        super().__init__(self._text())

    def _text(self) -> str:
        text = f"{self.field}: {self.reason}" if self.field else self.reason
        if self.code is not None:
            text += f" (Capillary code {self.code})"
        return text

    def __str__(self) -> str:
        return self._text()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_validation_error, (self.field, self.reason, self.code))


class InputError(CapillaryError, ValueError):
    """An input file cannot be used at all (its CSV header, no rows): nothing was sent."""


class JournalError(CapillaryError):
    """A job's journal cannot be used (in use, damaged, not a journal): nothing was sent."""


class JournalMismatchError(JournalError):
    """The journal belongs to another job: another input, endpoint or target."""


class JournalIOError(JournalError):
    """The journal could not be written (a full disk, an I/O error) or read during a run."""


def _rebuild_validation_error(field: str, reason: str, code: int | None) -> ValidationError:
    return ValidationError(field, reason, code=code)


#: The longest text quoted from a server or an input in a message, a report or a journal.
MAX_QUOTED = 1000


def excerpt(text: object, limit: int = MAX_QUOTED) -> str:
    """A bounded, harmless quote of foreign text (a body, an ``errorMessage``, an input value).

    Credentials the process holds are replaced (a server may echo them); what
    is past ``limit`` characters is cut and counted, never copied; control and
    other unprintable characters (terminal escapes, lone surrogates from a
    ``"\\ud800"`` JSON escape) are written as escapes, so the text can go to
    a terminal, a UTF-8 file or SQLite as it is.
    """
    try:
        value = text if isinstance(text, str) else str(text)
    except (ValueError, RecursionError):  # past Python's digit limit, or nested too deep
        value = f"<{type(text).__name__} too large to show>"
    if len(value) > limit:
        # Redact before cutting, with room for a secret that straddles the cut.
        head = _secrets.redact(value[: limit + _secrets.longest()])[:limit]
        value = f"{head}... ({len(value) - limit:,} more characters)"
    else:
        value = _secrets.redact(value)
    if not value.isprintable():
        value = "".join(ch if ch.isprintable() else _escape(ch) for ch in value)
    return value


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


#: Statuses that mean "slow down" or "not processed now": worth another attempt.
RETRY_STATUSES = frozenset({429, 502, 503, 504, 521})
#: 5xx statuses that say the request was not processed (Capillary's 503 and 521).
_NOT_PROCESSED = frozenset({503, 521})


def is_ambiguous(exc: BaseException) -> bool:
    """Whether a failed request may nevertheless have been applied by the server.

    A 500 (or 502, 504...) can come after the change was made; only 503 and
    521 say it was not processed. A 4xx is a refusal; a status outside 2xx and
    4xx (a redirect, 1xx, an odd number) says nothing about what was done.
    """
    if getattr(exc, "before_send", False):
        return False
    if isinstance(exc, OutcomeUnknownError):
        return True
    if isinstance(exc, TransportError):
        return exc.sent
    if isinstance(exc, APIError):
        return is_ambiguous_status(exc.status)
    return False


def is_ambiguous_status(status: int) -> bool:
    """Whether an answer with this status leaves open what was done (500, 502, 504, 3xx...)."""
    return not (200 <= status < 300 or 400 <= status < 500 or status in _NOT_PROCESSED)


def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt may succeed (the idempotency rule is the caller's)."""
    if isinstance(exc, ResponseTooLargeError):
        return False
    if isinstance(exc, TransportError):
        return True
    return isinstance(exc, APIError) and exc.status in RETRY_STATUSES


_STATUS_CLASSES: Mapping[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
    498: AuthenticationError,
}


def error_class_for_status(status: int) -> type[APIError]:
    """The ``APIError`` subclass for an HTTP status (``APIError`` itself for odd ones)."""
    if status in _STATUS_CLASSES:
        return _STATUS_CLASSES[status]
    if status >= 500:
        return ServerError
    if 200 <= status < 300:
        # A 2xx carrying a top-level ``errors`` envelope: the request was refused.
        return BadRequestError
    return APIError


def parse_error_envelope(body: Any) -> tuple[list[int], str]:
    """Codes and joined messages of a v2 ``{"errors": [{"code", "message"}]}`` body."""
    codes: list[int] = []
    messages: list[str] = []
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if isinstance(errors, list):
        for entry in errors[:_MAX_ERRORS]:
            if not isinstance(entry, Mapping):
                continue
            code = entry.get("code")
            if type(code) is int and abs(code) < 2**63:
                codes.append(code)
            elif isinstance(code, str) and code.isascii() and code.isdigit() and len(code) < 19:
                codes.append(int(code))
            message = entry.get("message")
            if isinstance(message, str) and message:
                messages.append(excerpt(message))
    return codes, "; ".join(messages)


#: Entries of an ``errors`` envelope read for a message: a hostile list is not copied whole.
_MAX_ERRORS = 20


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (None if absent or unreadable)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):  # a year 99999999999, say
        return None


def api_error(
    status: int,
    body: Any,
    *,
    request_id: str | None,
    retry_after: str | None = None,
    where: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> APIError:
    """The ``APIError`` a response stands for.

    ``where`` (method and URL, without a query) is named when the answer
    says the endpoint itself is not there: a 404 or 405 without Capillary's codes.
    """
    codes, message = parse_error_envelope(body)
    if not codes and status in (404, 405) and where is not None:
        message = (
            f"{where} answered {status} ({_REASONS[status]}) without a Capillary error code: "
            "there is no such endpoint; check the base URL or cluster"
        )
    elif not message:
        message = _REASONS.get(status, "request failed")
    return error_class_for_status(status)(
        message,
        status=status,
        codes=codes,
        body=body,
        request_id=request_id,
        retry_after=parse_retry_after(retry_after),
        headers=headers,
    )


_REASONS: Mapping[int, str] = {
    400: "bad request",
    401: "authentication failed",
    403: "permission denied",
    404: "not found",
    405: "method not allowed",
    415: "unsupported media type",
    429: "rate limited",
    461: "search busy",
    498: "token expired",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
    521: "multiple actions are running for the same customer",
}
