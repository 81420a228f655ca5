"""``client.points``: the two points endpoints, typed."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream

from ._batch import (
    BulkReport,
    BulkSpec,
    ItemOutcome,
    Job,
    Lazy,
    Merged,
    OutcomeStatus,
    Progress,
    RetryBudget,
    receive_fast,
)
from ._config import RetryPolicy, Timeouts
from ._converters import SUCCESS_KEYS, ensure, from_wire, split_expiry_envelope, to_wire
from ._enums import PointsAwardedRefType
from ._exceptions import APIError, ValidationError, excerpt, is_ambiguous_status
from ._models import (
    ExpiryUpdate,
    ExpiryUpdateEntry,
    ExpiryUpdateResult,
    Redemption,
    RedemptionUpdate,
)
from ._types import UNSET, Reply, _Unset

if sys.version_info < (3, 11):  # pragma: no cover - anyio brings the backport
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from ._client import CapillaryClient

__all__ = ["OutcomeStream", "PointsResource"]

UPDATE_REDEMPTION_PATH = "/v2/points/updateRedemption"
UPDATE_EXPIRY_PATH = "/v2/points/updateExpiry"
EXPIRY_LIST_FIELD = "expiryDateUpdateRequest"

_R = TypeVar("_R")
_ITEM_KEYS = (*SUCCESS_KEYS, "failures")


def expiry_body_is_data(status: int, body: Any) -> bool:
    """Whether an updateExpiry answer carries per-item results, whatever its status.

    The docs do not say which status a partly or wholly failed request gets
    (200, 201 and 400 are all plausible), so the body decides: item data is
    data; a top-level ``errors`` envelope without item data is a refusal.
    """
    if not isinstance(body, Mapping) or is_ambiguous_status(status):
        # A 500 (or 502, 504) may come after some of the change was made:
        # whatever items its body lists, it settles nothing.
        return False
    entity = body.get("entity")
    container: Mapping[str, Any] = entity if isinstance(entity, Mapping) else body
    if any(container.get(key) or body.get(key) for key in _ITEM_KEYS):
        return True
    if body.get("errors"):
        return False
    return 200 <= status < 300 and any(key in container for key in _ITEM_KEYS)


def build_expiry_items(updates: Iterable[ExpiryUpdate | Mapping[str, Any]]) -> list[ExpiryUpdate]:
    """Validate a request's items; mappings are read as wire JSON."""
    items = [
        ensure(ExpiryUpdate, update, path=f"{EXPIRY_LIST_FIELD}[{index}]")
        for index, update in enumerate(updates)
    ]
    if not items:
        raise ValidationError(EXPIRY_LIST_FIELD, "must hold at least one item", code=8931)
    return items


def parse_reply(cls: type[_R], reply: Reply) -> _R:
    """A result model from a reply, with the request id; a malformed answer is an ``APIError``."""
    try:
        result = from_wire(cls, reply.body)
    except ValidationError as exc:
        raise APIError(
            f"unexpected response shape: {exc}",
            status=reply.status,
            body=reply.body,
            request_id=reply.request_id,
        ) from exc
    return attrs.evolve(result, request_id=reply.request_id)  # type: ignore[misc]


class PointsResource:
    """Points endpoints (``/v2/points/*``)."""

    def __init__(self, client: CapillaryClient) -> None:
        self._client = client

    async def update_redemption(
        self,
        update: RedemptionUpdate | Mapping[str, Any],
        *,
        timeout: Timeouts | float | _Unset | None = UNSET,
        retry: RetryPolicy | None = None,
    ) -> Redemption:
        """Set bill id/number, purpose or custom fields of a redemption (PUT updateRedemption).

        Repeating it sets the same values, so it is retried after any
        retryable failure. A mapping is read as the wire JSON body.
        """
        model = ensure(RedemptionUpdate, update)
        reply = await self._client._request(
            "PUT",
            UPDATE_REDEMPTION_PATH,
            json=to_wire(model),
            timeout=timeout,
            retry=retry,
            idempotent=True,
        )
        return parse_reply(Redemption, reply)

    async def update_expiry(
        self,
        updates: Iterable[ExpiryUpdate | Mapping[str, Any]],
        *,
        timeout: Timeouts | float | _Unset | None = UNSET,
        retry: RetryPolicy | None = None,
    ) -> ExpiryUpdateResult:
        """Change the expiry of points-awarded records, in one request (POST updateExpiry).

        Per-item refusals are data in ``result.failures``; a request refused as
        a whole raises. After a failure that leaves the outcome unknown (a
        timeout, a dropped connection, 502, 504) the request is repeated only
        if every item is FIXED_DATE or IMMEDIATE; otherwise
        ``OutcomeUnknownError`` is raised.
        """
        items = build_expiry_items(updates)
        reply = await self._client._request(
            "POST",
            UPDATE_EXPIRY_PATH,
            json={EXPIRY_LIST_FIELD: to_wire(items)},
            timeout=timeout,
            retry=retry,
            idempotent=all(item.idempotent for item in items),
            accept=expiry_body_is_data,
            why_not_idempotent=(
                "it holds FIXED_DAYS / FIXED_MONTHS items, which would be extended twice"
            ),
        )
        return parse_reply(ExpiryUpdateResult, reply)

    def stream_update_expiry(
        self,
        items: Iterable[ExpiryUpdate | Mapping[str, Any]]
        | AsyncIterable[ExpiryUpdate | Mapping[str, Any]],
        *,
        chunk_size: int = 100,
        concurrency: int = 8,
        rate_limit: float | None = None,
        on_progress: Callable[[Progress], object] | None = None,
        flush_after: float | None = 1.0,
        fail_fast: bool = False,
        keep_all: bool = False,
        keep_failures: bool = False,
        retry: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        timeout: Timeouts | float | _Unset | None = UNSET,
    ) -> contextlib.AbstractAsyncContextManager[OutcomeStream]:
        """Apply expiry updates in bounded chunks, yielding one ``ItemOutcome`` per item.

        ``items`` may be any iterable or async iterable of ``ExpiryUpdate`` or
        wire-format mappings, read lazily: about ``concurrency x chunk_size``
        items are held at once, whatever the input size. Use as
        ``async with ... as outcomes: async for outcome in outcomes``; leaving
        the block early cancels the job.

        The caller consumes the outcomes, so the report keeps none of them
        unless asked: ``keep_failures=True`` keeps those that did not succeed,
        ``keep_all=True`` every one.
        """
        spec = _ExpirySpec(self._client, timeout)
        return _stream(
            spec,
            items,
            self._job_options(
                chunk_size=chunk_size,
                concurrency=concurrency,
                rate_limit=rate_limit,
                on_progress=on_progress,
                flush_after=flush_after,
                fail_fast=fail_fast,
                keep_all=keep_all,
                keep_failures=keep_failures,
                retry=retry,
                retry_budget=retry_budget,
            ),
        )

    async def bulk_update_expiry(
        self,
        items: Iterable[ExpiryUpdate | Mapping[str, Any]]
        | AsyncIterable[ExpiryUpdate | Mapping[str, Any]],
        *,
        chunk_size: int = 100,
        concurrency: int = 8,
        rate_limit: float | None = None,
        on_progress: Callable[[Progress], object] | None = None,
        flush_after: float | None = 1.0,
        fail_fast: bool = False,
        keep_all: bool = False,
        keep_failures: bool = True,
        retry: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        timeout: Timeouts | float | _Unset | None = UNSET,
    ) -> BulkReport:
        """Apply any number of expiry updates and return one merged ``BulkReport``.

        Every input item ends with exactly one outcome; the counts add up to
        ``report.total``. The outcomes of items that did not succeed are kept
        (``report.failures()``) unless ``keep_failures=False``. See
        ``stream_update_expiry`` for the other options.
        """
        async with self.stream_update_expiry(
            items,
            chunk_size=chunk_size,
            concurrency=concurrency,
            rate_limit=rate_limit,
            on_progress=on_progress,
            flush_after=flush_after,
            fail_fast=fail_fast,
            keep_all=keep_all,
            keep_failures=keep_failures,
            retry=retry,
            retry_budget=retry_budget,
            timeout=timeout,
        ) as outcomes:
            async for _ in outcomes:
                pass
        return outcomes.report

    def stream_update_redemption(
        self,
        items: Iterable[RedemptionUpdate | Mapping[str, Any]]
        | AsyncIterable[RedemptionUpdate | Mapping[str, Any]],
        *,
        concurrency: int = 8,
        rate_limit: float | None = None,
        on_progress: Callable[[Progress], object] | None = None,
        fail_fast: bool = False,
        keep_all: bool = False,
        keep_failures: bool = False,
        retry: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        timeout: Timeouts | float | _Unset | None = UNSET,
    ) -> contextlib.AbstractAsyncContextManager[OutcomeStream]:
        """Update many redemptions (one request each, as the API takes them), streaming outcomes."""
        spec = _RedemptionSpec(self._client, timeout)
        return _stream(
            spec,
            items,
            self._job_options(
                chunk_size=1,
                concurrency=concurrency,
                rate_limit=rate_limit,
                on_progress=on_progress,
                flush_after=None,
                fail_fast=fail_fast,
                keep_all=keep_all,
                keep_failures=keep_failures,
                retry=retry,
                retry_budget=retry_budget,
            ),
        )

    async def bulk_update_redemption(
        self,
        items: Iterable[RedemptionUpdate | Mapping[str, Any]]
        | AsyncIterable[RedemptionUpdate | Mapping[str, Any]],
        *,
        concurrency: int = 8,
        rate_limit: float | None = None,
        on_progress: Callable[[Progress], object] | None = None,
        fail_fast: bool = False,
        keep_all: bool = False,
        keep_failures: bool = True,
        retry: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        timeout: Timeouts | float | _Unset | None = UNSET,
    ) -> BulkReport:
        """Update many redemptions and return one merged ``BulkReport``."""
        async with self.stream_update_redemption(
            items,
            concurrency=concurrency,
            rate_limit=rate_limit,
            on_progress=on_progress,
            fail_fast=fail_fast,
            keep_all=keep_all,
            keep_failures=keep_failures,
            retry=retry,
            retry_budget=retry_budget,
            timeout=timeout,
        ) as outcomes:
            async for _ in outcomes:
                pass
        return outcomes.report

    def _job_options(self, *, retry: RetryPolicy | None, **options: Any) -> dict[str, Any]:
        client = self._client
        return {
            "clock": client.clock,
            "retry": retry if retry is not None else client.retry,
            **options,
        }


# -- bulk ----------------------------------------------------------------------------

_NO_RETRY = RetryPolicy.disabled()
_T = TypeVar("_T")
_M = TypeVar("_M")


def _prepare(cls: type[_M], raw: object, what: str) -> _M:
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, Mapping):
        raise ValidationError("", f"expected {what} or a mapping of its wire fields")
    return from_wire(cls, raw)


def _json_ready(item: Any) -> Any:
    if attrs.has(type(item)):
        return to_wire(item)
    return (
        item if isinstance(item, (Mapping, list, str, int, float, bool, type(None))) else repr(item)
    )


def _ref_key(ref_id: object, ref_type: object) -> tuple[int, object] | None:
    """An answer's (paId, paType) as the key of the item it names, or None if it names none.

    Capillary ids are Java longs: an int, or its digits as a string (``"1"`` is
    item 1); anything else (a list, an object, a 5,000-digit number) names nothing.
    """
    if type(ref_id) is str and 0 < len(ref_id) < 20 and ref_id.isascii() and ref_id.isdigit():
        ref_id = int(ref_id)
    if type(ref_id) is not int or not 0 < ref_id < 2**63:
        return None
    # Known types as their enum member (hashing a member is cheap), unknown as text.
    if type(ref_type) is not PointsAwardedRefType:
        if not isinstance(ref_type, str):
            return None
        ref_type = PointsAwardedRefType._value2member_map_.get(ref_type, ref_type)
    return (ref_id, ref_type)


def _show_ref(key: Hashable) -> str:
    ref_id, ref_type = key if isinstance(key, tuple) else (key, None)
    return excerpt(f"{ref_id}/{ref_type}", 120)


class _ExpirySpec:
    """updateExpiry in bulk: chunks of many items, matched back by points-awarded ref."""

    max_chunk_size: int | None = None

    def __init__(self, client: CapillaryClient, timeout: Timeouts | float | _Unset | None) -> None:
        self._client = client
        self._timeout = timeout

    def prepare(self, raw: object) -> ExpiryUpdate:
        return _prepare(ExpiryUpdate, raw, "an ExpiryUpdate")

    def key(self, item: ExpiryUpdate) -> Hashable:
        return (item.points_awarded_ref_id, item.points_awarded_ref_type)

    def idempotent(self, item: ExpiryUpdate) -> bool:
        return item.idempotent

    async def send(self, items: list[ExpiryUpdate]) -> tuple[Any, str | None]:
        # One attempt, marked idempotent so the raw error comes back: the engine
        # applies retries and the idempotency rule per item itself.
        reply = await self._client._request(
            "POST",
            UPDATE_EXPIRY_PATH,
            json={EXPIRY_LIST_FIELD: to_wire(items)},
            timeout=self._timeout,
            retry=_NO_RETRY,
            idempotent=True,
            accept=expiry_body_is_data,
        )
        try:
            updates, failures, _, _ = split_expiry_envelope(reply.body)
        except ValidationError as exc:
            raise APIError(
                f"unexpected response shape: {exc}",
                status=reply.status,
                body=reply.body,
                request_id=reply.request_id,
            ) from exc
        return (updates, failures), reply.request_id

    def merge(self, chunk: Sequence[tuple[int, ExpiryUpdate]], result: Any) -> Merged:
        """Match raw answer entries to items by ref; success entries are parsed on access.

        Oddities are summed per answer (one line each kind), never one per item.
        """
        updates, failures = result
        # Beyond twice the items sent, entries cannot belong to them: counted, not read.
        room = 2 * len(chunk) + 16
        surplus = max(0, len(updates) + len(failures) - room)
        updates = updates[:room]
        failures = failures[: max(0, room - len(updates))]
        by_key = {self.key(item): (index, item) for index, item in chunk}
        decided: dict[Hashable, tuple[OutcomeStatus, Any, int | None, str | None]] = {}
        nameless: int = 0
        strangers: list[Hashable] = []
        repeated: list[Hashable] = []
        answers: list[tuple[Hashable | None, tuple[OutcomeStatus, Any, int | None, str | None]]]
        answers = []
        for entry in updates:
            logs = entry.get("pointsExpiryUpdateLogs") if isinstance(entry, Mapping) else None
            key = (
                _ref_key(logs.get("paId"), logs.get("paType"))
                if isinstance(logs, Mapping)
                else None
            )
            lazy = Lazy(functools.partial(from_wire, ExpiryUpdateEntry, entry))
            answers.append((key, (OutcomeStatus.SUCCEEDED, lazy, None, None)))
        for failure in failures:
            if not isinstance(failure, Mapping):
                answers.append((None, (OutcomeStatus.FAILED, None, None, None)))
                continue
            code = failure.get("errorCode")
            message = failure.get("errorMessage")
            decision = (
                OutcomeStatus.FAILED,
                None,
                code if type(code) is int and abs(code) < 2**63 else None,
                excerpt(message) if isinstance(message, str) else "refused by the server",
            )
            key = _ref_key(failure.get("pointsAwardedRefId"), failure.get("pointsAwardedRefType"))
            answers.append((key, decision))
        for named, verdict in answers:
            if named is None:
                nameless += 1
            elif named not in by_key:
                strangers.append(named)
            elif named in decided:
                repeated.append(named)
            else:
                decided[named] = verdict
        outcomes = []
        for index, item in chunk:
            status, update, code, message = decided.get(
                self.key(item),
                (
                    OutcomeStatus.UNKNOWN,
                    None,
                    None,
                    "the answer did not mention this item: it may or may not have been applied",
                ),
            )
            outcomes.append((index, item, status, update, code, message))
        anomalies: list[str] = []
        if nameless:
            anomalies.append(
                f"the answer holds {nameless} entries that name no readable points-awarded record"
            )
        if strangers:
            anomalies.append(
                f"the answer names {len(strangers)} records this request did not send "
                f"(first: {_show_ref(strangers[0])})"
            )
        if repeated:
            anomalies.append(
                f"the answer names {len(repeated)} records twice; the first entry counts "
                f"(first: {_show_ref(repeated[0])})"
            )
        if surplus:
            anomalies.append(f"the answer holds {surplus} more entries than it could need; ignored")
        missing = sum(1 for o in outcomes if o[2] is OutcomeStatus.UNKNOWN)
        if missing:
            anomalies.append(f"the answer left out {missing} of the {len(chunk)} items sent")
        return Merged(outcomes, anomalies)

    def describe(self, item: Any) -> dict[str, Any]:
        if isinstance(item, ExpiryUpdate):
            return {
                "pointsAwardedRefId": item.points_awarded_ref_id,
                "pointsAwardedRefType": item.points_awarded_ref_type.value,
            }
        source = item if isinstance(item, Mapping) else {}
        return {
            "pointsAwardedRefId": source.get("pointsAwardedRefId"),
            "pointsAwardedRefType": source.get("pointsAwardedRefType"),
        }

    def wire(self, item: Any) -> Any:
        return _json_ready(item)


class _RedemptionSpec:
    """updateRedemption in bulk: the API takes one redemption per request."""

    max_chunk_size: int | None = 1

    def __init__(self, client: CapillaryClient, timeout: Timeouts | float | _Unset | None) -> None:
        self._client = client
        self._timeout = timeout

    def prepare(self, raw: object) -> RedemptionUpdate:
        return _prepare(RedemptionUpdate, raw, "a RedemptionUpdate")

    def key(self, item: RedemptionUpdate) -> Hashable:
        return (item.redemption_id, item.external_reference_number)

    def idempotent(self, item: RedemptionUpdate) -> bool:
        return item.idempotent

    async def send(self, items: list[RedemptionUpdate]) -> tuple[Redemption, str | None]:
        (item,) = items
        reply = await self._client._request(
            "PUT",
            UPDATE_REDEMPTION_PATH,
            json=to_wire(item),
            timeout=self._timeout,
            retry=_NO_RETRY,
            idempotent=True,
        )
        return parse_reply(Redemption, reply), reply.request_id

    def merge(self, chunk: Sequence[tuple[int, RedemptionUpdate]], result: Redemption) -> Merged:
        return Merged([(i, item, OutcomeStatus.SUCCEEDED, result, None, None) for i, item in chunk])

    def describe(self, item: Any) -> dict[str, Any]:
        if isinstance(item, RedemptionUpdate):
            return {
                "redemptionId": item.redemption_id,
                "externalReferenceNumber": item.external_reference_number,
            }
        source = item if isinstance(item, Mapping) else {}
        return {
            "redemptionId": source.get("redemptionId"),
            "externalReferenceNumber": source.get("externalReferenceNumber"),
        }

    def wire(self, item: Any) -> Any:
        return _json_ready(item)


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one error in a (nested) group, counting repeats of the same error once."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        else:
            leaves.append(current)
    if leaves and all(
        type(leaf) is type(leaves[0]) and str(leaf) == str(leaves[0]) for leaf in leaves
    ):
        return leaves[-1]
    return None


class OutcomeStream:
    """The outcomes of a running bulk job, one per input item, as chunks complete.

    ``report`` holds the running counts (final once iteration ends) and
    ``progress()`` the current ``Progress``.
    """

    def __init__(self, receive: MemoryObjectReceiveStream[ItemOutcome], job: Job[Any, Any]):
        self._receive = receive
        self._job = job
        self.exhausted = False

    @property
    def report(self) -> BulkReport:
        """The job's report; complete once the stream is exhausted."""
        return self._job.report

    def progress(self) -> Progress:
        """Counts so far."""
        return self._job.progress()

    def stop(self, reason: str = "stopped by the caller", *, drain: bool = False) -> None:
        """End the job gracefully: requests in flight finish, nothing more is sent.

        Keep iterating to collect the outcomes still to come. Items read but not
        sent end ``not_attempted``. The rest of the input is left unread, so a
        queue-fed worker can stop (the report covers what was read); with
        ``drain=True`` it is read to the end, and every item gets an outcome.
        """
        self._job.stop(reason, drain=drain)

    def __aiter__(self) -> OutcomeStream:
        return self

    async def __anext__(self) -> ItemOutcome:
        try:
            return await receive_fast(self._receive)  # type: ignore[no-any-return]
        except anyio.EndOfStream:
            self.exhausted = True
            raise StopAsyncIteration from None


@contextlib.asynccontextmanager
async def _stream(
    spec: BulkSpec[Any, Any], items: Any, job_options: dict[str, Any]
) -> AsyncIterator[OutcomeStream]:
    """Run a job in a task group for as long as the caller's ``async with`` block.

    Leaving the block early cancels the job: requests in flight are abandoned
    cleanly and no task outlives the block.
    """
    job: Job[Any, Any] = Job(spec, items, **job_options)
    send, receive = anyio.create_memory_object_stream[ItemOutcome](job.chunk_size)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(job.run, send)
            stream = OutcomeStream(receive, job)
            try:
                yield stream
            finally:
                if not stream.exhausted:
                    tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Task groups wrap what they raise; callers should get their own error back.
        sole = _sole_error(group)
        if sole is None:
            raise
        raise sole from None
    finally:
        send.close()  # the job closes it, unless cancelled before it started
        receive.close()
