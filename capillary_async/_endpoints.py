"""The two endpoints on the wire: paths, bodies, and how to read their answers.

Shared by single calls (``client.points``) and the bulk specs, below both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from ._converters import SUCCESS_KEYS, ensure, from_wire
from ._exceptions import APIError, ValidationError, is_ambiguous_status
from ._models import ExpiryUpdate
from ._types import Reply

__all__ = [
    "EXPIRY_LIST_FIELD",
    "UPDATE_EXPIRY_PATH",
    "UPDATE_REDEMPTION_PATH",
    "build_expiry_items",
    "expiry_body_is_data",
    "parse_reply",
    "unexpected_shape",
]

UPDATE_REDEMPTION_PATH = "/v2/points/updateRedemption"
UPDATE_EXPIRY_PATH = "/v2/points/updateExpiry"
EXPIRY_LIST_FIELD = "expiryDateUpdateRequest"

_R = TypeVar("_R")
_ITEM_KEYS = (*SUCCESS_KEYS, "failures")
#: What an answer of updateExpiry holds at its top level, in one documented form or another.
_ENVELOPE_KEYS = (*_ITEM_KEYS, "entity", "errors", "warnings")


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


def unexpected_shape(reply: Reply, exc: ValidationError) -> APIError:
    """The error for an answer whose shape could not be read."""
    return APIError(
        f"unexpected response shape: {exc}",
        status=reply.status,
        body=reply.body,
        request_id=reply.request_id,
        headers=reply.headers,
    )


def speaks_capillary(body: object) -> bool:
    """Whether a 2xx answer to updateExpiry is one of the envelopes the docs describe."""
    return isinstance(body, Mapping) and any(key in body for key in _ENVELOPE_KEYS)


def not_capillary(reply: Reply, where: str) -> APIError:
    """A 2xx answer of another shape (a portal's page, another service): a wrong URL."""
    return APIError(
        f"{where} answered {reply.status}, but not as Capillary's API does (not one of its "
        "JSON envelopes): is the base URL right?",
        status=reply.status,
        body=None,
        request_id=reply.request_id,
    )


def parse_reply(cls: type[_R], reply: Reply) -> _R:
    """A result model from a reply, with the request id; a malformed answer is an ``APIError``."""
    try:
        result = from_wire(cls, reply.body)
    except ValidationError as exc:
        raise unexpected_shape(reply, exc) from exc
    # A fresh model of ours: set in place rather than copied (``attrs.evolve``).
    object.__setattr__(result, "request_id", reply.request_id)
    return result
