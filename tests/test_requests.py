"""Request transitions (pure, time as a parameter) and their atomicity in Redis."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import redis

from jit_lb.access import requests
from jit_lb.access.errors import ApprovalError, TransitionError
from jit_lb.access.requests import AccessRequest, EndReason, Status
from jit_lb.access.store import RequestStore

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def pending(request_id: str = "jit-abcdef", required: int = 1) -> AccessRequest:
    return AccessRequest(
        id=request_id,
        target="lb-prod",
        requester="U0DEV1",
        reason="why",
        duration_seconds=600,
        cidr="203.0.113.7/32",
        created_at=NOW,
        pending_until=NOW + timedelta(minutes=15),
        approvals_required=required,
    )


def test_one_approval_approves_when_one_is_required() -> None:
    """With approvals_required 1, the first approver's click approves and records who decided."""
    after = requests.approve(pending(), "U0APPROVER1", NOW)
    assert (after.status, after.decided_by, after.approvers) == (Status.APPROVED, "U0APPROVER1", ["U0APPROVER1"])


def test_two_required_needs_two_distinct_approvers() -> None:
    """The same approver twice does not make two approvals."""
    once = requests.approve(pending(required=2), "U0APPROVER1", NOW)
    assert once.status is Status.PENDING
    with pytest.raises(ApprovalError, match="already approved"):
        requests.approve(once, "U0APPROVER1", NOW)
    assert requests.approve(once, "U0APPROVER2", NOW).status is Status.APPROVED


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda r: requests.deny(r, "U0APPROVER2", NOW), "already denied"),
        (lambda r: requests.approve(r, "U0APPROVER2", NOW), "already approved"),
    ],
)
def test_no_approval_after_a_decision(setup: object, expected: str) -> None:
    """An approval after a denial (or a second approval) counts for nothing."""
    decided = setup(pending())  # type: ignore[operator]
    with pytest.raises(TransitionError, match=expected):
        requests.approve(decided, "U0APPROVER1", NOW)


def test_requester_cannot_approve_and_late_approval_is_refused() -> None:
    """The requester's own click and a click after the pending window are refused."""
    with pytest.raises(ApprovalError, match="own request"):
        requests.approve(pending(), "U0DEV1", NOW)
    with pytest.raises(TransitionError, match="expired"):
        requests.approve(pending(), "U0APPROVER1", NOW + timedelta(minutes=16))


def test_life_cycle_to_the_end() -> None:
    """approved → granted → revoked records when, how long, and what was removed."""
    approved = requests.approve(pending(), "U0APPROVER1", NOW)
    granted = requests.grant(approved, NOW, NOW + timedelta(minutes=10), ["sgr-1"], verified=True)
    ended = requests.end(granted, NOW + timedelta(minutes=10), EndReason.EXPIRED, "system", ["sgr-1"], verified=True)
    assert ended.status is Status.REVOKED
    assert timedelta(minutes=10) == ended.lasted()
    with pytest.raises(TransitionError):
        requests.end(ended, NOW, EndReason.REVOKED, "U0DEV1", [], verified=True)


def test_expire_only_after_the_window() -> None:
    """A pending request expires only once its pending window has passed."""
    with pytest.raises(TransitionError, match="still within"):
        requests.expire(pending(), NOW)
    assert requests.expire(pending(), NOW + timedelta(minutes=15)).status is Status.EXPIRED


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
