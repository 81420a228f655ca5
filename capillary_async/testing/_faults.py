"""Reproducible fault injection and rate limiting for the emulator."""

from __future__ import annotations

import random
import time
from typing import Literal

import attrs

FaultKind = Literal[
    "429", "429_no_retry_after", "500", "503", "521", "drop_before", "drop_after", "slow"
]


@attrs.frozen(kw_only=True)
class Faults:
    """Per-request fault rates (0 to 1) for the points endpoints, drawn from a seeded RNG.

    ``drop_before`` closes the connection without processing; ``drop_after``
    applies the request, then closes the connection (the ambiguous case);
    ``slow`` applies it and answers only after ``slow_seconds`` (longer than a
    client's timeout). ``retry_after`` is the ``Retry-After`` of the 429s that
    carry one.
    """

    rate_429: float = 0.0
    rate_429_no_retry_after: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_521: float = 0.0
    drop_before: float = 0.0
    drop_after: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 30.0
    retry_after: float = 1.0

    def __attrs_post_init__(self) -> None:
        total = sum(rate for _, rate in self._table())
        if any(rate < 0 for _, rate in self._table()) or total > 1.0 + 1e-9:
            raise ValueError("faults: rates must be >= 0 and add up to at most 1")

    def _table(self) -> list[tuple[FaultKind, float]]:
        return [
            ("429", self.rate_429),
            ("429_no_retry_after", self.rate_429_no_retry_after),
            ("500", self.rate_500),
            ("503", self.rate_503),
            ("521", self.rate_521),
            ("drop_before", self.drop_before),
            ("drop_after", self.drop_after),
            ("slow", self.slow),
        ]

    def draw(self, rng: random.Random) -> FaultKind | None:
        """The fault for the next request, or None."""
        roll = rng.random()
        for kind, rate in self._table():
            if roll < rate:
                return kind
            roll -= rate
        return None


NO_FAULTS = Faults()


class _Bucket:
    """Requests-per-second limit as a token bucket, on real time."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 if a request may pass, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate
