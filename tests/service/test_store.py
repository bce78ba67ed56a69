"""The request store against the private Redis: atomic transitions, indexes that follow the status, fresh ids."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from datetime import timedelta

import pytest
import redis

from devtools import faults
from devtools.redis_proxy import HoldingProxy
from jit_lb.access import requests
from jit_lb.access.connections import WORKER, RedisAddress, connect
from jit_lb.access.errors import ApprovalError, LimitError, LockdownError, TransitionError
from jit_lb.access.requests import Status
from jit_lb.access.store import Counting, RequestStore
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


def _two_workers_sweeping(redis_url: str, seconds: float = 2.0) -> list[tuple[float, float]]:
    """Two workers taking the sweep's turn as the reconcile loop does (a turn of 0.05 s, a sweep of 0.5 s that holds
    `running` for 0.3 s, renewed while it runs) for `seconds`: each sweep's start and end."""
    runs: list[tuple[float, float]] = []
    until = time.monotonic() + seconds

    def worker(holder: str) -> None:
        store = RequestStore(redis.Redis.from_url(redis_url))
        while time.monotonic() < until:
            if store.take_turn("sweep", holder, 0.05):
                with store.running("sweep", seconds=0.3) as alone:
                    if alone:
                        started = time.monotonic()
                        time.sleep(0.5)
                        runs.append((started, time.monotonic()))
            time.sleep(0.01)

    threads = [threading.Thread(target=worker, args=(holder,)) for holder in ("worker-1", "worker-2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(runs)


def _overlapping(runs: list[tuple[float, float]]) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    return [(a, b) for a, b in itertools.pairwise(runs) if b[0] < a[1]]


def test_sweeps_longer_than_their_turn_and_their_hold_never_overlap(redis_url: str) -> None:
    """Two workers, turns shorter than a sweep and a hold renewed from a thread of its own: one sweep at a time."""
    runs = _two_workers_sweeping(redis_url)
    assert len(runs) >= 2
    assert _overlapping(runs) == []


def test_without_the_hold_sweeps_overlap(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same two workers with the hold taken out (devtools.faults, as JIT_FAULT_NO_SWEEP_LOCK does to a worker):
    their sweeps overlap, which is what the test above and tests/system/test_scale_out.py would catch."""
    monkeypatch.setattr(RequestStore, "running", faults.always_alone)
    assert _overlapping(_two_workers_sweeping(redis_url)) != []


def _group(group: str, targets: int = 3) -> list[requests.AccessRequest]:
    return [
        pending(requests.part_id(group, index)).model_copy(update={"group": group, "target": f"lb-{index}"})
        for index in range(1, targets + 1)
    ]


def test_a_group_counts_once_until_its_last_part_leaves_pending(redis_client: redis.Redis) -> None:
    """Three parts count as one pending request; the slot is free only once the last part is decided (expired,
    denied, approved, cancelled: each leaves pending)."""
    store = RequestStore(redis_client)
    parts = store.create_group(_group, pending_limit=2)
    assert store.create(pending, pending_limit=2)  # the group is one of two
    with pytest.raises(LimitError):
        store.create(pending, pending_limit=2)
    store.transition(parts[0].id, lambda r: requests.expire(r, NOW + timedelta(minutes=15)))
    store.transition(parts[1].id, lambda r: requests.deny(r, "U0APPROVER1", NOW))
    store.update(parts[2].id, card_ts="1.2")  # a change that stays pending counts nothing more
    with pytest.raises(LimitError):
        store.create(pending, pending_limit=2)
    store.transition(parts[2].id, lambda r: requests.approve(r, "U0APPROVER1", NOW))
    assert store.create(pending, pending_limit=2)


def test_a_discarded_group_frees_its_slot(redis_client: redis.Redis) -> None:
    store = RequestStore(redis_client)
    parts = store.create_group(_group, pending_limit=1)
    with pytest.raises(LimitError):
        store.create_group(_group, pending_limit=1)
    store.discard_group(parts[0].group or "", [part.id for part in parts])
    assert store.create_group(_group, pending_limit=1)


def test_pending_requests_stored_by_an_older_jit_lb_still_count(redis_client: redis.Redis) -> None:
    """An older jit-lb kept only the set of a user's pending ids: the count is built from it on first use, a group
    once, and its requests leaving pending free their slots."""
    store = RequestStore(redis_client)
    old = store.create_group(_group, pending_limit=5)
    lone = store.create(pending, pending_limit=5)
    redis_client.delete("jit:user-visible:U0DEV1")  # as the older jit-lb left it
    with pytest.raises(LimitError):
        store.create(pending, pending_limit=2)
    for part in old:
        store.transition(part.id, lambda r: requests.cancel(r, "withdrawn", NOW))
    store.transition(lone.id, lambda r: requests.cancel(r, "withdrawn", NOW))
    assert redis_client.hlen("jit:user-visible:U0DEV1") == 0
    assert store.create(pending, pending_limit=1)


def test_take_back_removes_only_what_was_made_and_not_changed_since(redis_client: redis.Redis) -> None:
    """A request (a group) whose write's answer was lost is taken back whole when Redis holds it as made; one changed
    since (approved, say) or another request under the id is left alone."""
    store = RequestStore(redis_client)
    lone = store.create(pending)
    assert store.take_back([lone]) == 1
    assert store.find(lone.id) is None and store.open_requests() == []
    parts = store.create_group(_group, pending_limit=1)
    assert store.take_back(parts) == 3
    assert store.open_requests() == [] and not store.is_group(parts[0].group or "")
    assert store.create_group(_group, pending_limit=1)  # its slot is free again

    other = store.create(pending)
    store.transition(other.id, lambda r: requests.approve(r, "U0APPROVER1", NOW))
    assert store.take_back([other]) == 0
    assert store.get(other.id).status is Status.APPROVED
    assert store.take_back([pending(other.id).model_copy(update={"reason": "another's"})]) == 0
    assert store.find(other.id) is not None


def test_an_approval_landing_while_a_request_is_taken_back_stands(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An approver's click (from an App Home) lands after the take-back read the request as made and before it
    deletes it: the approval stands, the request is not deleted (before, it was: gone from the open lists and the
    index while its grant could run, its end then beyond a revoke's reach, and the log said cancelled)."""
    store = RequestStore(redis_client)
    orphan = store.create(pending)
    parts = store.create_group(_group, pending_limit=5)
    discard = store.discard

    def approved_first(request_id: str, *args: object) -> bool:
        store.transition(request_id, lambda r: requests.approve(r, "U0APPROVER1", NOW))
        return discard(request_id, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "discard", approved_first)
    assert store.take_back([orphan]) == 0
    assert store.take_back(parts) == 0
    for request in [orphan, *parts]:
        assert store.get(request.id).status is Status.APPROVED
        assert request.id in {r.id for r in store.open_requests()}
    assert store.is_group(parts[0].group or "")


def test_a_transaction_cut_before_redis_and_tried_again_is_recorded_once(redis_url: str) -> None:
    """A worker's client tries a broken connection again: a transition whose MULTI … EXEC was cut on its way (not
    done) is read and made again, and its record, written before the first try, is not written a second time (two
    records of one change before). One whose answer alone was lost is recorded once and not made again."""
    upstream = redis.Redis.from_url(redis_url)
    with HoldingProxy(upstream.connection_pool.connection_kwargs["port"]) as proxy:
        store = RequestStore(connect(RedisAddress(proxy.url), WORKER))
        records: list[str] = []
        made = store.create(pending)

        proxy.cut(b"EXEC\r\n")
        _, after = store.transition(
            made.id, lambda r: requests.approve(r, "U0APPROVER1", NOW), lambda _, a: records.append(a.status)
        )
        assert (after.status, records) == (Status.APPROVED, [Status.APPROVED])
        assert store.get(made.id).status is Status.APPROVED

        proxy.hold(b"EXEC\r\n", seconds=4.0, once=True)  # past the worker's 3 s read: the answer is lost
        store.transition(made.id, lambda r: r.model_copy(update={"card_ts": "9.9"}), lambda _, a: records.append("x"))
        assert records == [Status.APPROVED, "x"]
        assert store.get(made.id).card_ts == "9.9"
    upstream.close()


def test_a_create_whose_answer_was_lost_and_tried_again_stores_and_counts_once(redis_url: str) -> None:
    """The web's client tries a broken connection once more: a create script that Redis ran, whose answer alone was
    lost, is run again. That second run finds its own request and is told it is stored; before, it found the id taken,
    counted the command a second time and stored the request again under a new id, leaving the first pending,
    unrecorded and unannounced (approvable from an App Home). The same for a request of several targets."""
    upstream = redis.Redis.from_url(redis_url)
    with HoldingProxy(upstream.connection_pool.connection_kwargs["port"]) as proxy:
        store = RequestStore(connect(RedisAddress(proxy.url), WORKER), proxy.url)  # create_async: the web's client

        async def create() -> tuple[set[str], set[str]]:
            await store.create_async(pending)  # the scripts loaded and the connections made: what is lost is a create
            await store.create_group_async(_group)
            before = {request.id for request in store.open_requests()}
            proxy.lose(b"EVALSHA")
            made = await store.create_async(pending, 10, Counting("U0DEV2", NOW, 20))
            proxy.lose(b"EVALSHA")
            parts = await store.create_group_async(_group, 10)
            return {request.id for request in store.open_requests()} - before, {made.id, *(part.id for part in parts)}

        stored, made = asyncio.run(create())
        assert (len(made), stored) == (4, made)
        assert upstream.get(f"jit:rate:U0DEV2:{int(NOW.timestamp()) // 60 * 60}") == b"1"
    upstream.close()


def test_a_refusal_is_told_only_to_the_call_it_answered(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A counted create refused is kept for its own call tried again, not for its request's id: another person's
    create that draws the same id a moment later is judged on its own and stored (before, it was told the first one's
    refusal, "you already have 1 pending request(s)", or, uncounted, told stored with nothing stored)."""
    store = RequestStore(redis_client)
    monkeypatch.setattr("jit_lb.access.store.new_request_id", itertools.repeat("jit-zzzzzz").__next__)
    first = store.create(pending)  # U0DEV1's
    monkeypatch.setattr("jit_lb.access.store.new_request_id", itertools.repeat("jit-yyyyyy").__next__)
    with pytest.raises(LimitError, match="pending request"):
        store.create(pending, 1, Counting("U0DEV1", NOW, 20))
    for limit, counting in ((1, Counting("U0DEV2", NOW, 20)), (1_000_000, None)):
        made = store.create(
            lambda request_id: pending(request_id).model_copy(update={"requester": "U0DEV2"}), limit, counting
        )
        assert store.get(made.id) == made
        store.discard(made.id)
    assert store.get(first.id) == first


def test_a_lockdown_refusal_is_said_by_a_redis_that_takes_no_writes(redis_client: redis.Redis) -> None:
    """Break-glass during a lockdown, its create not counted, on a Redis out of memory: the refusal is the lockdown's,
    as it writes nothing (only a counted command's refusal is kept for its call tried again, after its count)."""
    store = RequestStore(redis_client)
    store.start_lockdown("U0ADMIN", NOW, "drill")
    redis_client.config_set("maxmemory-policy", "noeviction")
    redis_client.config_set("maxmemory", "1")
    try:
        with pytest.raises(LockdownError):
            store.create(pending)
    finally:
        redis_client.config_set("maxmemory", "0")
