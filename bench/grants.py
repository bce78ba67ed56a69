"""Approve → granted latency, revoke lag, and a burst of approvals, measured against a running Stack."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from bench.moto_view import MotoMeter, MotoView
from bench.stats import Row, latency_row
from bench.world import (
    APPROVALS,
    APPROVER,
    AuditTail,
    World,
    approve_bodies,
    card_timestamps,
    job_times,
    post,
    request_ids,
)
from devtools.stack import Stack


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def ms(seconds: float) -> float:
    return seconds * 1000.0


def submitted(stack: Stack, world: World, pool: str, count: int, duration: str) -> tuple[list[str], dict[str, str]]:
    """File `count` requests on the pool's targets; return their ids and approval-card timestamps."""
    ids = request_ids(post(stack, world.commands(pool, count, duration), concurrency=20))
    return ids, card_timestamps(stack, ids, timeout=60 + count / 10)


def wait_until(predicate: Callable[[], bool], timeout: float, every: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)
    return True


# --- 2. approve → granted ------------------------------------------------------------------


def approve_to_granted(stack: Stack, world: World, count: int) -> list[Row]:
    """Sequential approvals; each from the click's HTTP answer to its lease at moto, polled every 10 ms."""
    ids, cards = submitted(stack, world, "ag", count, "30m")
    view = MotoView(world.group_ids("ag"))
    client = stack.client()
    answered: dict[str, float] = {}
    present: dict[str, float] = {}
    for request_id in ids:
        status = client.click(APPROVER, "jit_approve", request_id, APPROVALS, cards[request_id]).status
        answered[request_id] = time.time()
        if status != 200:
            raise RuntimeError(f"approve click for {request_id} answered HTTP {status}")
        if wait_until(lambda rid=request_id: rid in view.leases(), timeout=20, every=0.01):
            present[request_id] = time.time()
    rq = redis.Redis.from_url(stack.redis.url)
    latencies, to_enqueue, queued, applying, after = [], [], [], [], []
    for request_id, at in present.items():
        latencies.append(ms(at - answered[request_id]))
        job = job_times(rq, f"grant-{request_id}")
        if job.enqueued and job.started and job.ended:
            to_enqueue.append(ms(job.enqueued - answered[request_id]))
            queued.append(ms(job.started - job.enqueued))
            applying.append(ms(at - job.started))
            after.append(ms(job.ended - at))
    missing = len(ids) - len(present)
    return [
        latency_row(
            "2. approve → rule at moto", latencies, "p50 < 300", f"{missing} never appeared" if missing else ""
        ),
        latency_row(
            "   click answered → grant job enqueued", to_enqueue, note="web, after the answer: decide(), audit, enqueue"
        ),
        latency_row("   grant job waits in queue", queued),
        latency_row("   job started → rule at moto", applying, note="worker: redis, lock, describe, authorize"),
        latency_row("   rule at moto → job ended", after, note="worker: describe, record, audit, queue the notice"),
    ]


# --- 3. revoke lag -------------------------------------------------------------------------


@dataclass
class RevokeWatch:
    """Lease ends as the tags say, and when each rule was first seen gone."""

    ends: dict[str, float] = field(default_factory=dict)
    gone: dict[str, float] = field(default_factory=dict)


def revoke_lag(stack: Stack, world: World, count: int, duration_s: int) -> list[Row]:
    """`count` grants approved at once, ending together; lag = rule gone at moto - lease end (polled every 100 ms)."""
    ids, cards = submitted(stack, world, "rv", count, f"{duration_s}s")
    audit = AuditTail(stack.audit_path)
    audit.poll()
    approved_at = time.time()
    clicks = post(stack, approve_bodies(ids, cards), concurrency=50)
    if set(clicks.statuses) != {200}:
        raise RuntimeError(f"approve clicks answered {sorted(set(clicks.statuses))}")
    all_granted = audit.wait(lambda a: all(a.count(rid, "grant.applied") for rid in ids), timeout=duration_s + 60)
    granted = [rid for rid in ids if audit.count(rid, "grant.applied")]
    log(f"revoke lag: {len(granted)}/{len(ids)} granted in {time.time() - approved_at:.1f}s")
    view = MotoView(world.group_ids("rv"))
    watch = RevokeWatch()
    for request_id, rule in view.leases().items():
        if request_id in set(granted):
            watch.ends[request_id] = rule.ends_at.timestamp()
    deadline = max(watch.ends.values(), default=time.time()) + 60
    with MotoMeter() as meter:
        while len(watch.gone) < len(watch.ends) and time.time() < deadline:
            seen, now = view.leases(), time.time()
            for request_id in watch.ends:
                if request_id not in seen and request_id not in watch.gone:
                    watch.gone[request_id] = now
            time.sleep(0.1)
    lags = [ms(watch.gone[rid] - end) for rid, end in watch.ends.items() if rid in watch.gone]
    rq = redis.Redis.from_url(stack.redis.url)
    to_enqueue, queued, working = [], [], []
    duplicates = duplicates_revoked = 0
    for request_id, end in watch.ends.items():
        raw = rq.get(f"jit:revoke-job:{request_id}")  # the revoke_expired job the workers' loop queued for it
        job = job_times(rq, raw.decode() if raw else f"revoke-{request_id}")
        if job.enqueued and job.started and request_id in watch.gone:
            to_enqueue.append(ms(job.enqueued - end))
            queued.append(ms(job.started - job.enqueued))
            working.append(ms(watch.gone[request_id] - job.started))
        due = job_times(rq, f"revoke-due-{request_id}")
        duplicates += due.enqueued is not None
        duplicates_revoked += due.result == "revoked"
    spread = max(watch.ends.values(), default=0) - min(watch.ends.values(), default=0)
    left = len(watch.ends) - len(watch.gone)
    gone_times = sorted(watch.gone.values())
    # From the first rule gone, not the first end: revokes now start before the end (the revoke lead).
    rate = len(gone_times) / max(gone_times[-1] - gone_times[0], 1e-9) if len(gone_times) > 1 else 0.0
    note = f"{len(watch.ends)} grants, ends spread over {spread:.0f} s, 3 workers; {rate:.1f} removed/s"
    if not all_granted or left:
        note += f"; {count - len(granted)} never granted, {left} never removed"
    return [
        latency_row("3. revoke lag (rule gone - lease end)", lags, "p99 < 2000", note),
        latency_row(
            "   lease end → revoke job enqueued", to_enqueue, note="negative: queued ahead of the end (the revoke lead)"
        ),
        latency_row("   revoke job waits in queue", queued),
        latency_row(
            "   job started → rule gone",
            working,
            note="worker: locks, one listing, one revoke call; 100 ms polls",
        ),
        Row(
            "   duplicate revoke-due jobs queued",
            str(duplicates),
            "",
            f"{duplicates_revoked} of them did the revoke; the rest found it done",
        ),
        Row(
            "   moto CPU while revoking",
            f"{sum(meter.seconds.values()):.1f} s",
            "",
            meter.text(len(watch.gone) or 1, "revoke"),
        ),
    ]


# --- 4. burst ------------------------------------------------------------------------------


def burst(stack: Stack, world: World, count: int) -> list[Row]:
    """`count` approvals fired at once; time until every one is grant.applied, and lost or doubled grants."""
    ids, cards = submitted(stack, world, "bu", count, "30m")
    audit = AuditTail(stack.audit_path)
    audit.poll()
    with MotoMeter() as meter:
        clicks = post(stack, approve_bodies(ids, cards), concurrency=count)
        first_click = min(clicks.sent_at)
        finished = audit.wait(lambda a: all(a.count(rid, "grant.applied") for rid in ids), timeout=180, every=0.2)
    all_applied = time.time()
    time.sleep(3)  # late duplicates would land within a job's run; give them a moment
    audit.poll()
    applied = [audit.first(rid, "grant.applied") for rid in ids]
    # A click answered 200 and never granted is lost, whether its approval was never counted (the web refused it
    # after answering, say "jit-lb is unavailable") or counted and never applied.
    lost = sum(1 for rid in ids if not audit.count(rid, "grant.applied"))
    doubled = sum(1 for rid in ids if audit.count(rid, "grant.applied") > 1)
    last = max((t for t in applied if t is not None), default=all_applied)
    per_request = [ms(t - sent) for t, sent in zip(applied, clicks.sent_at, strict=True) if t is not None]
    decided = [audit.first(rid, "request.approved") for rid in ids]
    to_approved = [ms(t - sent) for t, sent in zip(decided, clicks.sent_at, strict=True) if t is not None]
    bad_clicks = sum(1 for status in clicks.statuses if status != 200)
    total = f"{last - first_click:.2f} s" if finished else f"not done after {all_applied - first_click:.0f} s"
    return [
        Row(
            f"4. burst: first click → all {count} grant.applied",
            total,
            "",
            f"{count / max(last - first_click, 1e-9):.1f} grants/s; {bad_clicks} clicks not 200",
        ),
        latency_row("   burst: click answered", clicks.latencies_ms, note=f"{count} concurrent clicks"),
        latency_row(
            "   burst: click sent → request.approved", to_approved, note="web: decide() on 4 threads after each answer"
        ),
        latency_row("   burst: click sent → its grant.applied", per_request),
        Row("   burst: moto CPU", f"{sum(meter.seconds.values()):.1f} s", "", meter.text(count, "grant")),
        Row("   burst: lost (clicked, never granted)", str(lost), "0"),
        Row("   burst: double grants", str(doubled), "0"),
    ]
