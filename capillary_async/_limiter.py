"""One pace per client: every request waits for a slot of one limiter, single calls first.

A ``Limiter`` has two halves. The *pace* says how long until the next slot
(``Pace.reserve``): a GCRA over the client's rate, a cooldown after a 429 or
a ``Retry-After``, and in adaptive mode a rate that halves on a 429 and grows
back with time. ``LocalPace`` keeps that in this process; the Redis pace
(``capillary_async.redis``) keeps it in Redis, shared by a fleet. The
*dispatcher* in front of it holds at most one reservation at a time and, when
the slot comes, gives it to a waiting single call before any bulk request:
a person waiting on a web request never queues behind a background job.

Every rate a limiter takes (``MIN_RATE`` and up) is honoured however slow: a
slot is one interval after the last, even when that is longer than the 600 s
a pause is bounded by; only a slot further ahead than the pace could have set
is taken for a clock that stepped back.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol, runtime_checkable

import anyio

from ._config import Clock

__all__ = [
    "Dispatcher",
    "Limiter",
    "LocalLimiter",
    "LocalPace",
    "Pace",
    "adaptive_rate",
    "check_rate",
    "longest_interval",
]

#: How far an adaptive rate may fall below its ceiling on repeated 429s.
MIN_SHARE = 1 / 64
#: How fast an adaptive rate grows back, in shares of its ceiling per second.
RECOVERY_PER_SECOND = 0.1
#: The pause after a 429 that says nothing of how long (no ``Retry-After``).
DEFAULT_COOLDOWN = 1.0
#: The longest pause a limiter takes, whatever it is told (an infinite or huge
#: ``Retry-After`` must not park a fleet for ever).
MAX_COOLDOWN = 600.0
#: The slowest rate a limiter takes, in requests per second (one every 17
#: minutes, as a bulk job's ``rate_limit``): slower is a typo. An adaptive rate
#: and a fallback share may go below it, and are honoured as slow as they are.
MIN_RATE = 0.001


def check_rate(rate_limit: object) -> float:
    """``rate_limit`` as a float, or ``ValueError`` naming it when it cannot be honoured."""
    if (
        isinstance(rate_limit, bool)
        or not isinstance(rate_limit, (int, float))
        or not MIN_RATE <= rate_limit < math.inf
    ):
        raise ValueError(
            f"rate_limit: must be a number of requests per second of at least {MIN_RATE} "
            "(one every 17 minutes)"
        )
    return float(rate_limit)


def longest_interval(rate: float, adaptive: bool) -> float:
    """The longest a pace of ``rate`` ever spaces two slots: at its floor when adaptive.

    A next slot further ahead than this (past any cooldown) was not written by
    the pace itself: a clock that stepped back, or damaged state.
    """
    return 1.0 / (rate * MIN_SHARE if adaptive else rate)


def cooldown(seconds: float | None) -> float:
    """A pause made safe: none given is the default; NaN, negative or huge are bounded."""
    if seconds is None or math.isnan(seconds):
        return DEFAULT_COOLDOWN
    return min(MAX_COOLDOWN, max(0.0, seconds))


@runtime_checkable
class Limiter(Protocol):
    """What paces every request of a client; pass one as ``CapillaryClient(limiter=...)``.

    ``acquire`` waits until one more request may go (``priority``: a single call,
    served before bulk work). ``throttled`` tells the limiter the server pushed
    back: every request waits ``seconds``, and with ``slow_down`` (a 429) an
    adaptive limiter lowers its rate. ``aclose`` releases what it holds.
    """

    async def acquire(self, *, priority: bool = False) -> None: ...

    async def throttled(self, seconds: float | None, *, slow_down: bool) -> None: ...

    async def aclose(self) -> None: ...


class Pace(Protocol):
    """The shared half of a limiter: seconds until the next request may go, slot taken."""

    async def reserve(self) -> float: ...

    async def throttled(self, seconds: float | None, *, slow_down: bool) -> None: ...


def adaptive_rate(ceiling: float, base: float, since: float) -> float:
    """The rate ``since`` seconds after it fell to ``base``: it grows back to ``ceiling``.

    Bounded both ways: a clock that stepped back (``since`` < 0) or a damaged
    ``base`` never gives a rate below the floor or above the ceiling.
    """
    rate = base + max(0.0, since) * ceiling * RECOVERY_PER_SECOND
    return min(ceiling, max(ceiling * MIN_SHARE, rate))


class LocalPace:
    """The pace kept in this process (GCRA: the next slot's time, one interval apart)."""

    def __init__(self, clock: Clock, rate_limit: float | None, *, adaptive: bool = False) -> None:
        if rate_limit is not None and not (0 < rate_limit < math.inf):
            raise ValueError("rate_limit: must be a positive number of requests per second")
        if adaptive and rate_limit is None:
            raise ValueError("adaptive: needs a rate_limit to adapt")
        self.clock = clock
        self.ceiling = rate_limit
        self.adaptive = adaptive
        # How far past a cooldown a next slot may legitimately lie (one slow interval).
        self._horizon = (
            MAX_COOLDOWN
            if rate_limit is None
            else max(MAX_COOLDOWN, longest_interval(rate_limit, adaptive) * 1.001)
        )
        self._base = rate_limit
        self._base_at = clock.monotonic()
        self._next = 0.0  # the theoretical arrival time of the next request
        self._cool_until = 0.0

    @property
    def rate(self) -> float | None:
        """The rate now (below the ceiling while an adaptive pace recovers)."""
        if self.ceiling is None or self._base is None or not self.adaptive:
            return self.ceiling
        return adaptive_rate(self.ceiling, self._base, self.clock.monotonic() - self._base_at)

    def free(self) -> bool:
        """Whether a request may go now without taking anything (no rate, no cooldown)."""
        return self.ceiling is None and self._cool_until <= self.clock.monotonic()

    async def reserve(self) -> float:
        now = self.clock.monotonic()
        self._cool_until = min(self._cool_until, now + MAX_COOLDOWN)  # a clock stepped back
        start = max(now, self._cool_until)
        rate = self.rate
        if rate is None:
            return start - now
        if self._next - start > self._horizon:  # the clock stepped back: start afresh
            self._next = start
        slot = max(start, self._next)
        self._next = slot + 1.0 / rate
        return slot - now

    async def throttled(self, seconds: float | None, *, slow_down: bool) -> None:
        now = self.clock.monotonic()
        self._cool_until = max(self._cool_until, now + cooldown(seconds))
        if slow_down and self.adaptive and self.ceiling is not None:
            current = self.rate or self.ceiling
            self._base = max(self.ceiling * MIN_SHARE, current / 2)
            self._base_at = now


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


class Dispatcher:
    """Slots of a ``Pace`` to waiters, one reservation at a time, priority waiters first.

    The first waiter drives: it reserves a slot, sleeps until it, and hands it
    to the best waiter then (a single call if one is waiting, else the oldest
    bulk request), which may be itself. A single call that arrives while a bulk
    request holds a reservation takes that slot: it waits at most one interval.
    """

    def __init__(self, pace: Pace, clock: Clock) -> None:
        self.pace = pace
        self.clock = clock
        self._first: deque[_Waiter] = deque()
        self._rest: deque[_Waiter] = deque()
        self._driving = False

    async def acquire(self, *, priority: bool = False) -> None:
        free = getattr(self.pace, "free", None)
        if free is not None and not self._driving and free():
            return  # no rate and no cooldown: nothing to wait for, nothing to take
        me = _Waiter()
        (self._first if priority else self._rest).append(me)
        try:
            while not me.granted:
                if self._driving:
                    await me.event.wait()
                    me.event = anyio.Event()
                    continue
                await self._drive()
        except BaseException:
            self._forget(me)
            raise

    async def _drive(self) -> None:
        self._driving = True
        try:
            delay = await self.pace.reserve()
            if delay > 0:
                await self.clock.sleep(delay)
            winner = self._first.popleft() if self._first else self._rest.popleft()
            winner.granted = True
            winner.event.set()
        finally:
            self._driving = False
            self._wake_next()

    def _wake_next(self) -> None:
        """Let the best waiter still waiting drive the next slot."""
        for queue in (self._first, self._rest):
            if queue:
                queue[0].event.set()
                return

    def _forget(self, me: _Waiter) -> None:
        for queue in (self._first, self._rest):
            if me in queue:
                queue.remove(me)
        if not self._driving:
            self._wake_next()


class LocalLimiter:
    """The in-process limiter: ``CapillaryClient(rate_limit=...)`` makes one.

    ``rate_limit`` is requests per second, at least ``MIN_RATE`` (0.001, one
    request every 17 minutes; None: no rate, only the pause after a 429 or
    ``Retry-After``). Every rate is honoured however slow: a slot is never
    more than one interval ahead, and that may be longer than the 600 s a
    pause is bounded by. ``adaptive=True`` halves the rate on a 429, down to
    1/64 of ``rate_limit`` (a slot every 64 intervals, kept so too), and lets
    it grow back by a tenth of ``rate_limit`` per second.
    """

    def __init__(
        self, rate_limit: float | None = None, *, adaptive: bool = False, clock: Clock | None = None
    ) -> None:
        from ._config import SystemClock

        self.clock: Clock = clock if clock is not None else SystemClock()
        rate = None if rate_limit is None else check_rate(rate_limit)
        self.pace = LocalPace(self.clock, rate, adaptive=adaptive)
        self._dispatcher = Dispatcher(self.pace, self.clock)

    @property
    def rate(self) -> float | None:
        """Requests per second now."""
        return self.pace.rate

    def __repr__(self) -> str:
        mode = " adaptive" if self.pace.adaptive else ""
        return f"<LocalLimiter rate_limit={self.pace.ceiling}{mode}>"

    async def acquire(self, *, priority: bool = False) -> None:
        await self._dispatcher.acquire(priority=priority)

    async def throttled(self, seconds: float | None, *, slow_down: bool) -> None:
        await self.pace.throttled(seconds, slow_down=slow_down)

    async def aclose(self) -> None:
        return None
