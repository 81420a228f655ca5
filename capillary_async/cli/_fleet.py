"""The command line in a fleet: the client's pace (local or shared in Redis) and shard claims.

Everything here is checked before the first request: a Redis that cannot be
used, or a shard another live run holds, is a usage error (exit 2).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio.to_thread

from .. import Auth, CapillaryError, InputFile, Limiter, LocalLimiter
from ._env import UsageError

if TYPE_CHECKING:
    from ._run import ApplyOptions

__all__ = ["check_limiter", "claim_shard", "limiter_name", "make_limiter"]


def limiter_name(base_url: str, auth: Auth) -> str:
    """The shared pace's default name: the target and who calls it, never a secret.

    Processes of one organisation (same target, same till user or client key)
    share a pace; a bearer token names no one, so all token users of a target
    share one unless ``--limiter-name`` says otherwise.
    """
    who = getattr(auth, "username", None) or getattr(auth, "key", None) or "token"
    digest = hashlib.sha256(f"{base_url}\0{who}".encode(errors="surrogateescape")).hexdigest()
    return f"capillary-{digest[:16]}"


#: The TLS options of ``RedisLimiter.from_url``, as the command line names them.
_TLS_FLAGS = {
    "ssl_ca_certs": "--redis-ca (or CAPILLARY_REDIS_CA)",
    "ssl_certfile": "--redis-cert (or CAPILLARY_REDIS_CERT)",
    "ssl_keyfile": "--redis-key (or CAPILLARY_REDIS_KEY)",
}


def _in_flags(message: str) -> str:
    """``from_url``'s words with its option names as the command line's flags."""
    for option, flag in _TLS_FLAGS.items():
        message = message.replace(option, flag)
    return message


def make_limiter(options: ApplyOptions, base_url: str, auth: Auth) -> Limiter:
    """The client's pace: --rate alone, adaptive, or shared through Redis."""
    tls = (options.redis_ca, options.redis_cert, options.redis_key)
    if any(tls) and not options.redis:
        raise UsageError("--redis-ca, --redis-cert and --redis-key need --redis (a rediss:// URL)")
    if not options.redis or options.dry_run:
        return LocalLimiter(options.rate, adaptive=options.adaptive and options.rate is not None)
    try:
        from ..redis import RedisLimiter
    except ImportError:
        raise UsageError(
            '--redis needs the redis package: pip install "capillary-async[redis]"'
        ) from None
    name = limiter_name(base_url, auth) if options.limiter_name is None else options.limiter_name
    if not name or "{" in name or "}" in name or len(name) > 200:
        raise UsageError("--limiter-name: must be 1 to 200 characters, without braces")
    try:
        return RedisLimiter.from_url(
            options.redis,
            name=name,
            rate_limit=options.rate or 0.0,
            adaptive=options.adaptive,
            # Before Redis answers, assume the fleet a shard says there is.
            members=options.shard[1] if options.shard else 1,
            ssl_ca_certs=options.redis_ca,
            ssl_certfile=options.redis_cert,
            ssl_keyfile=options.redis_key,
        )
    except ValueError as exc:  # our words, which never quote the URL (it may hold a password)
        message = str(exc)
        if not message.startswith("url: "):
            raise UsageError(_in_flags(message)) from None
        raise UsageError(
            f"--redis (or CAPILLARY_REDIS_URL): {_in_flags(message.removeprefix('url: '))} "
            "(expected redis://host:6379/0, rediss://..., unix://..., "
            "redis+cluster://host:port,host:port, redis+sentinel://host:port,host:port/SERVICE)"
        ) from None


async def check_limiter(limiter: Limiter) -> None:
    """A shared pace that cannot be used is a usage error before anything is sent."""
    check = getattr(limiter, "check", None)
    if check is None:
        return
    try:
        await check()
    except CapillaryError as exc:
        raise UsageError(f"--redis: {_in_flags(str(exc))}; nothing was sent") from None


@contextlib.asynccontextmanager
async def claim_shard(
    limiter: Limiter, source: InputFile, shard: tuple[int, int] | None
) -> AsyncIterator[None]:
    """With a shared pace, hold this run's rows of the file in Redis for as long as it runs.

    A second live run of the same shard, or of an overlapping K/N of the same
    file (``--shard 1/2`` and ``--shard 1/3`` share row 1), is refused naming
    the other run. Without Redis nothing coordinates runs (see ``--help``).
    """
    claim = getattr(limiter, "claim", None)
    if claim is None or source.path == "-":
        yield
        return
    from ..redis import RedisLimiterError, ShardClaimError

    digest = await anyio.to_thread.run_sync(source.sha256)
    holder = f"pid {os.getpid()} on {socket.gethostname()}"
    async with contextlib.AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(claim(digest, shard=shard, holder=holder))
        except ShardClaimError as exc:
            raise UsageError(f"--shard: {exc}; this run sent nothing") from None
        except RedisLimiterError as exc:
            raise UsageError(f"--redis: the shard could not be claimed: {exc}") from None
        yield
