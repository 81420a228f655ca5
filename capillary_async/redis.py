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

Whatever goes wrong with Redis, requests neither stall nor fail: the limiter
warns once, naming the cause, paces locally at its share of the rate, and
rejoins when Redis answers. A value no limiter writes is replaced, with a
warning. ``check()`` runs the real script once before a run; ``claim()``
keeps two live runs off the same rows of one input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
import uuid
from typing import Any

import anyio
from redis import exceptions as rx
from redis.asyncio.sentinel import MasterNotFoundError

from ._config import Clock, SystemClock
from ._exceptions import CapillaryError
from ._limiter import (
    MAX_COOLDOWN,
    MIN_SHARE,
    RECOVERY_PER_SECOND,
    SHARED_PACE,
    Dispatcher,
    FallbackPace,
    bounded,
    check_rate,
    slot_horizon,
)
from ._redis_urls import MAX_REPLY, REDIS_TIMEOUT, client_from_url  # noqa: F401 - MAX_REPLY: here too

__all__ = ["RedisLimiter", "RedisLimiterError", "ShardClaimError"]

#: The limiter's own logger: a command line shows its warnings (an outage, a rejoin).
logger = logging.getLogger("capillary_async.redis")

#: How long a member counts as present after its last request, in seconds.
PRESENCE = 10.0

# The claims on one input: a hash of claim id -> "expiry_ms K N holder" (0 0: every
# row). Expired or unreadable claims are dropped; an overlapping live one is
# returned as {0, holder, K, N}; otherwise this claim is (re)written: {1}.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[6] == 'release' then return {redis.call('HDEL', KEYS[1], ARGV[1])} end
local function gcd(a, b) while b > 0 do a, b = b, a % b end return a end
local k, n, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local claims = redis.call('HGETALL', KEYS[1])
for i = 1, #claims, 2 do
  local until_, k2, n2, holder = string.match(claims[i + 1], '^(%d+) (%d+) (%d+) (.*)$')
  until_, k2, n2 = tonumber(until_), tonumber(k2), tonumber(n2)
  if not (until_ and until_ > now and k2 <= n2) then
    redis.call('HDEL', KEYS[1], claims[i])
  elseif claims[i] ~= ARGV[1] and (n == 0 or n2 == 0 or
         (k - 1) % gcd(n, n2) == (k2 - 1) % gcd(n, n2)) then
    return {0, holder, k2, n2}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d %d %d %s', now + ttl, k, n, ARGV[4]))
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return {1}
"""

#: The keys the pace script may name as damaged, by what each holds.
_ROLES = {"tat": "the next slot", "cool": "the cooldown", "rate": "the adaptive rate"}


class RedisLimiterError(CapillaryError):
    """Redis cannot be used for the shared pace: unreachable, refusing, or misconfigured."""


class ShardClaimError(RedisLimiterError):
    """Another live run holds the same or an overlapping shard of this input.

    ``holder`` is the other run's holder text; ``shard`` its ``(K, N)``, None
    for the whole input.
    """

    def __init__(self, message: str, holder: str, shard: tuple[int, int] | None) -> None:
        super().__init__(message)
        self.holder = holder
        self.shard = shard


class _ForeignReplyError(Exception):
    """Redis answered with something the limiter's scripts never return."""


def _why(exc: BaseException) -> str:
    """What went wrong, in our words (redis's own text may quote the URL or a password)."""
    text, name = str(exc), type(exc).__name__
    chain = [exc.__cause__, exc.__context__]
    if isinstance(exc, (_ForeignReplyError, rx.InvalidResponse)):
        return "Redis answered with a reply the limiter never gets (a proxy, or another server?)"
    if isinstance(exc, rx.AuthenticationError) or text.startswith(("NOAUTH", "WRONGPASS")):
        return "Redis refused the credentials (check the URL's user and password)"
    if isinstance(exc, rx.NoPermissionError) or text.startswith("NOPERM"):
        return "the Redis user may not run the limiter's script on its keys (see its ACL)"
    if isinstance(exc, rx.AskError) or text.startswith(("MOVED ", "ASK ")):  # redis 5: text
        return (
            "this Redis is a cluster node without the limiter's keys (MOVED): use a "
            "redis+cluster:// URL"
        )
    if isinstance(exc, rx.ReadOnlyError):
        return "this Redis is a read-only replica: give the limiter the primary"
    if "DB index is out of range" in text:
        return "the URL's database index is out of range for this Redis"
    if "WRONGTYPE" in text:
        return "a key of the limiter holds another type of value (is the name used elsewhere?)"
    if "unknown command" in text:
        return "this server does not run Redis scripts (a Sentinel, or a proxy?)"
    tls = " ".join(str(e) for e in [exc, *chain] if isinstance(e, ssl.SSLError)).upper()
    if "CERTIFICATE_VERIFY_FAILED" in tls or "CERTIFICATE_VERIFY_FAILED" in text:
        return "Redis's TLS certificate could not be verified (check ssl_ca_certs and the host)"
    if "CERTIFICATE_REQUIRED" in tls:
        return "Redis asks for a TLS client certificate (give ssl_certfile and ssl_keyfile)"
    if any(word in tls for word in ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN")):
        return "Redis refused the TLS client certificate (is it signed by a CA Redis trusts?)"
    if tls:
        return "the TLS handshake with Redis failed (a TLS URL on a plain port?)"
    if any(isinstance(e, ConnectionResetError) for e in chain):
        return (
            "Redis closed the connection (a TLS port given a redis:// URL, or a TLS client "
            "certificate it asks for: ssl_certfile and ssl_keyfile?)"
        )
    if isinstance(exc, MasterNotFoundError):
        return "no Sentinel names a master for the service (check its name, and the Sentinels)"
    if isinstance(exc, TypeError) and "keyword argument" in text:
        return "the Redis client was given an option it does not know"
    if isinstance(exc, (TimeoutError, rx.TimeoutError)):
        return "Redis did not answer in time"
    if isinstance(exc, rx.ClusterDownError) or text.startswith("CLUSTERDOWN"):
        return "the Redis Cluster is down"
    if isinstance(exc, rx.RedisClusterException):
        return "no node of the Redis Cluster can be reached"
    if isinstance(exc, rx.ResponseError):
        return "Redis refused the limiter's script with an error"
    if isinstance(exc, (rx.RedisError, OSError)):
        return f"Redis cannot be reached ({name})"
    return f"the Redis client failed on an answer, {name} (a proxy, or another server?)"


def _texts(reply: Any, n: int) -> list[str]:
    """A script's reply of ``n`` short scalars as text, or ``_ForeignReplyError``."""
    if not isinstance(reply, list) or len(reply) != n:
        raise _ForeignReplyError
    texts = []
    for item in reply:
        if isinstance(item, bytes):
            item = item.decode("utf-8", "replace")  # noqa: PLW2901 - the same item, as text
        if not (isinstance(item, str) or type(item) is int) or len(str(item)) > 1024:
            raise _ForeignReplyError
        texts.append(str(item))
    return texts


class _RedisPace(FallbackPace):
    """The shared pace in Redis, with a local one standing in while Redis cannot be used."""

    store = "Redis"

    def __init__(  # noqa: PLR0917 - the limiter's own settings, handed over once
        self, client: Any, name: str, ceiling: float, adaptive: bool, clock: Clock, members: int
    ) -> None:
        super().__init__(name, ceiling, adaptive, clock, members, logger)
        tag = "{" + name + "}"  # one hash slot for every key: Redis Cluster runs the script
        self.keys = [f"capillary:{tag}:{part}" for part in ("tat", "cool", "rate", "members")]
        member = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        # Keys outlive a quiet fleet long enough to keep its cooldown and adaptive rate.
        ttl_ms = str(int(max(60.0, 10 / ceiling) * 1000))
        self._args = [repr(ceiling), "1" if adaptive else "0", member, ttl_ms]
        # The furthest ahead a slot may be: a pause, then slow intervals of waiting members.
        self.horizon = slot_horizon(ceiling)
        constants = (MIN_SHARE, RECOVERY_PER_SECOND, MAX_COOLDOWN, PRESENCE, self.horizon)
        self._args += [repr(x) for x in constants]
        self._script = client.register_script(SHARED_PACE)

    describe = staticmethod(_why)

    async def remote(self, mode: str, pause: float = 0.0, slow: bool = False) -> float:
        """The script in ``mode``: the delay until the slot, its reply checked and heeded."""
        args = [*self._args, mode, repr(pause), "1" if slow else "0"]
        reply = _texts(await self._script(keys=self.keys, args=args), 5)
        try:
            delay, members, rate = float(reply[0]), int(reply[1]), float(reply[2])
        except ValueError:
            raise _ForeignReplyError from None
        roles = [role for role in reply[4].split(",") if role]
        if not (
            0 <= delay <= self.horizon + 1
            and members >= 0
            and self.ceiling * MIN_SHARE * 0.999 <= rate <= self.ceiling * 1.001
            and set(roles) <= _ROLES.keys()
        ):
            raise _ForeignReplyError
        for role in roles:
            self._warn_once(
                role,
                "rate limiter %s: Redis held %s (%s) at a value no limiter writes (damaged, "
                "or Redis's clock stepped back); it was replaced",
                _ROLES[role],
                self.keys[list(_ROLES).index(role)],
            )
        if mode != "cool":
            self.members = max(1, members)
            with contextlib.suppress(ValueError):
                if (theirs := float(reply[3])) != self.ceiling:
                    self._warn_once(
                        "ceiling",
                        "rate limiter %s: another member shares this pace at %g requests per "
                        "second, this one at %g; give every member the same rate_limit",
                        theirs,
                        self.ceiling,
                    )
        self.rate = rate
        return delay

    async def check(self) -> None:
        """The script once, taking no slot, or ``RedisLimiterError`` saying why not."""
        try:
            await bounded(lambda: self.remote("peek"), REDIS_TIMEOUT * 2)
        except Exception as exc:  # noqa: BLE001 - every cause is named, in our words
            raise RedisLimiterError(f"rate limiter {self.name}: {_why(exc)}") from None


def _shard_text(shard: tuple[int, int] | None) -> str:
    return "the whole input" if shard is None else f"{shard[0]}/{shard[1]}"


class _Claim:
    """One run's claim on rows of an input: renewed while inside, released on leaving."""

    def __init__(  # noqa: PLR0917 - RedisLimiter.claim's arguments, checked there
        self, client: Any, name: str, digest: str, shard: Any, holder: str, ttl: float
    ) -> None:
        self.name, self.shard, self.ttl = name, shard, ttl
        self._key = f"capillary:{{{name}}}:claims:{digest}"
        k, n = shard if shard is not None else (0, 0)
        self._args = [uuid.uuid4().hex, str(k), str(n), holder, str(max(1, round(ttl * 1000)))]
        self._script = client.register_script(_CLAIM)
        self._group: Any = None
        self._renewal: asyncio.Task[Any] | None = None

    async def _call(self, mode: str) -> ShardClaimError | None:
        """Claim, renew or release: the other run's claim in the way, if there is one."""
        reply = await self._script(keys=[self._key], args=[*self._args, mode])
        if mode == "release" or reply == [1]:
            return None
        refused, holder, k, n = _texts(reply, 4)
        if refused != "0" or not (k.isdigit() and n.isdigit()):
            raise _ForeignReplyError
        theirs = None if n == "0" else (int(k), int(n))
        holder = re.sub(r"[\x00-\x1f\x7f]", " ", holder)[:200]
        ours = "this input"
        if self.shard is not None:
            ours = f"shard {_shard_text(self.shard)} of this input"
        message = f"{ours} is held by {holder} (claimed as {_shard_text(theirs)})"
        return ShardClaimError(message, holder, theirs)

    async def _renew(self) -> ShardClaimError | None:
        # Kept, so that a release never overtakes a renewal still on its way.
        self._renewal = asyncio.current_task()
        return await self._call("claim")

    async def __aenter__(self) -> None:
        try:
            refused = await bounded(lambda: self._call("claim"), REDIS_TIMEOUT * 2)
        except Exception as exc:  # noqa: BLE001 - a claim that cannot be checked is refused
            why = _why(exc)
            raise RedisLimiterError(
                f"rate limiter {self.name}: {why}; the claim on this input cannot be checked"
            ) from None
        if refused is not None:
            raise refused
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._keep)

    async def _keep(self) -> None:
        """Renew the claim every third of its ttl; a failure is warned of once, not raised."""
        warned = False
        while True:
            await anyio.sleep(self.ttl / 3)
            renewal = self._renewal
            if renewal is not None and not renewal.done():
                continue  # the last renewal, abandoned, still runs: never two at once
            try:
                lost = await bounded(self._renew, REDIS_TIMEOUT)
                why = None if lost is None else str(lost)
            except Exception as exc:  # noqa: BLE001 - never raised into the run
                why = _why(exc)
            if why is not None and not warned:
                warned = True
                logger.warning("rate limiter %s: a claim was not renewed: %s", self.name, why)

    async def __aexit__(self, *_: object) -> None:
        try:
            self._group.cancel_scope.cancel()
            await self._group.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                renewal = self._renewal
                if renewal is not None and not renewal.done():  # abandoned, yet still going
                    await asyncio.wait((renewal,), timeout=REDIS_TIMEOUT * 2)
                try:
                    await bounded(lambda: self._call("release"), REDIS_TIMEOUT * 2)
                except Exception as exc:  # noqa: BLE001 - it expires after its ttl anyway
                    why = _why(exc)
                    logger.warning("rate limiter %s: a claim was not released: %s", self.name, why)


class RedisLimiter:
    """A ``Limiter`` whose rate, cooldown and adaptive rate live in Redis, shared by ``name``.

    ``client`` is a ``redis.asyncio`` client (``Redis``, ``RedisCluster``, a Sentinel's master);
    ``from_url`` makes one. Every Redis call is bounded (half a second; a
    tenth while probing an outage). Any failure (Redis unreachable, hanging or
    refusing, a cluster with no node up, a reply of another shape) makes the
    limiter pace locally with one warning naming the cause: ``acquire()`` and
    ``throttled()`` never raise but for cancellation. Every member must give
    the same ``rate_limit``, at least 0.001 (one that differs is warned of
    once); every rate is honoured however slow. ``members`` is how many
    members to assume until Redis has been reached: the fallback's share is
    ``rate_limit / members``, so a fleet of N that starts while Redis is down
    should say N. Like any asyncio client, it belongs to the event loop it is
    first used in.

    Options:

    - ``name``: what the fleet shares (keys ``capillary:{name}:*``); every
      member that paces together uses the same one.
    - ``rate_limit``: requests per second for the whole fleet (at least 0.001).
    - ``adaptive`` (False): halve the shared rate on a 429 and grow it back.
    - ``members`` (1): the fleet's size to assume until Redis has been reached.
    - ``clock``: for tests; ``owns_client`` (False): close ``client`` in ``aclose()``.

    ``check()`` proves Redis can be used (raising ``RedisLimiterError``),
    ``claim()`` keeps shards of one input apart, ``aclose()`` releases it.
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
        rate = check_rate(rate_limit)
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ValueError("members: must be a whole number of at least 1")
        self.name = name
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._pace = _RedisPace(client, name, rate, adaptive, self.clock, members)
        self._dispatcher = Dispatcher(self._pace, self.clock)
        self._client = client
        self._owns_client = owns_client
        self._also_close: list[Any] = []  # a Sentinel's own clients, made by from_url

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
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ) -> RedisLimiter:
        """A limiter on the Redis at ``url``: one server, a Redis Cluster, or through Sentinel.

        - ``redis://[user:pass@]host:port/db``, ``rediss://`` (TLS), ``unix://path``;
        - ``redis+cluster://[user:pass@]host:port[,host:port...]`` (``rediss+cluster://``):
          seed nodes of a Redis Cluster, whose failovers the client follows;
        - ``redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/db]``
          (``rediss+sentinel://``): the master the Sentinels name for ``SERVICE``,
          asked again after a failover (the user and password are the master's).

        TLS: ``ssl_ca_certs`` (the CA bundle that signed Redis's certificate),
        ``ssl_certfile`` and ``ssl_keyfile`` (a client certificate and its
        unencrypted key, for ``tls-auth-clients``), PEM files, each read once
        here. ``ValueError``, never quoting the URL or a file, for a URL that is
        not one of these forms, a query option redis-py does not know or a
        value it refuses (the cluster and Sentinel forms take none), or a TLS
        file that cannot be loaded. A reply larger than the limiter ever gets
        is refused before it is read (one server, or through Sentinel).
        """
        client, also = client_from_url(
            url, ssl_ca_certs=ssl_ca_certs, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile
        )
        limiter = cls(
            client,
            name=name,
            rate_limit=rate_limit,
            adaptive=adaptive,
            members=members,
            clock=clock,
            owns_client=True,
        )
        limiter._also_close = also
        return limiter

    def __repr__(self) -> str:
        state = "shared" if self.shared else "local fallback"
        return f"<RedisLimiter {self.name} rate_limit={self._pace.ceiling} {state}>"

    @property
    def shared(self) -> bool:
        """Whether requests are paced through Redis now (False while it cannot be used)."""
        return self._pace.local is None

    @property
    def members(self) -> int:
        """How many members (processes) used this name within the last ten seconds."""
        return self._pace.members

    @property
    def rate(self) -> float:
        """The shared rate last seen (below ``rate_limit`` while an adaptive pace recovers)."""
        return self._pace.rate

    async def check(self) -> None:
        """Run the limiter's script once: ``RedisLimiterError`` (our words) if it cannot.

        The script does every read and write of a reservation but takes no
        slot. A wrong password, a user without script or key permissions, a
        cluster node that does not hold the keys (MOVED), a read-only replica,
        a Sentinel, a key of another type, a database index out of range or an
        unverified TLS certificate is each named as such, never quoting the
        URL. A command line calls this before sending anything, so that such a
        mistake is a usage error, not a fleet quietly pacing alone.
        """
        await self._pace.check()

    def claim(
        self, input_digest: str, *, shard: tuple[int, int] | None, holder: str, ttl: float = 30.0
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold rows of an input while inside: ``ShardClaimError`` if another live run does.

        ``shard=(K, N)`` is the rows r (0-based) with ``r % N == K - 1``, as
        ``InputFile(shard=)`` takes them; None is every row. Two claims
        overlap when a row is in both (``K1 - 1 = K2 - 1`` modulo ``gcd(N1,
        N2)``). Entering drops expired claims on ``input_digest``, refuses an
        overlapping live one (naming its ``holder`` text and shard) and
        records this one, in one script; a background task renews it every
        ``ttl / 3`` seconds (a failure is warned of once, never raised);
        leaving releases it, within a second, even when cancelled. A run that
        died holds its claim for ``ttl`` at most. ``RedisLimiterError`` if
        Redis cannot be used at entry: a claim is never skipped unchecked.
        """
        if not isinstance(input_digest, str) or not 0 < len(input_digest) <= 200:
            raise ValueError("input_digest: must be a string of 1 to 200 characters")
        if shard is not None and not (
            isinstance(shard, tuple)
            and len(shard) == 2
            and all(type(x) is int for x in shard)
            and 1 <= shard[0] <= shard[1]
        ):
            raise ValueError("shard: must be (K, N) with 1 <= K <= N, or None")
        if not isinstance(holder, str) or not holder.strip():
            raise ValueError("holder: must be a non-empty string")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= 86400:
            raise ValueError("ttl: must be a number of seconds above 0 and at most 86400")
        holder = re.sub(r"[\x00-\x1f\x7f]", " ", holder)[:200]
        return _Claim(self._client, self.name, input_digest, shard, holder, float(ttl))

    async def acquire(self, *, priority: bool = False) -> None:
        await self._dispatcher.acquire(priority=priority)

    async def throttled(self, seconds: float | None, *, slow_down: bool) -> None:
        await self._pace.throttled(seconds, slow_down=slow_down)

    async def aclose(self) -> None:
        if self._owns_client:
            for client in [self._client, *self._also_close]:
                with contextlib.suppress(Exception):
                    await client.aclose()
