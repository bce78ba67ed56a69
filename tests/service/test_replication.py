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
