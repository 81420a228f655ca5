"""Capillary's enumerations; each member's value is its wire string."""

from __future__ import annotations

import enum

__all__ = [
    "EntityType",
    "ExpiryType",
    "ExpiryUpdateReasonType",
    "IdentifierName",
    "PointCategoryType",
    "PointsAwardedRefType",
]


class WireEnum(str, enum.Enum):
    """A str-valued enum whose ``str()`` is the wire value (``StrEnum`` is 3.11+)."""

    def __str__(self) -> str:
        return str(self.value)


class EntityType(WireEnum):
    """``entity.type`` of updateRedemption."""

    CUSTOMER = "CUSTOMER"
    USERGROUP2 = "USERGROUP2"
    FLEET = "FLEET"


class IdentifierName(WireEnum):
    """How updateExpiry finds the customer (``identifierName``)."""

    MOBILE = "mobile"
    ID = "id"
    EXTERNAL_ID = "externalId"
    EMAIL = "email"


class PointsAwardedRefType(WireEnum):
    """Kind of points-awarded record (``pointsAwardedRefType`` / ``paType``)."""

    POINT_AWARDED = "POINT_AWARDED"
    POINT_AWARDED_BILL_PROMOTION = "POINT_AWARDED_BILL_PROMOTION"
    POINT_AWARDED_LINEITEM = "POINT_AWARDED_LINEITEM"
    POINT_AWARDED_LINEITEM_PROMOTION = "POINT_AWARDED_LINEITEM_PROMOTION"
    POINT_AWARDED_CUSTOMER_PROMOTION = "POINT_AWARDED_CUSTOMER_PROMOTION"


class ExpiryType(WireEnum):
    """How ``expiryValue`` is read.

    FIXED_DATE and IMMEDIATE set the same end state however often they are
    applied; FIXED_DAYS and FIXED_MONTHS count from the moment of processing,
    so repeating them is not safe.
    """

    FIXED_DATE = "FIXED_DATE"
    FIXED_DAYS = "FIXED_DAYS"
    FIXED_MONTHS = "FIXED_MONTHS"
    IMMEDIATE = "IMMEDIATE"

    @property
    def idempotent(self) -> bool:
        """Whether applying the update twice leaves the same state as once."""
        return self in (ExpiryType.FIXED_DATE, ExpiryType.IMMEDIATE)


class ExpiryUpdateReasonType(WireEnum):
    """``expiryUpdateReasonType``."""

    EARLY_EXPIRY = "EARLY_EXPIRY"
    EXTEND_EXPIRY = "EXTEND_EXPIRY"


class PointCategoryType(WireEnum):
    """``pointCategoryType``."""

    REGULAR = "REGULAR"
    PROMISED = "PROMISED"
