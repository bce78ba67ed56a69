"""The request store against the private Redis: atomic transitions, indexes that follow the status, fresh ids."""

from __future__ import annotations

import threading
from datetime import timedelta

import redis

from jit_lb.access import requests
from jit_lb.access.errors import ApprovalError, TransitionError
from jit_lb.access.requests import Status
from jit_lb.access.store import RequestStore
from tests.helpers import NOW, pending


def test_concurrent_approvals_in_redis_count_once(redis_client: redis.Redis) -> None:
    """Twenty threads approving the same request at once: exactly one transition approves it."""
    store = RequestStore(redis_client)
    request = store.create(pending)
    barrier = threading.Barrier(20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def click(user: str) -> None:
        barrier.wait()
        try:
            store.transition(request.id, lambda r: requests.approve(r, user, NOW))
            result = "approved"
        except (TransitionError, ApprovalError):
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=click, args=(f"U0APPROVER{i}",)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (outcomes.count("approved"), outcomes.count("refused")) == (1, 19)
    stored = store.get(request.id)
    assert stored.status is Status.APPROVED
    assert len(stored.approvals) == 1


def test_store_indexes_follow_the_status(redis_client: redis.Redis) -> None:
    """Open requests are listed; pending ones are found when their window closes; granted ones at their end."""
    store = RequestStore(redis_client)
    request = store.create(pending)
    assert [request.id] == [r.id for r in store.open_requests()]
    assert [request.id] == store.pending_until(NOW + timedelta(minutes=15))
    store.transition(request.id, lambda r: requests.approve(r, "U0APPROVER1", NOW))
    assert store.pending_until(NOW + timedelta(minutes=15)) == []
    store.transition(request.id, lambda r: requests.grant(r, NOW, NOW + timedelta(minutes=10), [], verified=True))
    assert [request.id] == store.granted_until(NOW + timedelta(minutes=10))
    assert store.granted_until(NOW + timedelta(minutes=9)) == []


def test_ids_are_short_and_unique(redis_client: redis.Redis) -> None:
    """A thousand new requests get a thousand distinct ids of the readable form."""
    store = RequestStore(redis_client)
    ids = {store.create(pending).id for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(request_id) == 10 and request_id.startswith("jit-") for request_id in ids)
