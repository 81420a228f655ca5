"""The Redis clients ``RedisLimiter.from_url`` makes: one server, a Cluster, or through Sentinel.

Every form gets the same bounded client: half a second per call, no retry of
its own (the limiter paces locally at once, and probes again itself). The
forms:

- ``redis://[user:pass@]host:port/db``, ``rediss://...`` (TLS), ``unix://path``:
  one server; redis-py's own query options are taken, an unknown one refused;
- ``redis+cluster://[user:pass@]host:port[,host:port...]`` (``rediss+cluster``):
  seed nodes of a Redis Cluster, which finds the rest and follows failovers;
- ``redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/db]``
  (``rediss+sentinel``): the master Sentinel names for ``SERVICE``, asked
  again after a failover. The user and password are the data nodes'.

The TLS files are named arguments (``ssl_ca_certs``, ``ssl_certfile``,
``ssl_keyfile``), loaded once here so that a missing or unreadable file is a
``ValueError`` naming the option, never its content. Nothing of a URL is ever
quoted: it may hold a password.
"""

from __future__ import annotations

import re
import ssl
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis._parsers import _AsyncRESP2Parser, _AsyncRESP3Parser
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from ._limiter import FallbackPace

__all__ = ["MAX_REPLY", "REDIS_TIMEOUT", "client_from_url"]

#: How long one Redis call may take before the limiter paces locally, in seconds.
REDIS_TIMEOUT = FallbackPace.timeout
#: The most one reply to the limiter may hold, in bytes (its replies hold a few dozen).
MAX_REPLY = 64 * 1024

_PLAIN = {"redis": False, "rediss": True, "unix": False}
_CLUSTER = {"redis+cluster": False, "rediss+cluster": True}
_SENTINEL = {"redis+sentinel": False, "rediss+sentinel": True}


def _bounded(parser: type[Any]) -> type[Any]:
    """``parser`` refusing a reply past ``MAX_REPLY`` bytes before reading it."""

    class Bounded(parser):  # type: ignore[misc]
        _left = MAX_REPLY

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            self._left = MAX_REPLY
            return await super().read_response(*args, **kwargs)

        def _spend(self, size: int) -> None:
            self._left -= size + 2
            if self._left < 0:
                raise rx.InvalidResponse("a reply larger than the limiter ever gets")

        async def _read(self, length: int) -> Any:
            self._spend(length)  # before reading: a huge length is refused unread
            return await super()._read(length)

        async def _readline(self) -> Any:  # asyncio bounds a line to 64 KiB
            line = await super()._readline()
            self._spend(len(line))
            return line

    return Bounded


_BOUNDED = {2: _bounded(_AsyncRESP2Parser), 3: _bounded(_AsyncRESP3Parser)}

#: What every client is given: bounded calls, no retries of its own.
_TIMEOUTS: dict[str, Any] = {
    "socket_timeout": REDIS_TIMEOUT,
    "socket_connect_timeout": REDIS_TIMEOUT,
}


def _tls_files(tls: bool, given: dict[str, str | None]) -> dict[str, Any]:
    """The TLS options for redis-py, each file loaded once here: ``ValueError`` naming it."""
    files = {key: value for key, value in given.items() if value is not None}
    for key, value in files.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key}: must be the path of a PEM file")
    if files and not tls:
        what = ", ".join(files)
        raise ValueError(f"{what}: TLS files need a TLS URL (rediss://, rediss+cluster://...)")
    if not tls:
        return {}
    context = ssl.create_default_context()
    if "ssl_ca_certs" in files:
        try:
            context.load_verify_locations(cafile=files["ssl_ca_certs"])
        except (OSError, ssl.SSLError, ValueError):
            raise ValueError(
                "ssl_ca_certs: cannot be read as PEM certificates (missing, unreadable, or "
                "not a certificate?)"
            ) from None
    if ("ssl_certfile" in files) != ("ssl_keyfile" in files):
        raise ValueError("ssl_certfile, ssl_keyfile: a client certificate needs both")
    if "ssl_certfile" in files:
        try:  # an empty password: an encrypted key is refused here, never prompted for
            context.load_cert_chain(files["ssl_certfile"], files["ssl_keyfile"], password="")
        except (OSError, ssl.SSLError, ValueError):
            raise ValueError(
                "ssl_certfile, ssl_keyfile: cannot be loaded as a PEM certificate and its "
                "unencrypted private key (missing, unreadable, or not a pair?)"
            ) from None
    return files


def _plain(url: str, tls_files: dict[str, Any]) -> Any:
    """A ``redis.asyncio.Redis`` for ``url``, its replies bounded; ``ValueError`` if refused.

    redis-py hands a query option it does not know to each connection, which
    then fails at every call; here it is refused at once, as is a value the
    client refuses (``ssl_cert_reqs=bogus``).
    """
    try:
        query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    except Exception:  # noqa: BLE001 - in our words: the URL may hold a password
        raise ValueError("url: not a Redis URL (redis://...), or a bad value") from None
    twice = sorted({key for key, _ in query} & tls_files.keys())
    if twice:
        raise ValueError(f"url: {', '.join(twice)} is given both in the URL and as an argument")
    try:
        client = aioredis.Redis.from_url(
            url,
            **_TIMEOUTS,
            **tls_files,
            retry_on_timeout=False,
            retry=Retry(NoBackoff(), 0),  # the limiter falls back at once; it retries itself
        )
    except Exception:  # noqa: BLE001 - in our words: the URL may hold a password
        raise ValueError("url: not a Redis URL (redis://...), or a bad value") from None
    pool = client.connection_pool
    blank = {key: None for key, value in query if not value and key != "max_connections"}
    try:  # a connection made now, not connected: what each call would make
        probe = pool.connection_class(**{**blank, **pool.connection_kwargs})
    except Exception as exc:  # noqa: BLE001 - refused here, not at every call
        found = re.search(r"argument '(\w{1,40})'", str(exc))
        what = found[1] if found and found[1] in dict(query) else "an option or its value"
        raise ValueError(f"url: the Redis client refuses {what} (misspelt?)") from None
    protocol = 3 if str(getattr(probe, "protocol", 2)) == "3" else 2
    pool.connection_kwargs["parser_class"] = _BOUNDED[protocol]
    return client


def _nodes(url: str, default_port: int) -> tuple[dict[str, Any], list[tuple[str, int]], str]:
    """Credentials, ``host:port`` list and path of a multi-host URL; ``ValueError`` if bad."""
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    rest = rest.split("#", 1)[0]
    if query:
        raise ValueError(
            "url: the cluster and Sentinel forms take no ?options (TLS files are the "
            "ssl_ca_certs, ssl_certfile and ssl_keyfile arguments)"
        )
    netloc, slash, path = rest.partition("/")
    auth, at, hosts = netloc.rpartition("@")
    credentials: dict[str, Any] = {}
    if at:
        user, colon, password = auth.partition(":")
        credentials = {"username": unquote(user) or None}
        if colon:
            credentials["password"] = unquote(password)
    nodes = []
    for node in hosts.split(","):
        found = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]/\s]+)(?::(\d{1,5}))?", node)
        if found is None or not 0 < int(found[2] or default_port) < 65536:
            raise ValueError("url: each node must be host:port, separated by commas")
        nodes.append((found[1].strip("[]"), int(found[2] or default_port)))
    return credentials, nodes, path if slash else ""


def _cluster(url: str, tls: bool, tls_files: dict[str, Any]) -> Any:
    credentials, nodes, path = _nodes(url, 6379)
    if path not in ("", "0"):
        raise ValueError("url: a Redis Cluster has only database 0 (no /db in the URL)")
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        **credentials,
        **_TIMEOUTS,
        # Bounded by the limiter's own timeout: a retry follows a MOVED after a failover.
        retry=Retry(NoBackoff(), 2),
        ssl=tls,
        **tls_files,
    )


def _sentinel(url: str, tls: bool, tls_files: dict[str, Any]) -> tuple[Any, Sentinel]:
    credentials, nodes, path = _nodes(url, 26379)
    service, _, db = path.partition("/")
    if not service or (db and not db.isdigit()) or "/" in db:
        raise ValueError("url: a Sentinel URL ends in /SERVICE_NAME or /SERVICE_NAME/db")
    tls_kwargs = {"ssl": True, **tls_files} if tls else {}
    retry = Retry(NoBackoff(), 0)
    make: Any = Sentinel  # typed in some redis releases, not in others (8.1)
    sentinel: Sentinel = make(
        nodes,
        sentinel_kwargs={**_TIMEOUTS, **tls_kwargs, "retry": retry},
        **_TIMEOUTS,
        **tls_kwargs,
        **credentials,
        retry=retry,
        parser_class=_BOUNDED[2],
    )
    return sentinel.master_for(unquote(service), db=int(db or 0)), sentinel


def client_from_url(
    url: str, *, ssl_ca_certs: str | None, ssl_certfile: str | None, ssl_keyfile: str | None
) -> tuple[Any, list[Any]]:
    """The client for ``url``, and anything else to close with it; ``ValueError`` if refused."""
    scheme = url.split("://", 1)[0].lower() if isinstance(url, str) and "://" in url else ""
    tls = {**_PLAIN, **_CLUSTER, **_SENTINEL}.get(scheme)
    if tls is None:
        raise ValueError("url: not a Redis URL (redis://...), or a bad value")
    files = {"ssl_ca_certs": ssl_ca_certs, "ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile}
    tls_files = _tls_files(tls, files)
    try:
        if scheme in _CLUSTER:
            return _cluster(url, tls, tls_files), []
        if scheme in _SENTINEL:
            client, sentinel = _sentinel(url, tls, tls_files)
            return client, list(sentinel.sentinels)
    except ValueError:
        raise
    except Exception:  # noqa: BLE001 - in our words: the URL may hold a password
        raise ValueError("url: not a Redis URL (redis://...), or a bad value") from None
    return _plain(url, tls_files), []
