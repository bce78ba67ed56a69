"""The web's Redis client under a burst: a command past the pool's connections waits for one, it is not refused."""

from __future__ import annotations

import asyncio

import pytest

from devtools.sentinel import MASTER_NAME, SentinelTopology
from jit_lb.access.connections import WEB_CONNECTIONS, RedisAddress, connect, parse_sentinels
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
