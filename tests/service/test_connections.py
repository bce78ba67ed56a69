"""The web's Redis client under a burst: a command past the pool's connections waits for one, it is not refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis
import redis.asyncio.client
from redis.exceptions import ResponseError

from devtools.redis_proxy import HoldingProxy
from devtools.sentinel import MASTER_NAME, SentinelTopology
from jit_lb.access.connections import WEB_CONNECTIONS, WORKER, RedisAddress, connect, parse_sentinels
from jit_lb.access.errors import LimitError, StoreUnavailableError
from jit_lb.access.requests import AccessRequest
from jit_lb.access.store import Counting, RequestStore
from tests.helpers import pending

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


def requester(user: str) -> Callable[[str], AccessRequest]:
    """A builder of `user`'s pending request, as `/jit request` hands the store one."""
    return lambda request_id: pending(request_id).model_copy(update={"requester": user})


async def test_a_burst_of_requests_is_stored_in_a_few_round_trips(redis_url: str) -> None:
    """`/jit request` from a whole channel at once: each request stored under its own id, through a handful of the
    web's connections, not one a command (the creates of one turn of the loop share a pipeline)."""
    address = RedisAddress(redis_url)
    store = RequestStore(connect(address), address)
    counter = redis.Redis.from_url(redis_url)
    before = int(counter.info("stats")["total_connections_received"])
    made = await asyncio.gather(*(store.create_async(requester(f"U0DEV{n}")) for n in range(BURST)))
    opened = int(counter.info("stats")["total_connections_received"]) - before
    assert {request.id for request in store.open_requests()} == {request.id for request in made}
    assert len(made) == BURST
    assert opened <= 3, f"{opened} connections opened for {BURST} requests"


async def test_a_create_that_redis_refuses_fails_alone_in_its_turn(redis_url: str) -> None:
    """One request of a turn that Redis refuses (its requester's pending set is not a set) is that command's error;
    the others of the same pipeline are stored."""
    address = RedisAddress(redis_url)
    store = RequestStore(connect(address), address)
    redis.Redis.from_url(redis_url).set("jit:user-pending:U0BROKEN", "not a set")
    users = ["U0DEV1", "U0BROKEN", "U0DEV2"]
    made = await asyncio.gather(*(store.create_async(requester(user)) for user in users), return_exceptions=True)
    assert isinstance(made[1], ResponseError) and "WRONGTYPE" in str(made[1])
    stored = {request.requester for request in store.open_requests()}
    assert stored == {"U0DEV1", "U0DEV2"}


async def test_requests_are_stored_after_redis_forgot_the_scripts(redis_url: str) -> None:
    """A Redis restarted or failed over knows none of the web's scripts: the next turn's creates and replay checks
    are answered NOSCRIPT, sent again, and done, each script loaded once for the whole turn."""
    address = RedisAddress(redis_url)
    store = RequestStore(connect(address), address)
    await store.create_async(requester("U0DEV1"))
    admin = redis.Redis.from_url(redis_url)
    admin.script_flush()
    admin.config_resetstat()
    creates = [store.create_async(requester(f"U0DEV{n}")) for n in range(2, 6)]
    checks = [store.first_signed_async("1700000000", f"v0={n:064x}", 300) for n in range(3)]
    *made, first, second, third = await asyncio.gather(*creates, *checks)
    assert {request.id for request in made} <= {request.id for request in store.open_requests()}
    assert [first, second, third] == [True] * 3
    loads = admin.info("commandstats").get("cmdstat_script|load", {}).get("calls", 0)
    assert loads == 2, f"{loads} SCRIPT LOADs for the turn's two scripts"


async def test_a_script_flushed_again_as_it_is_loaded_is_redis_unavailable(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis forgets the scripts again between their load and their call (flushed twice in a row): the command is told
    jit-lb is unavailable, nothing stored (before, a bare NOSCRIPT error reached Slack as a 500)."""
    address = RedisAddress(redis_url)
    store = RequestStore(connect(address), address)
    redis.Redis.from_url(redis_url).script_flush()
    monkeypatch.setattr(
        redis.asyncio.client.Pipeline, "script_load", lambda pipe, _: pipe.execute_command("SCRIPT", "FLUSH")
    )
    with pytest.raises(StoreUnavailableError, match="forgot"):
        await store.create_async(requester("U0DEV1"))
    assert store.open_requests() == []


def test_a_turn_is_answered_while_a_forgotten_script_is_loaded(redis_url: str) -> None:
    """The first turn after a failover: the replay checks whose script Redis knows are answered at once, not held
    while the creates' forgotten script is loaded and their calls sent again (before, every caller of the turn waited
    for each reload in turn, up to the read timeout each with Redis slow); the creates are stored once it is."""
    upstream = redis.Redis.from_url(redis_url)
    with HoldingProxy(upstream.connection_pool.connection_kwargs["port"]) as proxy:
        store = RequestStore(connect(RedisAddress(proxy.url), WORKER), proxy.url)

        async def turn() -> tuple[int, int, list[AccessRequest]]:
            upstream.script_flush()
            assert await store.first_signed_async("1700000003", "v0=" + "b" * 64, 300)  # its script loaded again
            proxy.hold(b"SCRIPT", seconds=1.2, once=True)  # less than the web's read timeout (1.5 s)
            checks = [
                asyncio.ensure_future(store.first_signed_async("1700000003", f"v0={n:064x}", 300)) for n in range(3)
            ]
            creates = [asyncio.ensure_future(store.create_async(requester(f"U0DEV{n}"))) for n in range(2)]
            done, _ = await asyncio.wait([*checks, *creates], timeout=0.9)
            answered = sum(check in done and check.result() for check in checks)
            stored_early = sum(create in done for create in creates)
            return answered, stored_early, list(await asyncio.gather(*creates))

        answered, stored_early, made = asyncio.run(turn())
    assert (answered, stored_early) == (3, 0)
    assert {request.id for request in made} == {request.id for request in RequestStore(upstream).open_requests()}
    upstream.close()


def test_a_refused_create_whose_answer_was_lost_is_counted_once(redis_url: str) -> None:
    """A `/jit request` refused (its requester is at the pending limit) whose answer a broken connection lost is run
    again by the client: the second run is told the refusal, and the command counts once against the commands a
    minute (before, twice: the requester lost a command they never sent)."""
    upstream = redis.Redis.from_url(redis_url)
    with HoldingProxy(upstream.connection_pool.connection_kwargs["port"]) as proxy:
        store = RequestStore(connect(RedisAddress(proxy.url), WORKER), proxy.url)

        def counting() -> Counting:
            return Counting("U0DEV1", datetime.now(UTC), limit=3)

        async def commands() -> tuple[str, AccessRequest]:
            await store.create_async(requester("U0DEV1"), pending_limit=1, counting=counting())  # the 1st command
            proxy.lose(b"EVALSHA")
            with pytest.raises(LimitError) as refused:  # the 2nd, its answer lost and the call run again
                await store.create_async(requester("U0DEV1"), pending_limit=1, counting=counting())
            return str(refused.value), await store.create_async(requester("U0DEV1"), counting=counting())  # the 3rd

        refusal, third = asyncio.run(commands())
    assert "pending request" in refusal
    assert third.id in {request.id for request in RequestStore(upstream).open_requests()}
    upstream.close()


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
