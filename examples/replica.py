"""One replica of a web app: single calls for a few seconds, paced by a pace shared in Redis.

Run two or three at once against one emulator and one Redis; each prints how
many calls it made, and together they stay at the shared rate:

    capillary-async emulator --port 8080 --rate-limit 20 &
    redis-server --port 6379 --save "" &
    for n in 1 2 3; do python examples/replica.py http://127.0.0.1:8080 \\
        redis://127.0.0.1:6379/0 --rate 20 --seconds 5 & done; wait
"""

from __future__ import annotations

import argparse
import time

import anyio

from capillary_async import BasicAuth, CapillaryClient
from capillary_async.redis import RedisLimiter


async def main(base_url: str, redis_url: str, rate: float, seconds: float) -> None:
    limiter = RedisLimiter.from_url(redis_url, name="replica-demo", rate_limit=rate)
    update = {  # a record the emulator does not know: refused per item, counted all the same
        "identifierName": "id",
        "identifierValue": "1",
        "programId": 1,
        "pointsAwardedRefId": 1,
        "pointsAwardedRefType": "POINT_AWARDED",
        "expiryDate": {"expiryType": "FIXED_DATE", "expiryValue": "2031-01-01"},
    }
    async with CapillaryClient(
        base_url, auth=BasicAuth("demo", "demo"), allow_insecure=True, limiter=limiter
    ) as client:
        calls = 0
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            await client.points.update_expiry([update])  # one person's request
            calls += 1
    print(f"replica: {calls} calls in {seconds:g} s, shared pace {rate:g}/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("redis_url")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    anyio.run(main, args.base_url, args.redis_url, args.rate, args.seconds)
