"""What the engine needs to know of each endpoint: how to validate, key, send and merge.

The engine knows nothing of Capillary's payloads; a ``BulkSpec`` does.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs

from .._config import Timeouts
from .._converters import direct_expiry_update, from_wire, split_expiry_envelope, to_wire
from .._endpoints import (
    EXPIRY_LIST_FIELD,
    UPDATE_EXPIRY_PATH,
    UPDATE_REDEMPTION_PATH,
    expiry_body_is_data,
    parse_reply,
    unexpected_shape,
)
from .._enums import PointsAwardedRefType
from .._exceptions import CapillaryError, ValidationError, excerpt
from .._fast_expiry import REF_TYPES, checked_wire
from .._models import ExpiryUpdate, ExpiryUpdateEntry, Redemption, RedemptionUpdate
from .._types import AcceptFn, BeforeSend, Reply, _Unset
from ._outcomes import Lazy, Merged, OutcomeStatus, Prepared, Verdict

if TYPE_CHECKING:
    from .._client import CapillaryClient

__all__ = ["BulkSpec", "ExpirySpec", "RedemptionSpec", "prepare_model"]

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class BulkSpec(Protocol[ItemT, ResultT]):
    """What the engine needs to know about one endpoint."""

    #: The endpoint, as a journal names it ("expiry", "redemption").
    kind: str
    #: The largest chunk the endpoint takes (1 for one-item endpoints), or None.
    max_chunk_size: int | None
    #: Its HTTP method and path, as events and spans name it.
    method: str
    path: str

    def prepare(self, raw: object) -> ItemT:
        """A model from an input item; raises ``ValidationError``."""
        ...

    def key(self, item: ItemT) -> Hashable:
        """What two items must not share within one chunk."""
        ...

    def idempotent(self, item: ItemT) -> bool:
        """Whether sending the item twice is safe."""
        ...

    async def send(
        self, items: list[ItemT], before_send: BeforeSend | None = None
    ) -> tuple[ResultT, str | None]:
        """One attempt, no retries: the answer and its request id, or a ``CapillaryError``.

        ``before_send`` is awaited once the request has every slot and is about to go.
        """
        ...

    def merge(self, chunk: Sequence[tuple[int, ItemT]], result: ResultT) -> Merged:
        """Match an answer back to the chunk's items."""
        ...

    def describe(self, item: Any) -> dict[str, Any]:
        """The identifying wire fields of an item, for reports."""
        ...

    def wire(self, item: Any) -> Any:
        """An item as JSON, for reports."""
        ...


async def _attempt(  # noqa: PLR0917 - one request, spelled out
    client: CapillaryClient,
    method: str,
    path: str,
    body: Any,
    timeout: Timeouts | float | _Unset | None,
    accept: AcceptFn | None,
    before_send: BeforeSend | None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """One request, one attempt; its failure raised as it is."""
    outcome = await client._attempt(
        client._call(method, path, json=body, timeout=timeout, headers=headers),
        1,
        accept=accept,
        priority=False,
        before_send=before_send,
    )
    if isinstance(outcome, CapillaryError):
        raise outcome
    return outcome


_M = TypeVar("_M")


def prepare_model(cls: type[_M], raw: object, what: str) -> _M:
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, Mapping):
        raise ValidationError("", f"expected {what} or a mapping of its wire fields")
    return from_wire(cls, raw)


def _json_ready(item: Any) -> Any:
    if isinstance(item, Prepared):
        return item.wire
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


SUCCEEDED, FAILED, UNKNOWN = OutcomeStatus.SUCCEEDED, OutcomeStatus.FAILED, OutcomeStatus.UNKNOWN
_UNMENTIONED = "the answer did not mention this item: it may or may not have been applied"
_read_entry = functools.partial(from_wire, ExpiryUpdateEntry)


def _anomalies(  # noqa: PLR0917 - the counts of one answer, in the order they are told
    sent: int,
    nameless: int,
    strangers: list[Hashable],
    repeated: list[Hashable],
    surplus: int,
    missing: int,
) -> list[str]:
    """What looked wrong in one answer, one line per kind."""
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
    if missing:
        anomalies.append(f"the answer left out {missing} of the {sent} items sent")
    return anomalies


def _success_key(entry: Any) -> Hashable | None:
    """The key of the item a success entry names, or None."""
    if type(entry) is not dict and not isinstance(entry, Mapping):
        return None
    logs = entry.get("pointsExpiryUpdateLogs")
    if type(logs) is not dict and not isinstance(logs, Mapping):
        return None
    ref_id, ref_type = logs.get("paId"), logs.get("paType")
    # The common case inline: an int and a text (the type, or an unknown one).
    if type(ref_id) is int and 0 < ref_id < 2**63 and type(ref_type) is str:
        return (ref_id, REF_TYPES.get(ref_type, ref_type))
    return _ref_key(ref_id, ref_type)


def _show_ref(key: Hashable) -> str:
    ref_id, ref_type = key if isinstance(key, tuple) else (key, None)
    return excerpt(f"{ref_id}/{ref_type}", 120)


class _OnClient:
    """A spec's request settings: the client, and the job's timeout and headers."""

    def __init__(
        self,
        client: CapillaryClient,
        timeout: Timeouts | float | _Unset | None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._headers = headers


class _ExpiryItem(Prepared):
    __slots__ = ()

    def build(self, wire: dict[str, Any]) -> ExpiryUpdate:
        return direct_expiry_update(wire)


class ExpirySpec(_OnClient):
    """updateExpiry in bulk: chunks of many items, matched back by points-awarded ref.

    Items are held in their wire form: a plain mapping the model would take as
    it is is checked in place (``checked_wire``), anything else goes through
    the model. Either way each item is turned into JSON-ready form once.
    """

    kind = "expiry"
    method, path = "POST", UPDATE_EXPIRY_PATH
    max_chunk_size: int | None = None

    def prepare(self, raw: object) -> _ExpiryItem:
        checked = checked_wire(raw)
        if checked is not None:
            return _ExpiryItem(*checked)
        model = prepare_model(ExpiryUpdate, raw, "an ExpiryUpdate")
        return _ExpiryItem(to_wire(model), model.ref, model.idempotent, model)

    def key(self, item: _ExpiryItem) -> Hashable:
        key: Hashable = item.key
        return key

    def idempotent(self, item: _ExpiryItem) -> bool:
        return item.idempotent

    async def send(
        self, items: list[_ExpiryItem], before_send: BeforeSend | None = None
    ) -> tuple[Any, str | None]:
        # One attempt: the engine decides about retries, per chunk and item.
        reply = await _attempt(
            self._client,
            "POST",
            UPDATE_EXPIRY_PATH,
            {EXPIRY_LIST_FIELD: [item.wire for item in items]},
            self._timeout,
            expiry_body_is_data,
            before_send,
            self._headers,
        )
        try:
            updates, failures, _, _ = split_expiry_envelope(reply.body)
        except ValidationError as exc:
            raise unexpected_shape(reply, exc) from exc
        return (updates, failures), reply.request_id

    def merge(self, chunk: Sequence[tuple[int, _ExpiryItem]], result: Any) -> Merged:
        """Match raw answer entries to items by ref; success entries are parsed on access.

        Oddities are summed per answer (one line each kind), never one per item.
        """
        updates, failures = result
        # Beyond twice the items sent, entries cannot belong to them: counted, not read.
        room = 2 * len(chunk) + 16
        surplus = max(0, len(updates) + len(failures) - room)
        updates = updates[:room]
        failures = failures[: max(0, room - len(updates))]
        sent = {item.key for _, item in chunk}
        decided: dict[Hashable, tuple[OutcomeStatus, Any, int | None, str | None]] = {}
        nameless: int = 0
        strangers: list[Hashable] = []
        repeated: list[Hashable] = []

        def note(
            key: Hashable | None, decision: tuple[OutcomeStatus, Any, int | None, str | None]
        ) -> None:
            nonlocal nameless
            if key is None:
                nameless += 1
            elif key not in sent:
                strangers.append(key)
            elif key in decided:
                repeated.append(key)
            else:
                decided[key] = decision

        for entry in updates:
            key = _success_key(entry)
            if key is not None and key in sent and key not in decided:
                decided[key] = (SUCCEEDED, Lazy(_read_entry, entry), None, None)
            else:
                note(key, (SUCCEEDED, Lazy(_read_entry, entry), None, None))
        quoted: dict[str, str] = {}  # a refusal's text, quoted once per answer
        for failure in failures:
            if not isinstance(failure, Mapping):
                note(None, (FAILED, None, None, None))
                continue
            code = failure.get("errorCode")
            message = failure.get("errorMessage")
            if isinstance(message, str):
                text = quoted.get(message)
                if text is None:
                    text = quoted[message] = excerpt(message)
            else:
                text = "refused by the server"
            note(
                _ref_key(failure.get("pointsAwardedRefId"), failure.get("pointsAwardedRefType")),
                (FAILED, None, code if type(code) is int and abs(code) < 2**63 else None, text),
            )
        outcomes: list[Verdict] = []
        missing = 0
        for index, item in chunk:
            found = decided.get(item.key)
            if found is None:
                missing += 1
                outcomes.append((index, item, UNKNOWN, None, None, _UNMENTIONED))
            else:
                outcomes.append((index, item, *found))
        anomalies = _anomalies(len(chunk), nameless, strangers, repeated, surplus, missing)
        return Merged(outcomes, anomalies)

    def describe(self, item: Any) -> dict[str, Any]:
        if isinstance(item, Prepared):
            item = item.wire
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


class RedemptionSpec(_OnClient):
    """updateRedemption in bulk: the API takes one redemption per request."""

    kind = "redemption"
    method, path = "PUT", UPDATE_REDEMPTION_PATH
    max_chunk_size: int | None = 1

    def prepare(self, raw: object) -> RedemptionUpdate:
        return prepare_model(RedemptionUpdate, raw, "a RedemptionUpdate")

    def key(self, item: RedemptionUpdate) -> Hashable:
        return (item.redemption_id, item.external_reference_number)

    def idempotent(self, item: RedemptionUpdate) -> bool:
        return item.idempotent

    async def send(
        self, items: list[RedemptionUpdate], before_send: BeforeSend | None = None
    ) -> tuple[Redemption, str | None]:
        (item,) = items
        reply = await _attempt(
            self._client,
            "PUT",
            UPDATE_REDEMPTION_PATH,
            to_wire(item),
            self._timeout,
            None,
            before_send,
            self._headers,
        )
        return parse_reply(Redemption, reply), reply.request_id

    def merge(self, chunk: Sequence[tuple[int, RedemptionUpdate]], result: Redemption) -> Merged:
        return Merged([(i, item, SUCCEEDED, result, None, None) for i, item in chunk])

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
