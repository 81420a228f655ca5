"""RedisLimiter on a real redis-server: shared rate, cooldown and adaptive rate; outages."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from capillary_async import BasicAuth, CapillaryClient, Progress
from capillary_async.redis import RedisLimiter, RedisLimiterError
from capillary_async.testing import Emulator, ManualTime, sample_expiry_updates

from .redis_server import RedisServer, redis_server  # noqa: F401 - the fixture
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
    assert lim.rate == pytest.approx(100.0 / 64)  # a damaged rate is held at the floor
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
