"""``client.points``: the two points endpoints, typed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ._client import UNSET, Reply, _Unset
from ._config import RetryPolicy, Timeouts
from ._converters import SUCCESS_KEYS, ensure, from_wire, to_wire
from ._exceptions import APIError, ValidationError
from ._models import ExpiryUpdate, ExpiryUpdateResult, Redemption, RedemptionUpdate

if TYPE_CHECKING:
    from ._client import CapillaryClient

__all__ = ["PointsResource"]

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
    if not isinstance(body, Mapping):
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
