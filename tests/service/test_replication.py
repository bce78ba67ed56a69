"""Writes reported as done wait for a replica (WAIT): against a real master and replica, one made slow on purpose."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import redis

from devtools.redis_server import RedisServer
from jit_lb.access import requests
from jit_lb.access.errors import StoreUnavailableError
from jit_lb.access.requests import Status
from jit_lb.access.store import RequestStore
from tests.helpers import NOW, pending


@pytest.fixture(name="pair")
def fixture_pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    with RedisServer(extra=["--repl-diskless-sync-delay", "0"]) as master:
        replica_args = ["--replicaof", "127.0.0.1", str(master.port), "--enable-debug-command", "yes"]
        with RedisServer(extra=replica_args) as replica:
            client = redis.Redis(host="127.0.0.1", port=master.port)
            while True:  # ready once the replica confirms a write
                client.set("jit:ready", 1)
                if client.execute_command("WAIT", 1, 200):
                    break
            client.close()
            yield master, replica


def stalled(replica: RedisServer, seconds: float) -> threading.Thread:
    """The replica busy for `seconds` (DEBUG SLEEP): it acknowledges nothing, and the master still lists it."""
    thread = threading.Thread(
        target=lambda: redis.Redis(host="127.0.0.1", port=replica.port).execute_command("DEBUG", "SLEEP", seconds)
    )
    thread.start()
    probe = redis.Redis(host="127.0.0.1", port=replica.port, socket_timeout=0.1, retry=None)
    while True:  # asleep once it stops answering
        try:
            probe.ping()
        except redis.TimeoutError:
            return thread
        threading.Event().wait(0.02)


def test_a_transition_a_replica_confirms_is_done(pair: tuple[RedisServer, RedisServer]) -> None:
    """With a replica connected and well, an approval is committed and confirmed."""
    master, replica = pair
    store = RequestStore(redis.Redis(host="127.0.0.1", port=master.port), master.url)
    request = store.create(pending)
    store.transition(request.id, lambda r: requests.approve(r, "U0APPROVER1", NOW))
    assert redis.Redis(host="127.0.0.1", port=replica.port).exists(f"jit:req:{request.id}")
    assert store.get(request.id).status is Status.APPROVED


def test_an_unconfirmed_transition_is_not_reported_done(pair: tuple[RedisServer, RedisServer]) -> None:
    """A replica that confirms nothing in time: the approval raises StoreUnavailableError (the person is told to try
    again) rather than returning as done."""
    master, replica = pair
    store = RequestStore(redis.Redis(host="127.0.0.1", port=master.port), master.url)
    request = store.create(pending)
    sleeper = stalled(replica, 3)
    with pytest.raises(StoreUnavailableError, match="no Redis replica confirmed"):
        store.transition(request.id, lambda r: requests.approve(r, "U0APPROVER1", NOW))
    sleeper.join()


def test_an_unconfirmed_new_request_is_refused(pair: tuple[RedisServer, RedisServer]) -> None:
    """Queuing a new request's card waits for the replica too: unconfirmed, it raises for the caller to take back."""
    master, replica = pair
    store = RequestStore(redis.Redis(host="127.0.0.1", port=master.port), master.url)
    request = store.create(pending)
    sleeper = stalled(replica, 3)
    with pytest.raises(StoreUnavailableError, match="no Redis replica confirmed"):
        asyncio.run(store.announce_async(request.id))
    sleeper.join()


def announced_ids(master: RedisServer) -> list[str]:
    """The card outbox, oldest first (the end a worker's BRPOP takes)."""
    outbox = redis.Redis(host="127.0.0.1", port=master.port).lrange("jit:outbox", 0, -1)
    return [raw.decode() for raw in reversed(outbox)]


def lpush_calls(master: RedisServer) -> int:
    stats = redis.Redis(host="127.0.0.1", port=master.port).info("commandstats")
    return int(stats.get("cmdstat_lpush", {}).get("calls", 0))


def test_new_requests_announced_together_share_one_push_and_one_wait(pair: tuple[RedisServer, RedisServer]) -> None:
    """Five requests announced in one turn of the loop (as the commands one audit batch wrote are): one LPUSH, their
    ids on the outbox in the order announced, each confirmed by the replica."""
    master, _ = pair
    store = RequestStore(redis.Redis(host="127.0.0.1", port=master.port), master.url)
    ids = [store.create(pending).id for _ in range(5)]
    before = lpush_calls(master)

    async def announce_all() -> None:
        await asyncio.gather(*(store.announce_async(request_id) for request_id in ids))

    asyncio.run(announce_all())

    assert ids == announced_ids(master)
    assert lpush_calls(master) - before == 1


def test_every_request_of_an_unconfirmed_push_is_refused(pair: tuple[RedisServer, RedisServer]) -> None:
    """A replica that confirms nothing in time: each of the requests announced together is told, to take it back."""
    master, replica = pair
    store = RequestStore(redis.Redis(host="127.0.0.1", port=master.port), master.url)
    ids = [store.create(pending).id for _ in range(3)]
    sleeper = stalled(replica, 3)

    async def announce_all() -> list[BaseException | None]:
        return await asyncio.gather(*(store.announce_async(request_id) for request_id in ids), return_exceptions=True)

    outcomes = asyncio.run(announce_all())
    sleeper.join()

    assert [StoreUnavailableError] * 3 == [type(outcome) for outcome in outcomes]


def test_no_worker_takes_a_new_request_before_a_replica_confirmed_it(pair: tuple[RedisServer, RedisServer]) -> None:
    """The web waits up to 800 ms for a replica; a worker's BRPOP on the outbox meanwhile must not find the request's
    id, or it posts the card (and may approve it on call) of a request the web then refuses and takes back. Before,
    the id went on the outbox first and the WAIT came after it, so the worker took it at once."""
    master, replica = pair
    store = RequestStore(redis.Redis(host="127.0.0.1", port=master.port), master.url)
    worker = RequestStore(redis.Redis(host="127.0.0.1", port=master.port))
    request = store.create(pending)
    taken: list[str | None] = []
    sleeper = stalled(replica, 3)
    popping = threading.Thread(target=lambda: taken.append(worker.next_to_announce(timeout=2.0)))
    popping.start()
    with pytest.raises(StoreUnavailableError, match="no Redis replica confirmed"):
        asyncio.run(store.announce_async(request.id))
    popping.join()
    sleeper.join()
    assert (taken, announced_ids(master)) == ([None], [])
