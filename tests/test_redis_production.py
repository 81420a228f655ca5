"""RedisLimiter on Redis as fleets run it: Cluster and Sentinel failing over, mutual TLS, an ACL.

Each test starts real redis-servers on loopback (tests/redis_server.py) and
kills a master mid-job where it says so: requests never fail, members pace at
their share while the shared pace is gone, and rejoin it after the failover.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio.cluster import RedisCluster

from capillary_async import BasicAuth, CapillaryClient
from capillary_async.redis import RedisLimiter, RedisLimiterError
from capillary_async.testing import Emulator, sample_expiry_updates

from .redis_server import (  # noqa: F401 - the fixtures
    PrivateCA,
    RedisServer,
    StartRedis,
    make_cluster,
    make_sentinels,
    redis_server,
    redis_servers,
    self_signed_cert,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

SECRET = "pw-R3dis-never-printed"

#: What a limiter's Redis user needs, and no more: the scripts (EVALSHA, SCRIPT LOAD when
#: a node has not seen them) and the commands they run, on the keys of one name.
LIMITER_ACL = (
    "-@all", "+evalsha", "+script|load", "+ping", "+time", "+get", "+set", "+del",
    "+hget", "+hmget", "+hset", "+hsetnx", "+hdel", "+hgetall", "+pexpire", "+pttl",
    "+zadd", "+zremrangebyscore", "+zcard",
)  # fmt: skip
#: And on a Redis Cluster, what the client asks to find the nodes and the keys' slots.
CLUSTER_ACL = ("+cluster|slots", "+command")


def add_limiter_user(node: RedisServer, name: str, *extra: str) -> None:
    """The user ``limiter`` on ``node``, allowed exactly ``LIMITER_ACL`` on the keys of ``name``."""
    keys = f"~capillary:{{{name}}}:*"
    node.cli("ACL", "SETUSER", "limiter", "reset", "on", f">{SECRET}", keys, *LIMITER_ACL, *extra)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "capillary_async.redis"]


def owner_of(nodes: list[RedisServer], key: str) -> RedisServer:
    """The live master serving ``key``'s slot, as the cluster itself says."""
    alive = next(node for node in nodes if node.process is not None)
    slot = int(alive.cli("cluster", "keyslot", key))
    for line in alive.cli("cluster", "nodes").splitlines():
        fields = line.split()
        if "master" not in fields[2] or "fail" in fields[2]:
            continue
        for span in fields[8:]:
            low, _, high = span.partition("-")
            if low.isdigit() and int(low) <= slot <= int(high or low):
                port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                return next(node for node in nodes if node.port == port)
    raise AssertionError(f"no live master serves slot {slot}")


async def run_through_a_failover(
    members: list[RedisLimiter], kill: Any, *, rate: float, deadline: float = 12.0
) -> list[list[tuple[float, bool]]]:
    """Each member sends single calls to an emulator; ``kill()`` a second in.

    Returns each member's (time since the start, shared) per request, until
    every member is back on the shared pace for half a second. A request that
    failed, or waited more than five seconds, fails the test.
    """
    seen: list[list[tuple[float, bool]]] = [[] for _ in members]
    started = time.monotonic()
    async with Emulator(seed=5, customers=20) as emu:
        item = next(iter(sample_expiry_updates(emu.store, 1, seed=5, now=emu.clock.now())))
        item["expiryDate"] = {"expiryType": "FIXED_DATE", "expiryValue": "2031-01-01"}

        async def member(n: int, lim: RedisLimiter) -> None:
            async with CapillaryClient(
                emu.base_url, auth=BasicAuth("demo", "demo"), allow_insecure=True, limiter=lim
            ) as client:
                back_since = None
                while time.monotonic() - started < deadline:
                    with anyio.fail_after(5):
                        await client.points.update_expiry([item])  # never fails
                    now = time.monotonic() - started
                    seen[n].append((now, lim.shared))
                    if now > 1.0 and not all(s for _, s in seen[n]):  # an outage came and went
                        back_since = (back_since or now) if lim.shared else None
                        if back_since is not None and now - back_since > 0.5:
                            return

        async with anyio.create_task_group() as tg:
            for n, lim in enumerate(members):
                tg.start_soon(member, n, lim)
            await anyio.sleep(1.0)
            await anyio.to_thread.run_sync(kill)
    assert emu.stats.requests == sum(len(s) for s in seen)
    for lim in members:
        assert lim.shared
    return seen


def assert_paced(seen: list[list[tuple[float, bool]]], rate: float) -> float:
    """Shared: together at ``rate``; in the outage: each at its share. Returns the outage's end."""
    shared = sorted(t for s in seen for t, ok in s if 0.2 <= t < 1.0 and ok)
    assert len(shared) <= rate * 0.8 + 3  # the members together, not each at the rate
    share = rate / len(seen)
    ends = []
    for mine in seen:
        local = [t for t, ok in mine if not ok]
        assert local, "the member never paced locally"
        assert len(local) <= share * (local[-1] - local[0]) + 2  # its share, not the rate
        ends.append(local[-1])
    return max(ends)


async def test_a_cluster_url_shares_the_pace_and_rejoins_after_a_failover(
    redis_servers: StartRedis,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async.redis")
    nodes = make_cluster(redis_servers, 6, replicas=1)  # three masters, each with a replica
    for node in nodes:  # ACLs are per node: a replica that takes over needs the user too
        add_limiter_user(node, "fleet", *CLUSTER_ACL)
    seeds = ",".join(f"127.0.0.1:{node.port}" for node in nodes[:2])
    url = f"redis+cluster://limiter:{SECRET}@{seeds}"
    members = [RedisLimiter.from_url(url, name="fleet", rate_limit=40.0) for _ in range(2)]
    assert isinstance(members[0]._client, RedisCluster)
    assert SECRET not in repr(members[0])
    for lim in members:
        await lim.check()
    owner = owner_of(nodes, "capillary:{fleet}:tat")
    killed_at = time.monotonic()
    seen = await run_through_a_failover(members, owner.kill, rate=40.0)
    back = assert_paced(seen, 40.0)
    assert back < 1.0 + 8  # the failover takes about two seconds, a probe one more
    warnings = warnings_of(caplog)
    assert len([w for w in warnings if "pacing locally at 20 requests per second" in w]) == 2
    assert len([w for w in warnings if "answers again; pacing is shared" in w]) == 2
    assert len(warnings) == 4, warnings  # once each way, per member
    assert all(SECRET not in w for w in warnings)
    new_owner = owner_of(nodes, "capillary:{fleet}:tat")
    assert new_owner is not owner
    assert new_owner.cli("exists", "capillary:{fleet}:tat").strip() == "1"
    for lim in members:
        await lim.check()
    async with members[0].claim("digest", shard=(1, 2), holder="pid 1 on host-a"):
        pass
    print(f"cluster failover test: {time.monotonic() - killed_at:.1f} s from the kill")
    for lim in members:
        await lim.aclose()


async def test_a_sentinel_url_follows_the_master_through_a_failover(
    redis_servers: StartRedis,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async.redis")
    master, replica, sentinels = make_sentinels(redis_servers, tmp_path, "main", password=SECRET)
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
    wrong = RedisLimiter.from_url(f"redis+sentinel://{hosts}/other", name="x", rate_limit=5.0)
    with pytest.raises(RedisLimiterError, match="no Sentinel names a master for the service"):
        await wrong.check()
    await wrong.aclose()
    url = f"redis+sentinel://:{SECRET}@{hosts}/main/0"
    members = [RedisLimiter.from_url(url, name="fleet", rate_limit=40.0) for _ in range(2)]
    for lim in members:
        await lim.check()
    seen = await run_through_a_failover(members, master.kill, rate=40.0)
    back = assert_paced(seen, 40.0)
    assert back < 1.0 + 8
    warnings = warnings_of(caplog)
    assert len([w for w in warnings if "pacing locally at 20 requests per second" in w]) == 2
    assert len(warnings) == 4, warnings
    assert all(SECRET not in w for w in warnings)
    assert "role:master" in replica.cli("-a", SECRET, "--no-auth-warning", "info", "replication")
    tat = replica.cli("-a", SECRET, "--no-auth-warning", "exists", "capillary:{fleet}:tat")
    assert tat.strip() == "1"  # the pace lives on the new master
    for lim in members:
        await lim.aclose()


async def test_mutual_tls_with_a_private_ca_and_each_mistake_named(
    redis_servers: StartRedis,  # noqa: F811
    tmp_path: Path,
) -> None:
    ca = PrivateCA(tmp_path)
    server = redis_servers(*ca.server_args(auth_clients=True), tls=True)
    files = {
        "ssl_ca_certs": str(ca.ca),
        "ssl_certfile": str(ca.client_cert),
        "ssl_keyfile": str(ca.client_key),
    }
    lim = RedisLimiter.from_url(server.url, name="tls", rate_limit=100.0, **files)
    await lim.check()
    for _ in range(3):
        await lim.acquire()
    assert lim.shared
    async with lim.claim("digest", shard=None, holder="pid 1 on host-a"):
        pass
    await lim.aclose()
    (tmp_path / "stranger").mkdir()
    stranger_cert, stranger_key = self_signed_cert(tmp_path / "stranger")
    mistakes = [
        ({}, "TLS certificate could not be verified"),
        # TLS 1.3 sends the refusal after the handshake: an alert, or a reset, both named.
        ({"ssl_ca_certs": str(ca.ca)}, "TLS client certificate it asks for|asks for a TLS client"),
        (
            {**files, "ssl_certfile": str(stranger_cert), "ssl_keyfile": str(stranger_key)},
            "refused the TLS client certificate",
        ),
    ]
    for given, why in mistakes:
        lim = RedisLimiter.from_url(server.url, name="tls", rate_limit=100.0, **given)
        with pytest.raises(RedisLimiterError, match=why):
            await lim.check()
        await lim.acquire()  # a run goes on, locally
        assert not lim.shared
        await lim.aclose()
    plain = server.url.replace("rediss://", "redis://")
    refused = [
        ({**files, "ssl_ca_certs": str(tmp_path / "missing.pem")}, server.url, "ssl_ca_certs:"),
        ({**files, "ssl_ca_certs": str(ca.client_key)}, server.url, "ssl_ca_certs:"),
        ({**files, "ssl_keyfile": str(ca.server_key)}, server.url, "ssl_certfile, ssl_keyfile:"),
        ({"ssl_certfile": str(ca.client_cert)}, server.url, "needs both"),
        (files, plain, "TLS files need a TLS URL"),
        (files, f"{server.url}?ssl_ca_certs={ca.ca}", "given both in the URL and as an argument"),
    ]
    key_text = ca.client_key.read_text()
    for given, url, why in refused:
        with pytest.raises(ValueError, match=why) as info:
            RedisLimiter.from_url(url, name="tls", rate_limit=1.0, **given)
        assert key_text.splitlines()[1] not in str(info.value)


async def test_the_documented_acl_is_enough_for_a_job_check_and_claims(
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async.redis")
    add_limiter_user(redis_server, "least")
    url = redis_server.url.replace("redis://", f"redis://limiter:{SECRET}@")
    lim = RedisLimiter.from_url(url, name="least", rate_limit=200.0, adaptive=True)
    await lim.check()
    for _ in range(5):
        await lim.acquire()
    await lim.throttled(0.05, slow_down=True)  # a 429: the cooldown and the adaptive rate
    await lim.acquire()
    async with lim.claim("digest", shard=(1, 2), holder="pid 1 on host-a", ttl=0.3):
        await anyio.sleep(0.25)  # renewed once inside
    # Damaged keys are replaced (DEL, HDEL): the user may do that too.
    redis_server.cli("set", "capillary:{least}:cool", "nan")
    redis_server.cli("hset", "capillary:{least}:rate", "base", "nan", "at", "1")
    await lim.acquire()
    assert lim.shared
    warnings = warnings_of(caplog)
    assert len(warnings) == 2, warnings  # the two damaged keys, nothing refused
    assert all("a value no limiter writes" in w for w in warnings)
    await lim.aclose()
    other = RedisLimiter.from_url(url, name="other", rate_limit=5.0)  # not its keys
    with pytest.raises(RedisLimiterError, match="may not run the limiter's script"):
        await other.check()
    await other.aclose()


def test_cluster_and_sentinel_urls_are_read_and_bad_ones_refused() -> None:
    lim = RedisLimiter.from_url(
        f"redis+cluster://user:{SECRET}@127.0.0.1:7000,[::1]:7001,node-3", name="u", rate_limit=1.0
    )
    client = lim._client
    assert isinstance(client, RedisCluster)
    seeds = client.nodes_manager.startup_nodes.values()  # redis 5 and 6 keep them only here
    assert [(n.host, n.port) for n in seeds] == [
        ("127.0.0.1", 7000), ("::1", 7001), ("node-3", 6379),
    ]  # fmt: skip
    assert (client.connection_kwargs["username"], client.connection_kwargs["password"]) == (
        "user",
        SECRET,
    )
    assert client.connection_kwargs["socket_timeout"] == 0.5
    assert SECRET not in repr(lim)
    lim = RedisLimiter.from_url(
        f"redis+sentinel://:{SECRET}@127.0.0.1:1,127.0.0.1:2/main/3", name="u", rate_limit=1.0
    )
    pool = lim._client.connection_pool
    assert (pool.service_name, pool.connection_kwargs["db"]) == ("main", 3)
    assert pool.connection_kwargs["password"] == SECRET
    assert [s.connection_pool.connection_kwargs["port"] for s in lim._also_close] == [1, 2]
    for url, why in [
        ("redis+cluster://127.0.0.1:7000/3", "a Redis Cluster has only database 0"),
        ("redis+cluster://127.0.0.1:7000?cluster=true", r"take no \?options"),
        ("redis+cluster://127.0.0.1:99999", "each node must be host:port"),
        ("redis+cluster://127.0.0.1:1,,127.0.0.1:2", "each node must be host:port"),
        ("redis+sentinel://127.0.0.1:1", "ends in /SERVICE_NAME"),
        ("redis+sentinel://127.0.0.1:1/main/zero", "ends in /SERVICE_NAME"),
        ("redis+cluster://127.0.0.1:1", None),
        ("redis://127.0.0.1:1/0?cluster=true", "refuses cluster"),
        ("rediss+clusters://127.0.0.1:1", "not a Redis URL"),
    ]:
        secret_url = url.replace("://", f"://user:{SECRET}@")
        if why is None:
            RedisLimiter.from_url(secret_url, name="u", rate_limit=1.0)
            continue
        with pytest.raises(ValueError, match=why) as info:
            RedisLimiter.from_url(secret_url, name="u", rate_limit=1.0)
        assert SECRET not in str(info.value)
