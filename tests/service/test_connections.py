"""The web's Redis client under a burst: a command past the pool's connections waits for one, it is not refused."""

from __future__ import annotations

import asyncio

import pytest
import redis

from devtools.redis_proxy import HoldingProxy
from devtools.sentinel import MASTER_NAME, SentinelTopology
from jit_lb.access.connections import WEB_CONNECTIONS, WORKER, RedisAddress, connect, parse_sentinels
from jit_lb.access.store import RequestStore

BURST = 3 * WEB_CONNECTIONS  # an incident channel approving at once: clicks enough to take every connection thrice


async def replay_checks(store: RequestStore, count: int) -> list[bool]:
    """`count` signed requests' replay checks at once, as the web makes them on its event loop."""
    checks = [store.first_signed_async("1700000000", f"v0={n:064x}", 300) for n in range(count)]
    return list(await asyncio.gather(*checks))


@pytest.mark.parametrize("replayed", [False, True])
async def test_a_burst_past_the_pool_waits_for_connections(redis_url: str, replayed: bool) -> None:
    """Three times as many replay checks at once as the web has connections: every one is answered (each new request
    taken once, each replay refused), none refused as Redis out of reach ("Too many connections" before)."""
    address = RedisAddress(redis_url)
    store = RequestStore(connect(address), address)
    if replayed:
        assert all(await replay_checks(store, BURST))
    assert await replay_checks(store, BURST) == [not replayed] * BURST


@pytest.mark.slow
async def test_a_burst_through_sentinel_waits_for_connections() -> None:
    """The same burst through Sentinel's master pool: every check answered."""
    with SentinelTopology() as topology:
        address = RedisAddress(topology.url, parse_sentinels(topology.sentinels), MASTER_NAME)
        store = RequestStore(connect(address), address)
        assert await replay_checks(store, BURST) == [True] * BURST


async def test_a_burst_of_replay_checks_takes_a_few_connections_not_one_each(redis_url: str) -> None:
    """A burst of clicks asks its replay checks in a few round trips: Redis sees a handful of the web's connections,
    not one a click, so a burst on a busy loop never waits past the pool's wait (85 of make bench's 500 clicks were
    refused "No connection available" with one connection a check on a slower machine)."""
    address = RedisAddress(redis_url)
    store = RequestStore(connect(address), address)
    counter = redis.Redis.from_url(redis_url)
    before = int(counter.info("stats")["total_connections_received"])
    assert await replay_checks(store, BURST) == [True] * BURST
    opened = int(counter.info("stats")["total_connections_received"]) - before
    assert opened <= 3, f"{opened} connections opened for {BURST} replay checks"
    same = "v0=" + "f" * 64
    twice = await asyncio.gather(*(store.first_signed_async("1700000001", same, 300) for _ in range(2)))
    assert sorted(twice) == [False, True], "the same signature twice in one turn is taken once"


def test_replay_checks_whose_answer_was_lost_and_tried_again_are_first(redis_url: str) -> None:
    """The web's client tries a broken connection once more: a turn's replay checks ran in Redis, their answer alone
    lost, and are run again. The second run is told what the first did: each request is first, and a later copy of
    one is a replay (before, the second run found the keys its first run had set and called every request of the
    turn a replay: nothing done, nobody told)."""
    upstream = redis.Redis.from_url(redis_url)
    with HoldingProxy(upstream.connection_pool.connection_kwargs["port"]) as proxy:
        store = RequestStore(connect(RedisAddress(proxy.url), WORKER), proxy.url)  # the web's asyncio client

        async def checks() -> tuple[list[bool], bool]:
            assert await store.first_signed_async("1700000002", "v0=" + "a" * 64, 300)  # connected, script loaded
            proxy.lose(b"EVALSHA", b"SET")
            turn = await asyncio.gather(
                *(store.first_signed_async("1700000002", f"v0={n:064x}", 300) for n in range(5))
            )
            return list(turn), await store.first_signed_async("1700000002", f"v0={1:064x}", 300)

        turn, copy = asyncio.run(checks())
    upstream.close()
    assert turn == [True] * 5
    assert copy is False
