"""A pace shared through Redis by every process and host that uses the same ``name``.

``pip install "capillary-async[redis]"``, then::

    from capillary_async import CapillaryClient
    from capillary_async.redis import RedisLimiter

    limiter = RedisLimiter.from_url("redis://host:6379/0", name="org-469", rate_limit=50.0)
    client = CapillaryClient(cluster, auth=auth, limiter=limiter)

The rate is a GCRA kept in Redis and taken in one Lua script, one round trip
per request, on Redis's own clock (hosts need not agree on the time). A 429
or ``Retry-After`` seen by any member sets a cooldown every member waits out;
in adaptive mode it also halves the shared rate, which grows back by a tenth
of ``rate_limit`` per second. Keys share one hash tag, ``{name}``, so the
script works on Redis Cluster.

When Redis cannot be reached, requests neither stall nor fail: the limiter
warns once and paces locally at ``rate_limit`` divided by the number of
members it last saw (each member's fair share, so an outage does not let the
fleet exceed the limit), probes Redis again each second, and rejoins the
shared pace when Redis answers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import uuid
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._config import Clock, SystemClock
from ._exceptions import CapillaryError
from ._limiter import (
    MAX_COOLDOWN,
    MIN_SHARE,
    RECOVERY_PER_SECOND,
    Dispatcher,
    LocalPace,
    cooldown,
)

__all__ = ["RedisLimiter", "RedisLimiterError"]

#: The limiter's own logger: a command line shows its warnings (an outage, a rejoin).
logger = logging.getLogger("capillary_async.redis")

#: How long a member counts as present after its last request, in seconds.
PRESENCE = 10.0
#: How often an unreachable Redis is tried again, in seconds.
PROBE_EVERY = 1.0
#: How long one Redis call may take before the limiter paces locally, in seconds.
REDIS_TIMEOUT = 0.5
#: How long a probe of an unreachable Redis may hold up a request, in seconds.
PROBE_TIMEOUT = 0.1

# Times are kept as text with microseconds (Lua's tostring keeps four decimals of an
# epoch time: 100 us, too coarse above a few thousand requests per second). The
# rate never leaves [ceiling / 64, ceiling], a timestamp from a clock that stepped
# back never reaches further ahead than the longest pause, and the ceiling the
# first member set is returned so that a member with another one can say so.
_COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ceiling = tonumber(ARGV[1])
local floor = ceiling * tonumber(ARGV[5])
local longest = tonumber(ARGV[7])
local function rate_now(key)
  local base = tonumber(redis.call('HGET', key, 'base'))
  local at = tonumber(redis.call('HGET', key, 'at'))
  if not (base and at) then return ceiling end
  local since = math.max(0, now - at)
  return math.min(ceiling, math.max(floor, base + since * ceiling * tonumber(ARGV[6])))
end
local function stamp(x) return string.format('%.6f', x) end
"""

_RESERVE = (
    _COMMON
    + """
redis.call('HSETNX', KEYS[3], 'ceiling', ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
local rate = ceiling
if ARGV[2] == '1' then rate = rate_now(KEYS[3]) end
local slot = now
local cool = tonumber(redis.call('GET', KEYS[2]))
if cool and cool > now + longest then cool = now + longest end
if cool and cool > slot then slot = cool end
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat and tat > slot + longest then tat = nil end
if tat and tat > slot then slot = tat end
redis.call('SET', KEYS[1], stamp(slot + 1 / rate), 'PX', ARGV[4])
redis.call('ZADD', KEYS[4], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[8]))
redis.call('PEXPIRE', KEYS[4], ARGV[4])
return {stamp(slot - now), redis.call('ZCARD', KEYS[4]), stamp(rate),
        redis.call('HGET', KEYS[3], 'ceiling')}
"""
)

_THROTTLED = (
    _COMMON
    + """
local until_ = now + tonumber(ARGV[2])
local cool = tonumber(redis.call('GET', KEYS[1]))
if (not cool) or until_ > cool or cool > now + longest then
  redis.call('SET', KEYS[1], stamp(until_), 'PX', ARGV[4])
end
if ARGV[3] == '1' then
  local rate = rate_now(KEYS[2])
  redis.call('HSET', KEYS[2], 'base', stamp(math.max(floor, rate / 2)), 'at', stamp(now))
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1
"""
)

#: Redis errors that are a configuration mistake rather than an outage.
_REFUSALS = ("NOAUTH", "WRONGPASS", "NOPERM", "NOSCRIPT")


class RedisLimiterError(CapillaryError):
    """Redis cannot be used for the shared pace (unreachable, or refusing the credentials)."""


def _why(exc: BaseException) -> str:
    """What went wrong, in our words (a URL in redis's own text may carry a password)."""
    if isinstance(exc, AuthenticationError) or (
        isinstance(exc, ResponseError) and str(exc).startswith(_REFUSALS)
    ):
        return "Redis refused the credentials or the command (check the URL's user and password)"
    if isinstance(exc, (TimeoutError, RedisTimeoutError)):
        return "Redis did not answer in time"
    return f"Redis cannot be reached ({type(exc).__name__})"


class _RedisPace:
    """The shared pace, with a local one standing in while Redis cannot be reached."""

    def __init__(  # noqa: PLR0917 - the limiter's own settings, handed over once
        self,
        client: Any,
        name: str,
        rate_limit: float,
        adaptive: bool,
        clock: Clock,
        members: int,
    ) -> None:
        self.client = client
        self.name = name
        self.ceiling = rate_limit
        self.adaptive = adaptive
        self.clock = clock
        tag = "{" + name + "}"  # one hash slot for every key: Redis Cluster runs the script
        self.keys = [f"capillary:{tag}:{part}" for part in ("tat", "cool", "rate", "members")]
        self.member = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        #: Members assumed until Redis tells (the fallback's share divides by it).
        self.members = members
        self.rate = rate_limit
        # Keys outlive a quiet fleet long enough to keep its cooldown and adaptive rate.
        self.ttl_ms = str(int(max(60.0, 10 / rate_limit) * 1000))
        self._reserve = client.register_script(_RESERVE)
        self._throttled = client.register_script(_THROTTLED)
        self.local: LocalPace | None = None  # set while Redis is out of reach
        self._probe_at = 0.0
        self._cool_until = 0.0  # the last cooldown heard of, kept for a fallback
        self._warned_ceiling = False
        self.outages = 0

    @property
    def shared(self) -> bool:
        """Whether the limiter paces through Redis right now."""
        return self.local is None

    async def reserve(self) -> float:
        local = self.local
        if local is not None and self.clock.monotonic() < self._probe_at:
            return await local.reserve()
        timeout = REDIS_TIMEOUT if local is None else PROBE_TIMEOUT
        try:
            with anyio.fail_after(timeout):
                delay, members, rate, ceiling = await self._reserve(
                    keys=self.keys,
                    args=[
                        repr(self.ceiling),
                        "1" if self.adaptive else "0",
                        self.member,
                        self.ttl_ms,
                        repr(MIN_SHARE),
                        repr(RECOVERY_PER_SECOND),
                        repr(MAX_COOLDOWN),
                        repr(PRESENCE),
                    ],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            return await self._fall_back(exc)
        if local is not None:
            self.local = None
            logger.warning("rate limiter %s: Redis answers again; pacing is shared", self.name)
        self.members = max(1, int(members))
        self.rate = float(rate)
        self._check_ceiling(ceiling)
        return min(MAX_COOLDOWN, max(0.0, float(delay)))

    def _check_ceiling(self, stored: Any) -> None:
        try:
            theirs = float(stored.decode() if isinstance(stored, bytes) else stored)
        except (TypeError, ValueError):
            return
        if theirs != self.ceiling and not self._warned_ceiling:
            self._warned_ceiling = True
            logger.warning(
                "rate limiter %s: another member set the shared rate to %g requests per "
                "second, this one to %g; the pace is shared, so give every member the same "
                "rate_limit",
                self.name,
                theirs,
                self.ceiling,
            )

    async def throttled(self, seconds: float | None, *, slow_down: bool) -> None:
        pause = cooldown(seconds)
        self._cool_until = max(self._cool_until, self.clock.monotonic() + pause)
        if self.local is not None:
            await self.local.throttled(pause, slow_down=slow_down)
            return
        try:
            with anyio.fail_after(REDIS_TIMEOUT):
                await self._throttled(
                    keys=[self.keys[1], self.keys[2]],
                    args=[
                        repr(self.ceiling),
                        repr(pause),
                        "1" if slow_down and self.adaptive else "0",
                        self.ttl_ms,
                        repr(MIN_SHARE),
                        repr(RECOVERY_PER_SECOND),
                        repr(MAX_COOLDOWN),
                    ],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            await self._fall_back(exc)
            await self._local().throttled(pause, slow_down=slow_down)

    def _local(self) -> LocalPace:
        if self.local is None:
            raise RuntimeError("the limiter is not in its local fallback")
        return self.local

    async def _fall_back(self, exc: BaseException) -> float:
        """Pace locally at this member's share of the rate; try Redis again in a second."""
        self._probe_at = self.clock.monotonic() + PROBE_EVERY
        if self.local is None:
            self.outages += 1
            share = self.ceiling / self.members
            self.local = LocalPace(self.clock, share, adaptive=self.adaptive)
            remaining = self._cool_until - self.clock.monotonic()
            if remaining > 0:  # a cooldown heard before the outage still holds
                await self.local.throttled(remaining, slow_down=False)
            logger.warning(
                "rate limiter %s: %s; pacing locally at %.3g requests per second (a share of "
                "%g among %d members) until it answers",
                self.name,
                _why(exc),
                share,
                self.ceiling,
                self.members,
            )
        return await self.local.reserve()

    async def check(self) -> None:
        """One shared reservation now, or ``RedisLimiterError`` saying why not."""
        try:
            with anyio.fail_after(REDIS_TIMEOUT * 2):
                await self.client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise RedisLimiterError(f"rate limiter {self.name}: {_why(exc)}") from None


class RedisLimiter:
    """A ``Limiter`` whose rate, cooldown and adaptive rate live in Redis, shared by ``name``.

    ``client`` is a ``redis.asyncio`` client (``Redis`` or ``RedisCluster``);
    ``from_url`` makes one. Every Redis call is bounded (half a second; a
    tenth while probing an outage), so a Redis that hangs costs little before
    the local fallback takes over. Every member must give the same
    ``rate_limit`` (one that differs is warned of once). ``members`` is how
    many members to assume until Redis has been reached: the fallback's share
    is ``rate_limit / members``, so a fleet of N that starts while Redis is
    down should say N. Like any asyncio client, it belongs to the event loop
    it is first used in.
    """

    def __init__(
        self,
        client: Any,
        *,
        name: str,
        rate_limit: float,
        adaptive: bool = False,
        members: int = 1,
        clock: Clock | None = None,
        owns_client: bool = False,
    ) -> None:
        if not name or not isinstance(name, str) or "{" in name or "}" in name:
            raise ValueError("name: must be a non-empty string without braces")
        if len(name) > 200:
            raise ValueError("name: must be at most 200 characters")
        if isinstance(rate_limit, bool) or not 0 < rate_limit < math.inf:
            raise ValueError("rate_limit: must be a positive number of requests per second")
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ValueError("members: must be a whole number of at least 1")
        self.name = name
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._pace = _RedisPace(client, name, float(rate_limit), adaptive, self.clock, members)
        self._dispatcher = Dispatcher(self._pace, self.clock)
        self._client = client
        self._owns_client = owns_client

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        name: str,
        rate_limit: float,
        adaptive: bool = False,
        members: int = 1,
        clock: Clock | None = None,
    ) -> RedisLimiter:
        """A limiter on the Redis at ``url`` (``redis://``, ``rediss://``, ``unix://``)."""
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            retry_on_timeout=False,
            retry=Retry(NoBackoff(), 0),  # the limiter falls back at once; it retries itself
        )
        return cls(
            client,
            name=name,
            rate_limit=rate_limit,
            adaptive=adaptive,
            members=members,
            clock=clock,
            owns_client=True,
        )

    def __repr__(self) -> str:
        state = "shared" if self._pace.shared else "local fallback"
        return f"<RedisLimiter {self.name} rate_limit={self._pace.ceiling} {state}>"

    @property
    def shared(self) -> bool:
        """Whether requests are paced through Redis now (False while it cannot be reached)."""
        return self._pace.shared

    @property
    def members(self) -> int:
        """How many members (processes) used this name within the last ten seconds."""
        return self._pace.members

    @property
    def rate(self) -> float:
        """The shared rate last seen (below ``rate_limit`` while an adaptive pace recovers)."""
        return self._pace.rate

    async def check(self) -> None:
        """Reach Redis now: ``RedisLimiterError`` (our words, no URL) if it cannot be used.

        A command line calls this before sending anything, so that a wrong URL
        or password is a usage error, not a fleet quietly pacing alone.
        """
        await self._pace.check()

    async def acquire(self, *, priority: bool = False) -> None:
        await self._dispatcher.acquire(priority=priority)

    async def throttled(self, seconds: float | None, *, slow_down: bool) -> None:
        await self._pace.throttled(seconds, slow_down=slow_down)

    async def aclose(self) -> None:
        if self._owns_client:
            with contextlib.suppress(RedisError, OSError):
                await self._client.aclose()
