"""One pace per client: every request waits for a slot of one limiter, single calls first.

A ``Limiter`` has two halves. The *pace* says how long until the next slot
(``Pace.reserve``): a GCRA over the client's rate, a cooldown after a 429 or
a ``Retry-After``, and in adaptive mode a rate that halves on a 429 and grows
back with time. ``LocalPace`` keeps that in this process; ``SHARED_PACE`` is
the same pace as a Lua script, which ``capillary_async.redis`` runs in Redis
for a fleet, behind a ``FallbackPace`` that paces locally at its share while
Redis cannot be used. The *dispatcher* in front of a pace holds at most one
reservation at a time and, when the slot comes, gives it to a waiting single
call before any bulk request: a person waiting on a web request never queues
behind a background job.

Every rate a limiter takes (``MIN_RATE`` and up) is honoured however slow: a
slot is one interval after the last, even when that is longer than the 600 s
a pause is bounded by; only a slot further ahead than the pace could have set
is taken for a clock that stepped back.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from typing import Any, Protocol, runtime_checkable

import anyio

from ._bounded import bounded
from ._config import Clock

__all__ = [
    "SHARED_PACE",
    "Dispatcher",
    "FallbackPace",
    "Limiter",
    "LocalLimiter",
    "LocalPace",
    "Pace",
    "adaptive_rate",
    "bounded",
    "check_rate",
    "longest_interval",
    "slot_horizon",
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


#: How many members of a fleet a shared pace expects waiting for their slots at
#: once, at most: each holds one reservation, so a legitimate next slot lies at
#: most this many of the slowest intervals past a cooldown.
MAX_WAITING = 1024


def slot_horizon(ceiling: float) -> float:
    """How far ahead a shared pace's next slot may legitimately lie, in seconds."""
    return MAX_COOLDOWN + MAX_WAITING * longest_interval(ceiling, True) + 1


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

    def hold_until(self, until: float) -> None:
        """Hold every slot until ``until`` on this clock (a cooldown heard before)."""
        self._cool_until = max(self._cool_until, min(until, self.clock.monotonic() + MAX_COOLDOWN))

    async def throttled(self, seconds: float | None, *, slow_down: bool) -> None:
        now = self.clock.monotonic()
        self._cool_until = max(self._cool_until, now + cooldown(seconds))
        if slow_down and self.adaptive and self.ceiling is not None:
            current = self.rate or self.ceiling
            self._base = max(self.ceiling * MIN_SHARE, current / 2)
            self._base_at = now


# The same pace kept in a shared store: a Lua script for Redis (capillary_async.redis
# runs it), one round trip per request, on the store's clock. Three modes: "take" a
# slot, "peek" (every read and write of "take", no slot taken) and "cool" (a 429 or
# Retry-After). Times are text with microseconds (Lua's tostring keeps four
# decimals of an epoch time: too coarse above a few thousand requests per second).
# A value no limiter writes (not a number, NaN, infinite, a cooldown past the
# longest pause, a next slot past ``slot_horizon``, a rate stamped in the future)
# is replaced, and its role returned. KEYS: tat, cool, rate, members. ARGV:
# ceiling, adaptive, member, ttl (ms), floor share, recovery per second, longest
# pause, presence, slot horizon; then mode, pause, slow down.
SHARED_PACE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ceiling, ttl, longest = tonumber(ARGV[1]), tonumber(ARGV[4]), tonumber(ARGV[7])
local floor, mode = ceiling * tonumber(ARGV[5]), ARGV[10]
local damaged = {}
local function stamp(x) return string.format('%.6f', x) end
local function keep(key, at)
  redis.call('SET', key, stamp(at), 'PX', math.max(ttl, math.ceil((at - now) * 1000) + 1000))
end
local function time_in(key, ahead, role)
  local x = redis.call('GET', key)
  if not x then return nil end
  x = tonumber(x)
  if x and x >= 0 and x <= now + ahead then return x end
  redis.call('DEL', key)
  damaged[#damaged + 1] = role
end
local function rate_now()
  local got = redis.call('HMGET', KEYS[3], 'base', 'at')
  if not (got[1] or got[2]) then return ceiling end
  local base, at = tonumber(got[1]), tonumber(got[2])
  if not (base and at and base > 0 and base < math.huge and at >= 0 and at <= now + 1) then
    redis.call('HDEL', KEYS[3], 'base', 'at')
    damaged[#damaged + 1] = 'rate'
    return ceiling
  end
  local grown = base + math.max(0, now - at) * ceiling * tonumber(ARGV[6])
  return math.min(ceiling, math.max(floor, grown))
end
local rate = ceiling
if ARGV[2] == '1' then rate = rate_now() end
local cool = time_in(KEYS[2], longest + 1, 'cool')
local delay = 0
if mode == 'cool' then
  local until_ = now + tonumber(ARGV[11])
  if (not cool) or until_ > cool then keep(KEYS[2], until_) end
  if ARGV[12] == '1' then
    local half = string.format('%.17g', math.max(floor, rate / 2))
    redis.call('HSET', KEYS[3], 'base', half, 'at', stamp(now))
    redis.call('PEXPIRE', KEYS[3], ttl)
  end
else
  redis.call('HSETNX', KEYS[3], 'ceiling', ARGV[1])
  redis.call('PEXPIRE', KEYS[3], ttl)
  local slot = now
  if cool and cool > slot then slot = cool end
  local tat = time_in(KEYS[1], tonumber(ARGV[9]), 'tat')
  if tat and tat > slot then slot = tat end
  if mode == 'take' then keep(KEYS[1], slot + 1 / rate) else keep(KEYS[1], slot) end
  redis.call('ZADD', KEYS[4], now, ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[8]))
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '(' .. stamp(now + 1), '+inf')
  redis.call('PEXPIRE', KEYS[4], ttl)
  delay = slot - now
end
return {stamp(delay), redis.call('ZCARD', KEYS[4]), string.format('%.17g', rate),
        redis.call('HGET', KEYS[3], 'ceiling') or '', table.concat(damaged, ',')}
"""


class FallbackPace:
    """A pace kept in a shared store, with this member's share kept locally while it fails.

    A subclass reaches the store in ``remote(mode, pause, slow)``: ``"take"`` a
    slot (the delay until it), or ``"cool"`` (record a pause). Any failure of it
    (an ``Exception``; cancellation goes through) is an outage: one warning
    naming the cause (``describe``), then a local pace at ``ceiling / members``
    that holds any cooldown heard before; the store is probed every
    ``probe_every`` seconds, and the first answer rejoins it. So ``reserve``
    and ``throttled`` never raise but for cancellation.
    """

    #: What the store is called in warnings, and how often it is probed during an outage.
    store, probe_every = "the store", 1.0
    #: How long a call to the store may take, and a probe of it during an outage.
    timeout, probe_timeout = 0.5, 0.1

    def __init__(  # noqa: PLR0917 - the limiter's own settings, handed over once
        self,
        name: str,
        ceiling: float,
        adaptive: bool,
        clock: Clock,
        members: int,
        log: logging.Logger,
    ) -> None:
        self.name = name
        self.ceiling = ceiling
        self.adaptive = adaptive
        self.clock = clock
        #: Members assumed until the store tells (the fallback's share divides by it).
        self.members = members
        self.rate = ceiling  # the rate the store last said (an adaptive one recovers)
        self.log = log
        self._warned: set[str] = set()  # what was warned of once
        self.local: LocalPace | None = None  # set while the store cannot be used
        self.outages = 0
        self._probe_at = 0.0
        self._cool_until = 0.0  # the last cooldown heard of, kept for a fallback
        self._stuck: asyncio.Future[Any] | None = None  # a call abandoned, still running

    async def remote(self, mode: str, pause: float = 0.0, slow: bool = False) -> float:
        raise NotImplementedError

    def describe(self, exc: BaseException) -> str:
        return f"the shared pace failed ({type(exc).__name__})"

    def _warn_once(self, what: str, message: str, *args: object) -> None:
        """Warn of ``what`` the first time only (``message`` starts with the name)."""
        if what not in self._warned:
            self._warned.add(what)
            self.log.warning(message, self.name, *args)

    def _abandoned(self, task: asyncio.Future[Any]) -> None:
        self._stuck = task

    def _still_stuck(self) -> bool:
        """Whether a call abandoned earlier still runs: no other starts until it ends."""
        stuck = self._stuck
        if stuck is not None and stuck.done():
            self._stuck = stuck = None
        return stuck is not None

    async def reserve(self) -> float:
        local = self.local
        if local is not None and (self.clock.monotonic() < self._probe_at or self._still_stuck()):
            return await local.reserve()
        try:
            delay = await bounded(
                lambda: self.remote("take"),
                self.timeout if local is None else self.probe_timeout,
                self._abandoned,
            )
        except Exception as exc:  # noqa: BLE001 - any failure is an outage, never the caller's
            return await self._fall_back(exc).reserve()
        if local is not None:
            self.local = None
            self.log.warning(
                "rate limiter %s: %s answers again; pacing is shared", self.name, self.store
            )
        return delay

    async def throttled(self, seconds: float | None, *, slow_down: bool) -> None:
        pause = cooldown(seconds)
        self._cool_until = max(self._cool_until, self.clock.monotonic() + pause)
        local = self.local
        if local is None:
            slow = slow_down and self.adaptive
            try:
                await bounded(
                    lambda: self.remote("cool", pause, slow), self.timeout, self._abandoned
                )
            except Exception as exc:  # noqa: BLE001 - any failure is an outage
                local = self._fall_back(exc)
            else:
                return
        await local.throttled(pause, slow_down=slow_down)

    def _fall_back(self, exc: BaseException) -> LocalPace:
        """Pace locally at this member's share of the rate; try the store again soon."""
        self._probe_at = self.clock.monotonic() + self.probe_every
        if self.local is None:
            self.outages += 1
            share = self.ceiling / self.members
            self.local = LocalPace(self.clock, share, adaptive=self.adaptive)
            self.local.hold_until(self._cool_until)  # a cooldown heard before still holds
            try:
                why = self.describe(exc)
            except Exception:  # noqa: BLE001 - naming the cause never fails a request
                why = f"the shared pace failed ({type(exc).__name__})"
            self.log.warning(
                "rate limiter %s: %s; pacing locally at %.3g requests per second (a share of "
                "%g among %d members) until it answers",
                self.name,
                why,
                share,
                self.ceiling,
                self.members,
            )
        return self.local


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
