"""The emulator's clocks and the date arithmetic of expiry answers."""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Protocol


class EmulatorClock(Protocol):
    """The emulator's idea of now: expiry arithmetic and token lifetimes use it."""

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...


class SystemTime:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class ManualTime:
    """A clock that moves only when told: expire tokens or cross midnight in a test."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 7, 10, 35, 28, tzinfo=timezone.utc)
        if start.tzinfo is None:
            raise ValueError("start: must be timezone-aware")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self._now += timedelta(seconds=seconds)


def parse_timezone(value: str | tzinfo) -> tzinfo:
    """``"UTC"``, ``"Z"`` or an offset such as ``"+05:30"``, or a ``tzinfo`` as is."""
    if isinstance(value, tzinfo):
        return value
    text = value.strip()
    if text.upper() in ("UTC", "Z", "+00:00"):
        return timezone.utc
    match = re.fullmatch(r"([+-])([0-9]{2}):?([0-9]{2})", text)
    if not match:
        raise ValueError(f"timezone: expected UTC or an offset such as +05:30, got {value!r}")
    sign = -1 if match.group(1) == "-" else 1
    return timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))


def _iso(moment: datetime) -> str:
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _legacy(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)
