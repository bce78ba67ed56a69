"""What one Redis round trip costs the web's CPU: PINGs through the web's own client, from a process of their own.

A PING is the least a round trip can carry: the web's real calls carry more arguments to encode and answers to
parse (the create script's call, 9-10 keys and 6-8 arguments, took three to four times a PING's CPU under py-spy).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from bench.load import in_own_process
from jit_lb.access.connections import RedisAddress, connect_async

WARM_UP = 500


def round_trip_cpu_us(redis_url: str, count: int, concurrency: int, timeout: float = 120.0) -> float:
    """CPU microseconds (user + system) of one PING through the web's client, `concurrency` at once, as the web
    sends them under the slash-command load; measured in a fresh process, so nothing else shares its CPU time."""
    job = {"url": redis_url, "count": count, "concurrency": concurrency}
    return float(in_own_process("bench.redis_cost", job, timeout)["cpu_us"])


async def _pings(redis_url: str, count: int, concurrency: int) -> float:
    client = connect_async(RedisAddress(redis_url))
    try:

        async def ping_many(times: int) -> None:
            for _ in range(times):
                await client.ping()

        await asyncio.gather(*(ping_many(WARM_UP // concurrency) for _ in range(concurrency)))
        each = count // concurrency
        before = time.process_time()
        await asyncio.gather(*(ping_many(each) for _ in range(concurrency)))
        return (time.process_time() - before) / (each * concurrency) * 1e6
    finally:
        await client.aclose()


def main() -> int:
    job = json.loads(sys.stdin.read())
    cpu_us = asyncio.run(_pings(job["url"], job["count"], job["concurrency"]))
    sys.stdout.write(json.dumps({"cpu_us": cpu_us}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
