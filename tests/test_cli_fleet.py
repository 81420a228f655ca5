"""The command line on many workers: a pace shared through Redis, and a file split in shards."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import redis

from capillary_async.testing import Emulator, write_jsonl

from .redis_server import (  # noqa: F401 - the fixtures
    PrivateCA,
    RedisServer,
    StartRedis,
    redis_cluster,
    redis_server,
    redis_servers,
)
from .test_cli import EXE, SECRET, cli_env, emu, run_cli, sample, start  # noqa: F401 - emu: a fixture

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def test_shards_split_a_file_and_their_reports_add_up_to_it(
    emu: Emulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    items = sample(emu, 90, bad=0.1)
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    totals = {}
    for k in (1, 2, 3):
        report = tmp_path / f"report-{k}.json"
        code, _, err = await run_cli(
            "expiry", "apply", str(source), "--shard", f"{k}/3",
            "--journal", str(tmp_path / f"job-{k}.db"), "--report", str(report),
            env=cli_env(emu),
        )  # fmt: skip
        assert code in (0, 1), err
        data = json.loads(report.read_text())
        totals[k] = data
        lines = {row["line"] for row in data["outcomes"]}
        assert all((line - 1) % 3 == k - 1 for line in lines)  # only this shard's rows
    assert sum(t["total"] for t in totals.values()) == 90
    assert all(t["total"] == t["succeeded"] + t["failed"] + t["invalid"] for t in totals.values())
    assert sum(t["invalid"] for t in totals.values()) == sum(
        1 for i in items if i["programId"] == "not-a-number"
    )
    assert sum(t["succeeded"] for t in totals.values()) == len(emu.audit.expiry_applied)
    # A shard's journal belongs to that shard.
    code, _, err = await run_cli(
        "expiry", "apply", str(source), "--shard", "2/3",
        "--journal", str(tmp_path / "job-1.db"), env=cli_env(emu),
    )  # fmt: skip
    assert code == 2
    assert "made for shard 1/3 of this input file, and this run is shard 2/3" in err
    code, _, err = await run_cli(
        "expiry", "apply", str(source), "--journal", str(tmp_path / "job-3.db"), env=cli_env(emu)
    )
    assert code == 2
    assert "made for shard 3/3 of this input file, and this run is the whole file" in err
    code, _, err = await run_cli("expiry", "apply", str(source), "--shard", "4/3", env=cli_env(emu))
    assert code == 2
    assert "K/N" in err


async def test_two_processes_with_redis_share_one_rate(
    emu: Emulator,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    items = [
        {**item, "expiryDate": {"expiryType": "FIXED_DATE", "expiryValue": "2031-01-01"}}
        for item in sample(emu, 60)
    ]
    for k in (1, 2):
        write_jsonl(tmp_path / f"in-{k}.jsonl", items[k - 1 :: 2])
    env = cli_env(emu, CAPILLARY_REDIS_URL=redis_server.url)
    before = emu.stats.requests
    started = time.monotonic()
    results = await asyncio.gather(
        *(
            run_cli(
                "expiry",
                "apply",
                str(tmp_path / f"in-{k}.jsonl"),
                "--rate",
                "20",
                "--chunk-size",
                "1",
                "--concurrency",
                "4",
                env=env,
            )
            for k in (1, 2)
        )
    )
    elapsed = time.monotonic() - started
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    served = emu.stats.requests - before
    assert served == 62  # a preflight each, paced too
    # 62 requests at 20/s shared: about three seconds (each alone would take a second and a half).
    assert elapsed >= 60 / 20 * 0.85
    keys = redis.Redis.from_url(redis_server.url).keys("capillary:*")
    names = {key.decode().split(":")[1] for key in keys}
    assert len(names) == 1  # one pace, named after the target and the user
    (name,) = names
    assert name.startswith("{capillary-")
    assert SECRET not in name


async def test_redis_without_a_rate_or_with_a_bad_url_is_a_usage_error(
    emu: Emulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, sample(emu, 2))
    code, _, err = await run_cli(
        "expiry", "apply", str(source), "--redis", "redis://127.0.0.1:1/0", env=cli_env(emu)
    )
    assert code == 2
    assert "--redis needs --rate" in err
    code, _, err = await run_cli(
        "expiry", "apply", str(source), "--rate", "5",
        env=cli_env(emu, CAPILLARY_REDIS_URL="http://user:" + SECRET + "@host/"),
    )  # fmt: skip
    assert code == 2
    assert "not a Redis URL" in err
    assert EXE


async def test_replicas_of_a_web_app_share_the_pace(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """The README's example: three replicas making single calls, one shared rate."""
    example = EXAMPLES / "replica.py"
    async with Emulator(seed=2, customers=10) as emulator:
        args = [emulator.base_url, redis_server.url, "--rate", "10", "--seconds", "1.5"]
        results = await asyncio.gather(
            *(run_python(str(example), *args) for _ in range(3)),
        )
        served = emulator.stats.requests
    calls = [int(out.split()[1]) for out in results]
    assert sum(calls) == served
    assert 10 <= served <= 20  # 1.5 s at 10/s shared (plus one slot each to start)
    assert all(c > 0 for c in calls)


async def run_python(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_a_redis_that_refuses_the_credentials_is_a_usage_error_in_the_cli(
    emu: Emulator,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    redis.Redis.from_url(redis_server.url).config_set("requirepass", "r3dis-pw")
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(i) + "\n" for i in sample(emu, 3)))
    bad = redis_server.url.replace("redis://", "redis://:wr0ng-pw@")
    code, _, err = await run_cli(
        "expiry", "apply", str(source), "--rate", "5",
        env=cli_env(emu, CAPILLARY_REDIS_URL=bad),
    )  # fmt: skip
    assert code == 2
    assert "refused the credentials" in err
    assert "wr0ng-pw" not in err
    assert emu.stats.requests == 0
    for flags, words in (
        (["--adaptive"], "--adaptive needs --rate"),
        (["--rate", "5", "--limiter-name", "", "--redis", bad], "--limiter-name"),
    ):
        code, _, err = await run_cli("expiry", "apply", str(source), *flags, env=cli_env(emu))
        assert code == 2
        assert words in err


async def test_overlapping_shards_of_one_file_are_refused_while_one_runs(
    emu: Emulator,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Shards claim their rows in the fleet's Redis: a second live run on any of them exits 2."""
    items = sample(emu, 60)
    for item in items:  # applied twice would extend twice
        item["expiryDate"] = {"expiryType": "FIXED_DAYS", "expiryValue": "30"}
    source = tmp_path / "in.jsonl"
    write_jsonl(source, items)
    env = cli_env(emu, CAPILLARY_REDIS_URL=redis_server.url)

    def args(shard: str, journal: str) -> list[str]:
        return [
            "expiry", "apply", str(source), "--shard", shard, "--rate", "1000",
            "--journal", str(tmp_path / journal), "--chunk-size", "1", "--concurrency", "1",
        ]  # fmt: skip

    emu.latency = 0.5  # the first run takes 15 s at this pace: time for the others to try
    first = await start(*args("1/2", "a.db"), env=env)
    for _ in range(3000):
        if emu.stats.requests >= 3:  # its preflight and a row or two: it holds its claim
            break
        await asyncio.sleep(0.01)
    for shard in ("1/2", "1/3", "3/4"):  # the same rows, or some of them
        code, out, err = await run_cli(*args(shard, f"other-{shard[0]}.db"), env=env)
        assert code == 2, err
        assert f"--shard: shard {shard} of this input is held by pid {first.pid} on" in err
        assert "claimed as 1/2" in err
        assert "this run sent nothing" in err
    emu.latency = 0.0
    code, _, err = await run_cli(*args("2/2", "b.db"), env=env)  # the other rows: allowed
    assert code == 0, err
    _, first_err = await first.communicate()
    assert first.returncode == 0, first_err.decode()
    assert all(emu.audit.times_applied(i["pointsAwardedRefId"], i["pointsAwardedRefType"]) == 1
               for i in items)  # fmt: skip
    # Once the first run is over, its claim is gone: its own rerun resumes at once.
    code, out, err = await run_cli(*args("1/2", "a.db"), env=env)
    assert code == 0, err
    assert "30 rows" in out


async def test_redis_over_mutual_tls_and_a_cluster_url_from_the_command_line(
    emu: Emulator,  # noqa: F811
    redis_servers: StartRedis,  # noqa: F811
    redis_cluster: list[RedisServer],  # noqa: F811
    tmp_path: Path,
) -> None:
    ca = PrivateCA(tmp_path)
    server = redis_servers(*ca.server_args(auth_clients=True), tls=True)
    source = tmp_path / "in.jsonl"
    write_jsonl(source, sample(emu, 4))
    apply = ["expiry", "apply", str(source), "--rate", "50"]
    tls_env = cli_env(
        emu,
        CAPILLARY_REDIS_URL=server.url,
        CAPILLARY_REDIS_CA=str(ca.ca),
        CAPILLARY_REDIS_CERT=str(ca.client_cert),
        CAPILLARY_REDIS_KEY=str(ca.client_key),
    )
    code, _, err = await run_cli(*apply, env=tls_env)
    assert code in (0, 1), err
    flags = ["--redis-ca", str(ca.ca), "--redis-cert", str(ca.client_cert)]
    code, _, err = await run_cli(
        *apply, "--redis", server.url, *flags, "--redis-key", str(ca.client_key), env=cli_env(emu)
    )
    assert code in (0, 1), err
    key_line = ca.client_key.read_text().splitlines()[1]
    for extra, env, words in [
        ([], {**tls_env, "CAPILLARY_REDIS_CERT": ""}, "--redis-cert (or CAPILLARY_REDIS_CERT)"),
        ([], {**tls_env, "CAPILLARY_REDIS_CA": str(ca.client_key)}, "--redis-ca"),
        (["--redis-ca", str(ca.ca)], cli_env(emu), "need --redis"),
        ([], {**tls_env, "CAPILLARY_REDIS_URL": server.url.replace("rediss", "redis")}, "TLS URL"),
        ([], {**tls_env, "CAPILLARY_REDIS_CERT": "", "CAPILLARY_REDIS_KEY": ""}, "certificate"),
    ]:
        before = emu.stats.requests
        code, _, err = await run_cli(*apply, *extra, env=env)
        assert code == 2, err
        assert words in err
        assert key_line not in err
        assert emu.stats.requests == before  # nothing sent
    seeds = ",".join(f"127.0.0.1:{node.port}" for node in redis_cluster[:2])
    code, _, err = await run_cli(
        *apply, env=cli_env(emu, CAPILLARY_REDIS_URL=f"redis+cluster://{seeds}")
    )
    assert code in (0, 1), err
    code, _, err = await run_cli(
        *apply, env=cli_env(emu, CAPILLARY_REDIS_URL="redis://127.0.0.1:1/0?cluster=true")
    )
    assert code == 2
    assert "redis+cluster://host:port,host:port" in err
