"""Request and result models.

Request models validate every rule the API documentation states when they are
built, so an invalid one cannot exist; each failure is a ``ValidationError``
naming the field, with the Capillary code the server would have answered.
Messages quote input only bounded and escaped: a 2 MB value or a lone
surrogate from a ``"\\ud800"`` JSON escape never ends up in a log line whole.

Result models are lenient: an answer the server has already applied must never
become an exception because one of its fields has an odd shape. Fields the docs
type "Object" (``warnings``, ``standardMeta``...) keep the JSON exactly as it
came; scalars are converted when they have the expected shape (``"1"`` for an
int field becomes 1) and are otherwise kept as the JSON value they were, so
their annotations include ``JSONValue``. Unknown enum values stay plain strings.

Attribute names are the snake_case of the wire names (``_iso`` for ``ISO``);
``standardMeta`` keys are snake_case on the wire already.
"""

from __future__ import annotations

# The models live in one module per endpoint, on shared checks; this module
# keeps every name other modules (and user code) import, private ones included.
from ._models_common import CODE_EMPTY_REQUEST as CODE_EMPTY_REQUEST  # noqa: PLC0414
from ._models_common import CODE_ENUM as CODE_ENUM  # noqa: PLC0414
from ._models_common import JAVA_LONG_MAX, JSONValue, parse_datetime
from ._models_common import NOT_ON_WIRE as NOT_ON_WIRE  # noqa: PLC0414
from ._models_expiry import (
    ExpiryDate,
    ExpiryUpdate,
    ExpiryUpdateEntry,
    ExpiryUpdateResult,
    ItemFailure,
    PointsExpiryUpdateLog,
    StandardMeta,
)
from ._models_redemption import CustomField, Entity, Redemption, RedemptionUpdate

__all__ = [
    "JAVA_LONG_MAX",
    "CustomField",
    "Entity",
    "ExpiryDate",
    "ExpiryUpdate",
    "ExpiryUpdateEntry",
    "ExpiryUpdateResult",
    "ItemFailure",
    "JSONValue",
    "PointsExpiryUpdateLog",
    "Redemption",
    "RedemptionUpdate",
    "StandardMeta",
    "parse_datetime",
]
