"""The pace of a bulk job inside its client's limiter: AIMD concurrency, a rate, the retry budget.

Everything here is about *when* a request may go, never about what it holds.
"""

from __future__ import annotations

import anyio
import attrs

from .._config import Clock
from .._exceptions import CapillaryError, RateLimitError, TransportError

__all__ = ["MIN_RATE", "Budget", "Pacer", "RetryBudget"]

#: The slowest rate a job takes, in requests per second.
MIN_RATE = 0.001


@attrs.frozen(kw_only=True)
class RetryBudget:
    """A job-wide retry allowance, refilled by successes (as botocore's retry quota).

    Each retry costs ``retry_cost`` (``timeout_cost`` after a timeout or lost
    connection), each successful request refunds ``success_refund``; when a
    retry cannot be paid for, the server is failing faster than it recovers and
    the job stops. 429s are not charged: they slow the job down instead.
    """

    capacity: int = 500
    retry_cost: int = 5
    timeout_cost: int = 10
    success_refund: int = 1


class Budget:
    """A ``RetryBudget`` being spent."""

    def __init__(self, config: RetryBudget) -> None:
        self.config = config
        self.available = config.capacity

    def charge(self, error: CapillaryError) -> bool:
        if isinstance(error, RateLimitError):
            return True
        cost = (
            self.config.timeout_cost
            if isinstance(error, TransportError)
            else self.config.retry_cost
        )
        if cost > self.available:
            return False
        self.available -= cost
        return True

    def refund(self) -> None:
        self.available = min(self.config.capacity, self.available + self.config.success_refund)


class Pacer:
    """A job's own pace, inside the client's: AIMD concurrency and an optional narrower rate.

    The client's limiter pauses every request after a 429 or ``Retry-After``;
    a job also halves its concurrency (and its own rate) on a 429, and grows
    them back by a step per window of successes.
    """

    def __init__(self, clock: Clock, concurrency: int, rate_limit: float | None) -> None:
        self.clock = clock
        self.max_concurrency = concurrency
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.max_rate = rate_limit
        self.rate = rate_limit
        self.tokens = 1.0
        self.stamp = clock.monotonic()
        self.lock = anyio.Lock()
        self.successes = 0

    async def wait_turn(self) -> None:
        """Wait for a token of the job's own rate limit, if it has one."""
        if self.rate is None:
            return
        async with self.lock:
            while True:
                now = self.clock.monotonic()
                self.tokens = min(1.0, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                await self.clock.sleep((1.0 - self.tokens) / self.rate)

    def slow_down(self) -> None:
        """A 429: concurrency and the job's rate halve."""
        self.limiter.total_tokens = max(1, int(self.limiter.total_tokens) // 2)
        if self.rate is not None and self.max_rate is not None:
            self.rate = max(self.max_rate / 64, self.rate / 2)
        self.successes = 0

    def speed_up(self) -> None:
        """A success: after a window of them, one more worker and a tenth more rate."""
        self.successes += 1
        if self.successes < self.limiter.total_tokens:
            return
        self.successes = 0
        if self.limiter.total_tokens < self.max_concurrency:
            self.limiter.total_tokens = int(self.limiter.total_tokens) + 1
        if self.rate is not None and self.max_rate is not None and self.rate < self.max_rate:
            self.rate = min(self.max_rate, self.rate + self.max_rate / 10)
