"""RedisLimiter on a real redis-server: shared rate, cooldown and adaptive rate; outages.

Also what a Redis that misbehaves does to it (replies of another shape, a
cluster that is down, damaged keys, configuration mistakes check() names),
slow rates, and shard claims.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from capillary_async import BasicAuth, CapillaryClient, Progress
from capillary_async.redis import RedisLimiter, RedisLimiterError, ShardClaimError
from capillary_async.testing import Emulator, ManualTime, sample_expiry_updates

from .conftest import FakeClock
from .fake_resp import HELLO, Answer, FakeResp, array, bulk, free_port, huge_bulk
from .redis_server import (  # noqa: F401 - the fixtures
    RedisServer,
    StartRedis,
    redis_cluster,
    redis_server,
    redis_servers,
    self_signed_cert,
)
from .test_bulk_emulator import NOW

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def limiter(server: RedisServer, name: str = "org-1", **kwargs: Any) -> RedisLimiter:
    kwargs.setdefault("rate_limit", 40.0)
    return RedisLimiter.from_url(server.url, name=name, **kwargs)


async def test_several_limiters_share_one_rate(redis_server: RedisServer) -> None:  # noqa: F811
    members = [limiter(redis_server) for _ in range(3)]
    taken: list[float] = []

    async def member(lim: RedisLimiter, until: float) -> None:
        while time.monotonic() < until:
            await lim.acquire()
            taken.append(time.monotonic())

    until = time.monotonic() + 1.0
    async with anyio.create_task_group() as tg:
        for lim in members:
            tg.start_soon(member, lim, until)
    # Three members, each free to go at 40/s alone: together they get 40/s, not 120/s.
    assert 34 <= len(taken) <= 46
    assert {lim.members for lim in members} == {3}
    other = limiter(redis_server, name="org-2")  # another name is another pace
    started = time.monotonic()
    for _ in range(5):
        await other.acquire()
    assert time.monotonic() - started < 5 / 40 + 0.1
    for lim in [*members, other]:
        await lim.aclose()


async def test_a_cooldown_and_an_adaptive_slow_down_reach_every_member(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    one, two = (limiter(redis_server, adaptive=True, rate_limit=100.0) for _ in range(2))
    await two.acquire()
    assert two.rate == 100.0
    await one.throttled(0.3, slow_down=True)  # a 429 seen by one member
    started = time.monotonic()
    await two.acquire()
    assert time.monotonic() - started >= 0.25  # the other waits the cooldown out
    assert 50.0 <= two.rate < 60.0  # at half the rate, growing back
    await one.aclose()
    await two.aclose()


async def test_when_redis_goes_away_a_job_goes_on_locally_and_rejoins(
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async")
    lim = limiter(redis_server, rate_limit=60.0)
    states: list[bool] = []
    stopped: list[bool] = []
    started_again: list[bool] = []
    async with Emulator(seed=3, customers=200, clock=ManualTime(NOW)) as emu:
        items = list(sample_expiry_updates(emu.store, 150, seed=3, now=emu.clock.now()))

        async def watch(progress: Progress) -> None:
            states.append(lim.shared)
            if progress.requests >= 6 and not stopped:
                stopped.append(True)
                redis_server.stop()  # mid-job
            if progress.requests >= 16 and not started_again:
                started_again.append(True)
                await anyio.to_thread.run_sync(redis_server.start)

        async with CapillaryClient(
            emu.base_url, auth=BasicAuth("demo", "demo"), allow_insecure=True, limiter=lim
        ) as client:
            started = time.monotonic()
            report = await client.points.bulk_update_expiry(
                items, chunk_size=5, concurrency=2, on_progress=watch
            )
            elapsed = time.monotonic() - started
            for _ in range(100):  # a request a second apart at most finds Redis back
                if lim.shared:
                    break
                await lim.acquire()
                await anyio.sleep(0.02)
    assert report.total == report.succeeded + report.failed + report.invalid == 150
    assert report.stop_reason is None
    assert False in states  # it paced locally for a while
    assert lim.shared  # and rejoined
    assert elapsed < 30 / 60 + 3  # neither stalled nor waited on Redis for long
    outage = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    back = [r for r in caplog.records if "answers again" in r.getMessage()]
    assert len(outage) == 1  # warned once
    assert len(back) == 1
    assert "share of 60" in outage[0].getMessage()
    await lim.aclose()


CHILD = textwrap.dedent(
    """
    import json, sys, time, anyio
    from capillary_async import BasicAuth, CapillaryClient
    from capillary_async.redis import RedisLimiter, RedisLimiterError

    base_url, redis_url = sys.argv[1], sys.argv[2]
    item, seconds = json.loads(sys.argv[3]), float(sys.argv[4])

    async def main():
        lim = RedisLimiter.from_url(redis_url, name="fleet", rate_limit=30.0)
        async with CapillaryClient(base_url, auth=BasicAuth("demo", "demo"),
                                   allow_insecure=True, limiter=lim) as client:
            await lim.acquire()  # joined: the parent starts the clock when all have
            print("ready", flush=True)
            sys.stdin.readline()
            until = time.monotonic() + seconds
            sent = 0
            while time.monotonic() < until:
                await client.points.update_expiry([item])
                sent += 1
            print(sent, flush=True)

    anyio.run(main)
    """
)


async def test_processes_sharing_a_name_share_the_rate_the_server_sees(
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    async with Emulator(seed=5, customers=50) as emu:
        item = next(iter(sample_expiry_updates(emu.store, 1, seed=5, now=emu.clock.now())))
        item["expiryDate"] = {"expiryType": "FIXED_DATE", "expiryValue": "2031-01-01"}
        args = [emu.base_url, redis_server.url, json.dumps(item), "1.5"]
        children = [
            subprocess.Popen(  # noqa: ASYNC220 - started once, before any await
                [sys.executable, str(script), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        try:
            for child in children:
                assert child.stdout is not None
                line = await anyio.to_thread.run_sync(child.stdout.readline)
                assert line.strip() == "ready"
            before = emu.stats.requests
            started = time.monotonic()
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            outs = [await anyio.to_thread.run_sync(c.communicate, None, 60) for c in children]
            elapsed = time.monotonic() - started
        finally:
            for child in children:
                child.kill()
        served = emu.stats.requests - before
    sent = [int(out.strip()) for out, _ in outs]
    assert sum(sent) == served
    # Three processes, each allowed 30/s alone, together held to 30/s by the server's count.
    assert 0.8 * 30 <= served / elapsed <= 1.15 * 30, (served, elapsed, sent)
    assert min(sent) > 0  # every process got its turns


async def test_a_fleet_that_starts_while_redis_is_down_paces_at_its_share(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async.redis")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lim = RedisLimiter.from_url(
        f"redis://127.0.0.1:{port}/0", name="down", rate_limit=300.0, members=3
    )
    started = time.monotonic()
    for _ in range(21):
        await lim.acquire()
    elapsed = time.monotonic() - started
    assert not lim.shared
    assert 0.17 <= elapsed < 0.6  # 20 intervals at 300/3 = 100/s, not at 300/s
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "cannot be reached" in warnings[0]
    assert "a share of 300 among 3 members" in warnings[0]
    with pytest.raises(RedisLimiterError, match="cannot be reached"):
        await lim.check()
    await lim.aclose()


class _HangingScript:
    async def __call__(self, **_: Any) -> Any:
        await anyio.sleep_forever()


class _HangingClient:
    """A redis.asyncio client built without timeouts, whose server hangs."""

    def register_script(self, _: str) -> _HangingScript:
        return _HangingScript()


async def test_a_redis_that_hangs_costs_a_bounded_wait_then_paces_locally() -> None:
    lim = RedisLimiter(_HangingClient(), name="hangs", rate_limit=50.0)
    with anyio.fail_after(3):
        started = time.monotonic()
        await lim.acquire()
        first = time.monotonic() - started
        for _ in range(10):
            await lim.acquire()
    assert 0.45 <= first < 1.0  # one bounded wait, then the local pace
    assert not lim.shared


async def test_odd_state_in_redis_is_bounded_and_times_keep_microseconds(
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async.redis")
    raw = redis.Redis.from_url(redis_server.url)
    lim = limiter(redis_server, name="odd", rate_limit=100.0, adaptive=True)
    await lim.acquire()
    now, _ = raw.time()
    # A clock that stepped back an hour left the next slot and the rate's stamp ahead.
    raw.set("capillary:{odd}:tat", f"{now + 3600}.0")
    raw.hset("capillary:{odd}:rate", mapping={"base": "-5.0", "at": f"{now + 30}.0"})
    with anyio.fail_after(2):
        for _ in range(2):
            await lim.acquire()
    assert lim.rate == 100.0  # a damaged rate is replaced: no limiter wrote it
    stored = raw.get("capillary:{odd}:tat").decode()
    assert len(stored.split(".")[1]) == 6  # microseconds, not Lua's four decimals
    other = limiter(redis_server, name="odd", rate_limit=1000.0)  # another rate, same name
    await other.acquire()
    await other.acquire()
    mixed = [r.getMessage() for r in caplog.records if "same rate_limit" in r.getMessage()]
    assert len(mixed) == 1  # warned once
    await lim.throttled(float("inf"), slow_down=False)  # bounded, not for ever
    cool = float(raw.get("capillary:{odd}:cool"))
    seconds, micros = raw.time()
    assert 590 < cool - (seconds + micros / 1e6) <= 600
    raw.close()
    for each in (lim, other):
        await each.aclose()


SECRET = "s3cret-pw"


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The limiter's warnings, each checked to hold no password."""
    found = [r.getMessage() for r in caplog.records if r.name == "capillary_async.redis"]
    assert not [m for m in found if SECRET in m]
    return found


def with_password(url: str, user: str = "") -> str:
    return url.replace("://", f"://{user}:{SECRET}@")


# Replies no Redis gives the limiter's script, as a proxy or another server might.
FOREIGN: dict[str, tuple[Callable[[list[bytes]], Answer], bytes]] = {
    "two elements": (lambda _: array(bulk(b"0"), bulk(b"1")), HELLO),
    "an integer": (lambda _: b":7\r\n", HELLO),
    "a string": (lambda _: b"+OK\r\n", HELLO),
    "nested arrays": (
        lambda _: array(array(bulk(b"0")), bulk(b"1"), bulk(b"40"), bulk(b"40"), bulk(b"")),
        HELLO,
    ),
    "64 MB": (lambda _: huge_bulk(64 << 20), HELLO),
    "HELLO answered +OK": (lambda _: b"+OK\r\n", b"+OK\r\n"),
}


@pytest.mark.parametrize("case", list(FOREIGN))
async def test_a_reply_of_another_shape_is_an_outage_never_an_error(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async.redis")
    answer, hello = FOREIGN[case]
    with FakeResp(answer, hello=hello) as fake:
        url = with_password(fake.url) + ("?protocol=3" if hello != HELLO else "")
        lim = RedisLimiter.from_url(url, name="odd", rate_limit=1000.0)
        with pytest.raises(RedisLimiterError) as info:
            await lim.check()
        with anyio.fail_after(5):
            for _ in range(3):
                await lim.acquire()
            await lim.throttled(0.01, slow_down=True)
            await lim.acquire(priority=True)
        await lim.aclose()
        sent = fake.sent
    message = str(info.value)
    assert message.startswith("rate limiter odd: ")
    assert SECRET not in message
    assert "(a proxy, or another server?)" in message  # the cause, in our words
    assert "Error(" not in message  # no repr of a foreign exception
    assert not lim.shared
    warnings = logged(caplog)
    assert len(warnings) == 1  # one warning, then the local pace
    assert "pacing locally" in warnings[0]
    assert sent < 32 << 20  # a huge reply is refused, not read


async def test_a_job_goes_on_when_redis_answers_with_another_shape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async.redis")
    with FakeResp(lambda _: array(bulk(b"0"), bulk(b"1"))) as fake:
        lim = RedisLimiter.from_url(fake.url, name="job", rate_limit=500.0)
        async with Emulator(seed=4, customers=50, clock=ManualTime(NOW)) as emu:
            items = list(sample_expiry_updates(emu.store, 20, seed=4, now=emu.clock.now()))
            async with CapillaryClient(
                emu.base_url, auth=BasicAuth("demo", "demo"), allow_insecure=True, limiter=lim
            ) as client:
                report = await client.points.bulk_update_expiry(items, chunk_size=5)
        await lim.aclose()
    assert report.total == report.succeeded + report.failed + report.invalid == 20
    assert report.stop_reason is None
    assert not lim.shared
    assert ["a reply the limiter never gets" in m for m in logged(caplog)] == [True]


async def test_a_cluster_with_no_node_up_is_an_outage_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async.redis")
    client = RedisCluster(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    lim = RedisLimiter(client, name="nodes", rate_limit=1000.0, owns_client=True)
    with anyio.fail_after(5):
        for _ in range(3):
            await lim.acquire()
    assert not lim.shared
    assert ["no node of the Redis Cluster" in m for m in logged(caplog)] == [True]
    with pytest.raises(RedisLimiterError, match="no node of the Redis Cluster can be reached"):
        await lim.check()
    await lim.aclose()


async def test_on_redis_cluster_the_pace_is_shared_moved_is_named_and_a_cluster_down_is_no_error(
    redis_cluster: list[RedisServer],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async.redis")
    refusals = []
    for node in redis_cluster:  # a plain client on a node: two of three do not hold the keys
        plain = RedisLimiter.from_url(node.url, name="fleet", rate_limit=200.0)
        try:
            await plain.check()
        except RedisLimiterError as exc:
            refusals.append(str(exc))
        await plain.aclose()
    assert len(refusals) == 2
    assert all("cluster node without the limiter's keys (MOVED)" in m for m in refusals)
    # One retry, no backoff: a cluster that is gone raises RedisClusterException at once.
    client = RedisCluster.from_url(
        redis_cluster[0].url, socket_timeout=0.5, retry=Retry(NoBackoff(), 1)
    )
    lim = RedisLimiter(client, name="fleet", rate_limit=200.0, owns_client=True)
    await lim.check()
    async with lim.claim("digest", shard=(1, 2), holder="pid 1 on host-a"):
        pass  # a claim's key shares the hash tag too
    async with Emulator(seed=5, customers=20) as emu:
        item = next(iter(sample_expiry_updates(emu.store, 1, seed=5, now=emu.clock.now())))
        item["expiryDate"] = {"expiryType": "FIXED_DATE", "expiryValue": "2031-01-01"}
        async with CapillaryClient(
            emu.base_url, auth=BasicAuth("demo", "demo"), allow_insecure=True, limiter=lim
        ) as client:
            for _ in range(4):
                await client.points.update_expiry([item])
            assert lim.shared
            for node in redis_cluster:  # the whole cluster drops mid-job
                node.stop()
            until = time.monotonic() + 1.5  # past a probe of the cluster, a second later
            while time.monotonic() < until:
                with anyio.fail_after(5):
                    await client.points.update_expiry([item])  # never fails for the limiter
                await anyio.sleep(0.05)
    await lim.aclose()
    assert not lim.shared
    warnings = logged(caplog)
    assert len(warnings) == 1
    assert "pacing locally" in warnings[0]


def test_an_unknown_option_in_the_url_is_refused_at_once() -> None:
    for url, named in [
        ("redis://127.0.0.1:1/0?ssl_ca_cert=/etc/ca.pem", "ssl_ca_cert"),
        ("redis://127.0.0.1:1/0?ssl_ca_cert=", "ssl_ca_cert"),  # blank, still misspelt
        ("redis://127.0.0.1:1/0?ssl_cert_reqs=required", "ssl_cert_reqs"),  # not on redis://
        ("rediss://127.0.0.1:1/0?ssl_cert_reqs=bogus", "an option or its value"),
        ("redis://127.0.0.1:1/0?socket_timeout=soon", "not a Redis URL"),
        ("http://127.0.0.1:1/0", "not a Redis URL"),
    ]:
        with pytest.raises(ValueError, match=r"^url: ") as info:
            RedisLimiter.from_url(with_password(url), name="u", rate_limit=5.0)
        assert named in str(info.value)
        assert SECRET not in str(info.value)
    fine = "redis://127.0.0.1:1/0?socket_keepalive=true&max_connections=4&protocol=2"
    assert RedisLimiter.from_url(fine, name="u", rate_limit=5.0).shared  # made, not refused


async def test_a_client_made_with_an_unknown_option_paces_locally_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async.redis")
    pool = aioredis.ConnectionPool(host="127.0.0.1", port=free_port(), ssl_ca_cert="ca.pem")
    lim = RedisLimiter(aioredis.Redis(connection_pool=pool), name="opt", rate_limit=1000.0)
    for _ in range(3):
        await lim.acquire()  # not a TypeError from every request
    assert ["an option it does not know" in m for m in logged(caplog)] == [True]
    with pytest.raises(RedisLimiterError, match="an option it does not know"):
        await lim.check()
    await pool.aclose()


async def test_a_slow_rate_stays_slow_through_redis_and_in_the_fallback(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    clock = FakeClock()  # Redis's clock stands still while this one sleeps: slots pile up
    lim = limiter(redis_server, name="slow", rate_limit=0.001, clock=clock)
    for _ in range(3):
        await lim.acquire()
    assert lim.shared
    assert clock.sleeps == [pytest.approx(1000.0, abs=1), pytest.approx(2000.0, abs=1)]
    fallback = FakeClock()  # one of two members, Redis down: a share of 0.0005/s
    down = RedisLimiter.from_url(
        f"redis://127.0.0.1:{free_port()}/0", name="slow", rate_limit=0.001, members=2,
        clock=fallback,
    )  # fmt: skip
    for _ in range(3):
        await down.acquire()
    assert not down.shared
    assert fallback.sleeps == [pytest.approx(2000.0), pytest.approx(2000.0)]
    with pytest.raises(ValueError, match="rate_limit"):
        limiter(redis_server, rate_limit=0.0005)
    for each in (lim, down):
        await each.aclose()


async def test_damaged_keys_are_replaced_with_one_warning_each(
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async.redis")
    redis.Redis.from_url(redis_server.url).config_set("requirepass", SECRET)
    url = with_password(redis_server.url)
    raw = redis.Redis.from_url(url)
    cool, rate = "capillary:{dmg}:cool", "capillary:{dmg}:rate"
    now = float(raw.time()[0])
    damage: list[tuple[str, Callable[[], Any]]] = [
        ("the cooldown", lambda: raw.set(cool, "1e308")),  # no expiry: it would park the fleet
        ("the cooldown", lambda: raw.set(cool, "inf")),
        ("the cooldown", lambda: raw.set(cool, "nan")),
        ("the adaptive rate", lambda: raw.hset(rate, mapping={"base": "nan", "at": now})),
        ("the adaptive rate", lambda: raw.hset(rate, mapping={"base": 1.5, "at": now + 1e7})),
    ]
    for role, damage_it in damage:
        caplog.clear()
        damage_it()
        lim = RedisLimiter.from_url(url, name="dmg", rate_limit=100.0, adaptive=True)
        with anyio.fail_after(2):  # no 600 s pause, no rate pinned at 1/64
            for _ in range(3):
                await lim.acquire()
        assert lim.shared
        assert lim.rate == 100.0
        warnings = logged(caplog)
        assert len(warnings) == 1, warnings
        assert f"Redis held {role} (capillary:{{dmg}}:" in warnings[0]
        assert raw.get(cool) is None
        assert raw.hget(rate, "base") is None
        await lim.aclose()
    raw.close()


async def test_a_long_cooldown_outlives_the_keys_usual_expiry(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    lim = limiter(redis_server, name="long")
    await lim.throttled(300.0, slow_down=False)  # a Retry-After of five minutes
    raw = redis.Redis.from_url(redis_server.url)
    assert raw.pttl("capillary:{long}:cool") > 299_000  # not the 60 s of a quiet key
    raw.close()
    await lim.aclose()


async def test_check_runs_the_script_and_takes_no_slot(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    lim = limiter(redis_server, name="checked", rate_limit=0.5)  # a slot every 2 s
    await lim.check()
    raw = redis.Redis.from_url(redis_server.url)
    assert raw.exists("capillary:{checked}:tat", "capillary:{checked}:members") == 2
    raw.close()
    started = time.monotonic()
    await lim.acquire()  # the first slot is still free
    assert time.monotonic() - started < 0.5
    await lim.aclose()


async def test_check_names_an_acl_user_that_may_not_run_the_script(
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async.redis")
    raw = redis.Redis.from_url(redis_server.url)
    users = {
        "pingonly": ["+ping"],
        "noscripts": ["~*", "+@all", "-@scripting"],
        "otherkeys": ["~other:*", "+@all"],
    }
    for user, rules in users.items():
        raw.acl_setuser(user, enabled=True, passwords=[f"+{SECRET}"], reset_keys=False)
        raw.execute_command("ACL", "SETUSER", user, *rules)
    raw.close()
    for user in users:
        caplog.clear()
        lim = RedisLimiter.from_url(
            with_password(redis_server.url, user), name="acl", rate_limit=1e3
        )
        assert await lim._client.ping()  # PING passes: the old check did not see it
        with pytest.raises(RedisLimiterError) as info:
            await lim.check()
        assert "may not run the limiter's script on its keys" in str(info.value)
        assert SECRET not in str(info.value)
        for _ in range(2):
            await lim.acquire()  # during a run: the local pace, one warning naming the cause
        assert ["may not run the limiter's script" in m for m in logged(caplog)] == [True]
        await lim.aclose()


async def test_check_names_a_replica_a_sentinel_a_key_of_another_type_and_a_db_index(
    redis_server: RedisServer,  # noqa: F811
    redis_servers: StartRedis,  # noqa: F811
    tmp_path: Path,
) -> None:
    replica = redis_servers("--replicaof", "127.0.0.1", str(redis_server.port))
    sentinel_conf = tmp_path / "sentinel.conf"
    sentinel_conf.write_text(f"sentinel monitor main 127.0.0.1 {redis_server.port} 1\n")
    sentinel = redis_servers(str(sentinel_conf), "--sentinel")
    redis.Redis.from_url(redis_server.url).set("capillary:{typed}:rate", "not a hash")
    cases = [
        (replica.url, "fleet", "a read-only replica"),
        (sentinel.url, "fleet", "does not run Redis scripts (a Sentinel"),
        (redis_server.url, "typed", "holds another type of value"),
        (redis_server.url.replace("/0", "/99"), "fleet", "database index is out of range"),
    ]
    for url, name, why in cases:
        lim = RedisLimiter.from_url(url, name=name, rate_limit=10.0)
        with pytest.raises(RedisLimiterError, match=f"^rate limiter {name}: ") as info:
            await lim.check()
        assert why in str(info.value)
        await lim.acquire()  # a run does not fail on it
        assert not lim.shared
        await lim.aclose()


async def test_check_names_a_tls_certificate_it_cannot_verify(
    redis_servers: StartRedis,  # noqa: F811
    tmp_path: Path,
) -> None:
    cert, key = self_signed_cert(tmp_path)
    server = redis_servers(
        "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
        str(cert), "--tls-auth-clients", "no", tls=True,
    )  # fmt: skip
    lim = RedisLimiter.from_url(server.url, name="tls", rate_limit=10.0)
    with pytest.raises(RedisLimiterError, match="TLS certificate could not be verified"):
        await lim.check()
    await lim.aclose()
    trusted = f"{server.url}?ssl_ca_certs={cert}&ssl_check_hostname=false"
    lim = RedisLimiter.from_url(trusted, name="tls", rate_limit=10.0)
    await lim.check()  # the same server, its certificate trusted
    await lim.aclose()


CLAIM_CHILD = textwrap.dedent(
    """
    import sys, anyio
    from capillary_async.redis import RedisLimiter

    async def main():
        lim = RedisLimiter.from_url(sys.argv[1], name="claims", rate_limit=10.0)
        async with lim.claim(sys.argv[2], shard=(2, 3), holder="pid 9 on host-c", ttl=0.6):
            print("held", flush=True)
            await anyio.sleep_forever()

    anyio.run(main)
    """
)


async def test_shard_claims_refuse_overlapping_live_runs(
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async.redis")
    redis.Redis.from_url(redis_server.url).config_set("requirepass", SECRET)
    url = with_password(redis_server.url)
    one, two = (RedisLimiter.from_url(url, name="claims", rate_limit=10.0) for _ in range(2))
    digest = "9f" * 32

    async def refused(shard: tuple[int, int] | None) -> ShardClaimError:
        with pytest.raises(ShardClaimError) as info:
            async with two.claim(digest, shard=shard, holder="pid 2 on host-b"):
                pass
        assert SECRET not in str(info.value)
        return info.value

    async with one.claim(digest, shard=(1, 2), holder="pid 1 on host-a", ttl=0.6):
        await anyio.sleep(0.8)  # past its ttl: renewed while inside
        for shard in [(1, 2), (1, 3), (3, 4), None]:  # the same, row 0, row 2, every row
            error = await refused(shard)
            assert (error.holder, error.shard) == ("pid 1 on host-a", (1, 2))
        assert str(error) == "this input is held by pid 1 on host-a (claimed as 1/2)"
        assert "shard 1/3 of this input is held by pid 1 on host-a (claimed as 1/2)" in str(
            await refused((1, 3))
        )
        for shard in [(2, 2), (2, 4), (4, 6)]:  # odd rows only: no row in common
            async with two.claim(digest, shard=shard, holder="pid 2 on host-b"):
                pass
        async with two.claim("another input", shard=(1, 2), holder="pid 2 on host-b"):
            pass
    async with two.claim(digest, shard=None, holder="pid 2 on host-b"):  # released on leaving
        with pytest.raises(ShardClaimError, match=r"shard 3/5 .* \(claimed as the whole input\)"):
            async with one.claim(digest, shard=(3, 5), holder="pid 1 on host-a"):
                pass
    with anyio.move_on_after(0.2):  # cancelled inside: released all the same
        async with one.claim(digest, shard=(1, 1), holder="pid 1 on host-a"):
            await anyio.sleep_forever()
    with pytest.raises(KeyError):  # the body's own error comes through as itself
        async with one.claim(digest, shard=(1, 1), holder="pid 1 on host-a"):
            raise KeyError("mine")
    with subprocess.Popen(  # noqa: ASYNC220 - a process that dies holding its claim
        [sys.executable, "-c", CLAIM_CHILD, url, digest], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            assert await anyio.to_thread.run_sync(child.stdout.readline) == "held\n"
            await anyio.sleep(0.8)  # past its ttl: renewed while it lives
            assert (await refused((5, 6))).shard == (2, 3)  # row 4 is in both
        finally:
            child.kill()
    await anyio.sleep(0.7)  # its ttl passed: the dead run's claim is gone
    async with two.claim(digest, shard=(2, 3), holder="pid 2 on host-b"):
        pass
    assert logged(caplog) == []
    for each in (one, two):
        await each.aclose()


async def test_a_claim_that_cannot_be_checked_is_refused_and_a_lost_one_is_warned_of(
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="capillary_async.redis")
    down = RedisLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0", name="c", rate_limit=5.0)
    with pytest.raises(RedisLimiterError, match="the claim on this input cannot be checked"):
        async with down.claim("d", shard=None, holder="pid 1"):
            pass
    lim = limiter(redis_server, name="c")
    async with lim.claim("d", shard=(1, 2), holder="pid 1", ttl=0.3):
        redis_server.stop()
        await anyio.sleep(0.6)  # renewals fail: warned of, not raised into the run
        started = time.monotonic()
    assert time.monotonic() - started < 1.5  # leaving is bounded too
    warnings = logged(caplog)
    assert len(warnings) == 2
    assert "a claim was not renewed: Redis cannot be reached" in warnings[0]
    assert "a claim was not released" in warnings[1]
    with pytest.raises(ValueError, match="shard"):
        lim.claim("d", shard=(3, 2), holder="pid 1")
    for each in (down, lim):
        await each.aclose()
