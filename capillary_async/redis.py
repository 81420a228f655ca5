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

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ._config import Clock, SystemClock
from ._limiter import DEFAULT_COOLDOWN, MIN_SHARE, RECOVERY_PER_SECOND, Dispatcher, LocalPace

__all__ = ["RedisLimiter"]

logger = logging.getLogger("capillary_async")

#: How long a member counts as present after its last request, in seconds.
PRESENCE = 10.0
#: How often an unreachable Redis is tried again, in seconds.
PROBE_EVERY = 1.0
#: How long one Redis call may take before the limiter paces locally, in seconds.
REDIS_TIMEOUT = 0.5

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ceiling = tonumber(ARGV[1])
local rate = ceiling
if ARGV[2] == '1' then
  local base = tonumber(redis.call('HGET', KEYS[3], 'base'))
  local at = tonumber(redis.call('HGET', KEYS[3], 'at'))
  if base and at then rate = math.min(ceiling, base + (now - at) * ceiling * tonumber(ARGV[5])) end
end
local slot = now
local cool = tonumber(redis.call('GET', KEYS[2]))
if cool and cool > slot then slot = cool end
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat and tat > slot then slot = tat end
redis.call('SET', KEYS[1], tostring(slot + 1 / rate), 'PX', ARGV[4])
redis.call('ZADD', KEYS[4], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[6]))
redis.call('PEXPIRE', KEYS[4], ARGV[4])
return {tostring(slot - now), redis.call('ZCARD', KEYS[4]), tostring(rate)}
"""

_THROTTLED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_ = now + tonumber(ARGV[1])
local cool = tonumber(redis.call('GET', KEYS[1]))
if (not cool) or until_ > cool then redis.call('SET', KEYS[1], tostring(until_), 'PX', ARGV[4]) end
if ARGV[2] == '1' then
  local ceiling = tonumber(ARGV[3])
  local rate = ceiling
  local base = tonumber(redis.call('HGET', KEYS[2], 'base'))
  local at = tonumber(redis.call('HGET', KEYS[2], 'at'))
  if base and at then rate = math.min(ceiling, base + (now - at) * ceiling * tonumber(ARGV[6])) end
  redis.call('HSET', KEYS[2], 'base', tostring(math.max(ceiling * tonumber(ARGV[5]), rate / 2)),
             'at', tostring(now))
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1
"""


class _RedisPace:
    """The shared pace, with a local one standing in while Redis cannot be reached."""

    def __init__(
        self,
        client: Any,
        name: str,
        rate_limit: float,
        adaptive: bool,
        clock: Clock,
    ) -> None:
        self.client = client
        self.name = name
        self.ceiling = rate_limit
        self.adaptive = adaptive
        self.clock = clock
        tag = "{" + name + "}"  # one hash slot for every key: Redis Cluster runs the script
        self.keys = [f"capillary:{tag}:{part}" for part in ("tat", "cool", "rate", "members")]
        self.member = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.members = 1
        self.rate = rate_limit
        # Keys outlive a quiet fleet long enough to keep its cooldown and adaptive rate.
        self.ttl_ms = str(int(max(60.0, 10 / rate_limit) * 1000))
        self._reserve = client.register_script(_RESERVE)
        self._throttled = client.register_script(_THROTTLED)
        self.local: LocalPace | None = None  # set while Redis is out of reach
        self._probe_at = 0.0
        self.outages = 0

    @property
    def shared(self) -> bool:
        """Whether the limiter paces through Redis right now."""
        return self.local is None

    async def reserve(self) -> float:
        local = self.local
        if local is not None and self.clock.monotonic() < self._probe_at:
            return await local.reserve()
        try:
            delay, members, rate = await self._reserve(
                keys=self.keys,
                args=[
                    repr(self.ceiling),
                    "1" if self.adaptive else "0",
                    self.member,
                    self.ttl_ms,
                    repr(RECOVERY_PER_SECOND),
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
        return max(0.0, float(delay))

    async def throttled(self, seconds: float | None, *, slow_down: bool) -> None:
        pause = DEFAULT_COOLDOWN if seconds is None else max(0.0, seconds)
        if self.local is not None:
            await self.local.throttled(pause, slow_down=slow_down)
            return
        try:
            await self._throttled(
                keys=[self.keys[1], self.keys[2]],
                args=[
                    repr(pause),
                    "1" if slow_down and self.adaptive else "0",
                    repr(self.ceiling),
                    self.ttl_ms,
                    repr(MIN_SHARE),
                    repr(RECOVERY_PER_SECOND),
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
            # Our words, never the exception's text (a URL there may carry a password).
            logger.warning(
                "rate limiter %s: Redis cannot be reached (%s); pacing locally at %.3g "
                "requests per second (a share of %s among %d members) until it answers",
                self.name,
                type(exc).__name__,
                share,
                self.ceiling,
                self.members,
            )
        return await self.local.reserve()


class RedisLimiter:
    """A ``Limiter`` whose rate, cooldown and adaptive rate live in Redis, shared by ``name``.

    ``client`` is a ``redis.asyncio`` client (``Redis`` or ``RedisCluster``);
    ``from_url`` makes one with short timeouts, so an unreachable Redis costs a
    request half a second at most before the local fallback takes over.
    """

    def __init__(
        self,
        client: Any,
        *,
        name: str,
        rate_limit: float,
        adaptive: bool = False,
        clock: Clock | None = None,
        owns_client: bool = False,
    ) -> None:
        if not name or not isinstance(name, str) or "{" in name or "}" in name:
            raise ValueError("name: must be a non-empty string without braces")
        if isinstance(rate_limit, bool) or not 0 < rate_limit < math.inf:
            raise ValueError("rate_limit: must be a positive number of requests per second")
        self.name = name
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._pace = _RedisPace(client, name, float(rate_limit), adaptive, self.clock)
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

    async def acquire(self, *, priority: bool = False) -> None:
        await self._dispatcher.acquire(priority=priority)

    async def throttled(self, seconds: float | None, *, slow_down: bool) -> None:
        await self._pace.throttled(seconds, slow_down=slow_down)

    async def aclose(self) -> None:
        if self._owns_client:
            with contextlib.suppress(RedisError, OSError):
                await self._client.aclose()
