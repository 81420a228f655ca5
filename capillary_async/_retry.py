"""The one retry policy: what to do after a failed attempt, for single calls and bulk alike.

``decide`` reads an error, the attempt number and whether the items may be
sent twice, and answers retry (after how long), split, give up (as failed or
unknown) or stop. The client acts on it for one request; the bulk engine for
one chunk, adding what only a job has (a retry budget, a shared pace).
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable

import attrs

from ._config import RetryPolicy
from ._exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    CapillaryError,
    PermissionDeniedError,
    RateLimitError,
    is_ambiguous,
    is_retryable,
)
from ._logs import get_logger

__all__ = [
    "Action",
    "Decision",
    "OnRetry",
    "RetryEvent",
    "decide",
    "maybe_applied",
    "notify",
    "wrong_endpoint",
]

logger = get_logger("client")


@attrs.frozen(kw_only=True)
class RetryEvent:
    """What ``on_retry`` is told, before the wait of each retry (a call's or a bulk chunk's)."""

    method: str
    path: str
    #: The attempt that failed (1-based); the next one is ``attempt + 1``.
    attempt: int
    #: Seconds until the next attempt.
    delay: float
    #: Why: the error the attempt failed with (a 503, a timeout...).
    error: CapillaryError
    request_id: str | None
    #: The retry is of a bulk job's chunk (of ``items`` items), not of a single call.
    items: int | None = None


#: ``on_retry``: a function or coroutine function taking a ``RetryEvent``.
OnRetry = Callable[[RetryEvent], object]


async def notify(on_retry: OnRetry | None, event: RetryEvent) -> None:
    """Tell ``on_retry`` of a retry; a hook that fails is logged, never the call's failure."""
    if on_retry is None:
        return
    try:
        result = on_retry(event)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:  # noqa: BLE001 - a counter's bug must not fail a payment
        logger.warning("on_retry raised %s; the retry goes ahead", type(exc).__name__)


class Action(enum.Enum):
    """What to do with the request (or chunk) that failed."""

    #: Send it again after ``Decision.delay`` seconds.
    RETRY = "retry"
    #: A chunk refused as a whole: send its halves, to find the items at fault.
    SPLIT = "split"
    #: Give up: not applied (``Decision.verdict`` when the refusal is about this very item).
    FAIL = "fail"
    #: Give up: it may have been applied, and nobody can tell.
    UNKNOWN = "unknown"
    #: Give up, and send nothing more: the credentials were refused, or the
    #: endpoint is not there (every further request would fail the same way).
    STOP = "stop"


@attrs.frozen
class Decision:
    """``decide``'s answer."""

    action: Action
    #: Seconds to wait before the retry.
    delay: float = 0.0
    #: Every request waits ``delay``, not only this one (a 429, a ``Retry-After``).
    pause: bool = False
    #: A 429: the pace itself should slow down.
    slow_down: bool = False
    #: For FAIL: the server's verdict on the item itself (a one-item request refused
    #: in Capillary's own words), final for a resumed job.
    verdict: bool = False
    #: This or an earlier attempt may have been applied: a later refusal cannot undo it.
    maybe_applied: bool = False
    #: Why it ended unknown without a retry, when that is the reason.
    not_repeated: bool = False


def wrong_endpoint(error: CapillaryError) -> bool:
    """A 404 or 405 without Capillary's error codes: the URL is wrong, not the item.

    Capillary refuses an item it does not know in its own words (codes); a
    bare 404 or 405 comes from a router that has no such endpoint (a doubled
    ``/v2`` in the base URL, say).
    """
    return isinstance(error, APIError) and error.status in (404, 405) and not error.codes


def maybe_applied(error: CapillaryError) -> bool:
    """Whether the failed attempt may have been applied."""
    if getattr(error, "before_send", False):
        return False  # raised before the request went out
    if is_ambiguous(error):
        return True
    if isinstance(error, (AuthenticationError, PermissionDeniedError)):
        return False  # refused before anything was done (a token answer, for one)
    # A 2xx whose body could not be read: processed, but nobody knows how.
    return isinstance(error, APIError) and 200 <= error.status < 300 and not error.codes


def decide(
    error: CapillaryError,
    attempt: int,
    *,
    idempotent: bool,
    policy: RetryPolicy,
    applied_before: bool = False,
    splittable: bool = False,
) -> Decision:
    """What to do after attempt number ``attempt`` (1-based) failed with ``error``.

    ``idempotent``: the request may be sent twice. ``applied_before``: an
    earlier attempt may have been applied. ``splittable``: a chunk of more than
    one item, which may be halved when refused as a whole.
    """
    applied = applied_before or maybe_applied(error)
    gave_up = Action.UNKNOWN if applied else Action.FAIL
    if isinstance(error, (AuthenticationError, PermissionDeniedError)) or wrong_endpoint(error):
        return Decision(Action.STOP, maybe_applied=applied)
    if applied and not idempotent:  # a timeout, a 5xx, a 2xx that could not be read...
        return Decision(Action.UNKNOWN, maybe_applied=True, not_repeated=True)
    status = getattr(error, "status", None)
    if status == 413 or isinstance(error, BadRequestError):
        if splittable:
            return Decision(Action.SPLIT, maybe_applied=applied)
        # Refused in Capillary's own words (codes): a verdict on what was sent.
        # A bare 400 from a gateway says nothing about the item.
        verdict = not applied and bool(getattr(error, "codes", ()))
        return Decision(gave_up, maybe_applied=applied, verdict=verdict)
    if not is_retryable(error):
        return Decision(gave_up, maybe_applied=applied)
    retry_after = error.retry_after if isinstance(error, APIError) else None
    limited = isinstance(error, RateLimitError)
    # A 429 or a Retry-After slows everyone down, even when this attempt was the last.
    action = Action.RETRY if attempt < policy.max_attempts else gave_up
    return Decision(
        action,
        delay=policy.delay(attempt, retry_after),
        pause=limited or retry_after is not None,
        slow_down=limited,
        maybe_applied=applied,
    )
