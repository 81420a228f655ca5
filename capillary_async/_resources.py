"""``client.points``: the two points endpoints, typed, one item or many."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._bulk import (
    BulkOptions,
    BulkOptionsDict,
    BulkReport,
    BulkSpec,
    ExpirySpec,
    InputRow,
    OutcomeStream,
    RedemptionSpec,
    open_job,
)
from ._config import RetryPolicy, Timeouts
from ._converters import ensure, to_wire
from ._endpoints import (
    EXPIRY_LIST_FIELD,
    UPDATE_EXPIRY_PATH,
    UPDATE_REDEMPTION_PATH,
    build_expiry_items,
    expiry_body_is_data,
    parse_reply,
)
from ._models import ExpiryUpdate, ExpiryUpdateResult, Redemption, RedemptionUpdate
from ._raw import RawResponse
from ._types import UNSET, Reply, _Unset

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._client import CapillaryClient

__all__ = ["PointsResource"]

ExpiryItems = Iterable[ExpiryUpdate | Mapping[str, Any] | InputRow] | AsyncIterable[Any]
RedemptionItems = Iterable[RedemptionUpdate | Mapping[str, Any] | InputRow] | AsyncIterable[Any]


class PointsResource:
    """Points endpoints (``/v2/points/*``)."""

    def __init__(self, client: CapillaryClient) -> None:
        self._client = client
        #: The same calls, answering with a ``RawResponse`` (status, headers, timing).
        self.with_raw_response = RawPoints(self)

    async def update_redemption(
        self,
        update: RedemptionUpdate | Mapping[str, Any],
        *,
        timeout: Timeouts | float | _Unset | None = UNSET,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: float | _Unset | None = UNSET,
    ) -> Redemption:
        """Set bill id/number, purpose or custom fields of a redemption (PUT updateRedemption).

        Repeating it sets the same values, so it is retried after any
        retryable failure. A mapping is read as the wire JSON body.
        ``timeout`` bounds each attempt, ``deadline`` the whole call; ``headers``
        are merged over the client's.
        """
        reply = await self._redemption(update, timeout, retry, headers, deadline)
        return _redemption_result(reply)

    async def update_expiry(
        self,
        updates: Iterable[ExpiryUpdate | Mapping[str, Any]],
        *,
        timeout: Timeouts | float | _Unset | None = UNSET,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: float | _Unset | None = UNSET,
    ) -> ExpiryUpdateResult:
        """Change the expiry of points-awarded records, in one request (POST updateExpiry).

        Per-item refusals are data in ``result.failures``; a request refused as
        a whole raises. After a failure that leaves the outcome unknown (a
        timeout, a dropped connection, 502, 504) the request is repeated only
        if every item is FIXED_DATE or IMMEDIATE; otherwise
        ``OutcomeUnknownError`` is raised. ``timeout`` bounds each attempt,
        ``deadline`` the whole call; ``headers`` are merged over the client's.
        """
        reply = await self._expiry(updates, timeout, retry, headers, deadline)
        return _expiry_result(reply)

    async def _redemption(
        self,
        update: RedemptionUpdate | Mapping[str, Any],
        timeout: Timeouts | float | _Unset | None,
        retry: RetryPolicy | None,
        headers: Mapping[str, str] | None,
        deadline: float | _Unset | None,
    ) -> Reply:
        model = ensure(RedemptionUpdate, update)
        return await self._client._request(
            "PUT",
            UPDATE_REDEMPTION_PATH,
            json=to_wire(model),
            headers=headers,
            timeout=timeout,
            retry=retry,
            deadline=deadline,
            idempotent=True,
        )

    async def _expiry(
        self,
        updates: Iterable[ExpiryUpdate | Mapping[str, Any]],
        timeout: Timeouts | float | _Unset | None,
        retry: RetryPolicy | None,
        headers: Mapping[str, str] | None,
        deadline: float | _Unset | None,
    ) -> Reply:
        items = build_expiry_items(updates)
        return await self._client._request(
            "POST",
            UPDATE_EXPIRY_PATH,
            json={EXPIRY_LIST_FIELD: to_wire(items)},
            headers=headers,
            timeout=timeout,
            retry=retry,
            deadline=deadline,
            idempotent=all(item.idempotent for item in items),
            accept=expiry_body_is_data,
            why_not_idempotent=(
                "it holds FIXED_DAYS / FIXED_MONTHS items, which would be extended twice"
            ),
        )

    def stream_update_expiry(
        self,
        items: ExpiryItems,
        *,
        options: BulkOptions | None = None,
        **kwargs: Unpack[BulkOptionsDict],
    ) -> contextlib.AbstractAsyncContextManager[OutcomeStream]:
        """Apply expiry updates in bounded chunks, yielding one ``ItemOutcome`` per item.

        ``items`` may be any iterable or async iterable of ``ExpiryUpdate``,
        wire-format mappings or ``InputRow`` (an ``InputFile``), read lazily:
        about ``concurrency x chunk_size`` items are held at once, whatever the
        input size. Use as ``async with ... as outcomes: async for outcome in
        outcomes``; leaving the block early cancels the job, and
        ``outcomes.stop()`` ends it gracefully (see ``OutcomeStream.stop``).

        Options, as keywords or one ``BulkOptions`` (``options=``; keywords win):

        - ``chunk_size`` (100): items per request; ``concurrency`` (8): requests
          in flight; ``rate_limit``: requests per second for this job, inside
          the client's pace; ``flush_after`` (1.0 s): send a partial chunk
          when an async input stalls this long.
        - ``retry`` (the client's ``RetryPolicy``), ``retry_budget`` (a
          ``RetryBudget`` for the whole job), ``timeout`` (per attempt, the
          client's by default), ``headers`` (merged over the client's).
        - ``fail_fast`` (False): stop at the first chunk that fails.
        - ``on_progress``: a function or coroutine function given a
          ``Progress`` at least once per completed chunk.
        - ``journal``: an SQLite file that makes the job resumable;
          ``retry_unknown`` (False) resends items a journal holds as ``unknown``.
        - ``dry_run`` (False): validate, send nothing; ``preflight`` (False):
          run ``client.check()`` first.
        - ``keep_failures`` / ``keep_all``: which outcomes the report keeps.

        The caller consumes the outcomes, so the report keeps none of them
        unless asked: ``keep_failures=True`` keeps those that did not succeed,
        ``keep_all=True`` every one.
        """
        return self._open(
            ExpirySpec(self._client, *_per_call(options, kwargs)), items, options, kwargs, False
        )

    async def bulk_update_expiry(
        self,
        items: ExpiryItems,
        *,
        options: BulkOptions | None = None,
        **kwargs: Unpack[BulkOptionsDict],
    ) -> BulkReport:
        """Apply any number of expiry updates and return one merged ``BulkReport``.

        Every input item ends with exactly one outcome; the counts add up to
        ``report.total``. The outcomes of items that did not succeed are kept
        (``report.failures()``) unless ``keep_failures=False``. With
        ``journal="job.db"`` an interrupted job picks up where it stopped when
        run again with the same input.

        Options, as keywords or one ``BulkOptions`` (``options=``; keywords win):

        - ``chunk_size`` (100): items per request; ``concurrency`` (8): requests
          in flight; ``rate_limit``: requests per second for this job, inside
          the client's pace; ``flush_after`` (1.0 s): send a partial chunk
          when an async input stalls this long.
        - ``retry`` (the client's ``RetryPolicy``), ``retry_budget`` (a
          ``RetryBudget`` for the whole job), ``timeout`` (per attempt, the
          client's by default), ``headers`` (merged over the client's).
        - ``fail_fast`` (False): stop at the first chunk that fails.
        - ``on_progress``: a function or coroutine function given a
          ``Progress`` at least once per completed chunk.
        - ``journal``: an SQLite file that makes the job resumable;
          ``retry_unknown`` (False) resends items a journal holds as ``unknown``.
        - ``dry_run`` (False): validate, send nothing; ``preflight`` (False):
          run ``client.check()`` first.
        - ``keep_failures`` / ``keep_all``: which outcomes the report keeps.
        """
        spec = ExpirySpec(self._client, *_per_call(options, kwargs))
        return await _drain(self._open(spec, items, options, kwargs, True))

    def stream_update_redemption(
        self,
        items: RedemptionItems,
        *,
        options: BulkOptions | None = None,
        **kwargs: Unpack[BulkOptionsDict],
    ) -> contextlib.AbstractAsyncContextManager[OutcomeStream]:
        """Update many redemptions (one request each, as the API takes them), streaming outcomes."""
        spec = RedemptionSpec(self._client, *_per_call(options, kwargs))
        return self._open(spec, items, options, kwargs, False)

    async def bulk_update_redemption(
        self,
        items: RedemptionItems,
        *,
        options: BulkOptions | None = None,
        **kwargs: Unpack[BulkOptionsDict],
    ) -> BulkReport:
        """Update many redemptions and return one merged ``BulkReport``."""
        spec = RedemptionSpec(self._client, *_per_call(options, kwargs))
        return await _drain(self._open(spec, items, options, kwargs, True))

    def _open(
        self,
        spec: BulkSpec[Any, Any],
        items: Any,
        options: BulkOptions | None,
        kwargs: BulkOptionsDict,
        keep_failures: bool,
    ) -> contextlib.AbstractAsyncContextManager[OutcomeStream]:
        resolved = BulkOptions.build(options, kwargs)
        bulk = keep_failures  # a bulk call keeps failures by default, a stream does not
        if resolved.keep_failures is not None:
            keep_failures = resolved.keep_failures
        client = self._client
        return open_job(
            spec,
            items,
            resolved,
            clock=client.clock,
            retry=resolved.retry if resolved.retry is not None else client.retry,
            keep_failures=keep_failures,
            target=client.base_url,
            limiter=client.limiter,
            preflight=client.check if resolved.preflight and not resolved.dry_run else None,
            # A bulk call's report covers its whole input; a stream's caller decides.
            drain_on_stop=bulk,
            on_retry=client.on_retry,
        )


def _per_call(
    options: BulkOptions | None, kwargs: BulkOptionsDict
) -> tuple[Timeouts | float | _Unset | None, Mapping[str, str] | None]:
    """A job's timeout and headers: the keyword argument, else the options."""
    timeout = kwargs.get("timeout", UNSET)
    headers = kwargs.get("headers")
    if options is not None:
        timeout = options.timeout if "timeout" not in kwargs else timeout
        headers = options.headers if "headers" not in kwargs else headers
    return timeout, headers


async def _drain(job: contextlib.AbstractAsyncContextManager[OutcomeStream]) -> BulkReport:
    async with job as outcomes:
        await outcomes._exhaust()
    return outcomes.report


def _redemption_result(reply: Reply) -> Redemption:
    return parse_reply(Redemption, reply)


def _expiry_result(reply: Reply) -> ExpiryUpdateResult:
    return parse_reply(ExpiryUpdateResult, reply)


class RawPoints:
    """``client.points.with_raw_response``: the single calls, answering ``RawResponse``.

    Bulk and stream calls make many requests; their outcomes carry each
    request's id, and their report the counts.
    """

    def __init__(self, points: PointsResource) -> None:
        self._points = points

    async def update_redemption(
        self,
        update: RedemptionUpdate | Mapping[str, Any],
        *,
        timeout: Timeouts | float | _Unset | None = UNSET,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: float | _Unset | None = UNSET,
    ) -> RawResponse[Redemption]:
        """``update_redemption``, answering the raw response; ``.parse()`` gives its result."""
        reply = await self._points._redemption(update, timeout, retry, headers, deadline)
        return RawResponse(reply, _redemption_result)

    async def update_expiry(
        self,
        updates: Iterable[ExpiryUpdate | Mapping[str, Any]],
        *,
        timeout: Timeouts | float | _Unset | None = UNSET,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: float | _Unset | None = UNSET,
    ) -> RawResponse[ExpiryUpdateResult]:
        """``update_expiry``, answering the raw response; ``.parse()`` gives its result."""
        reply = await self._points._expiry(updates, timeout, retry, headers, deadline)
        return RawResponse(reply, _expiry_result)
