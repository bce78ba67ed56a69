"""Access that ends with Redis gone (docs/operating.md): every worker sweeps the load balancers by their markers alone,
and spools what it ended until Redis takes the records again.

While no Redis answers, nothing is granted (grants need Redis), so a worker can judge each object by
the leases it carries: a lease whose end is within JIT_REVOKE_LEAD is over, and dropped. Each worker
does so on its own, at least every JIT_SWEEP_INTERVAL and again at the next end it saw, so that no
one worker is needed. What it removed is recorded at once as `sweep.removed` (the audit log does not
need Redis); the grant's end, a state change in Redis, waits in the spool, in order, and is recorded
(`grant.revoked`, reason `sweep`) once Redis answers again, before the loop does anything else.
HAProxy ACL grants keep their leases in Redis, so they cannot be judged while it is gone: they end
once it is back.

The sweeps by markers run on a thread of their own (MarkerWatch), which notices Redis gone by a quick
PING of its own connection: a Redis that is frozen or cut off by a partition does not refuse, it
hangs, and a loop or job waiting for it must not hold up the sweep that ends access.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jit_lb.access.connections import PROBE, connect
from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import GrantSpec
from jit_lb.clock import utcnow
from jit_lb.runtime import Runtime
from workers import reconcile
from workers.judge import lease_verdict, longest_grant
from workers.orders import record_removed
from workers.providers.base import ManagedObject, Provider
from workers.providers.registry import known_specs, provider_for

log = structlog.get_logger("jit_lb.outage")

PROBE_SECONDS = 0.5  # how often the marker watch pings Redis, and looks whether a sweep by markers is due
PROBE_MISSES = 2  # PINGs unanswered in a row (each within connections.PROBE) before Redis counts as gone


@dataclass(frozen=True)
class Removal:
    """Leases a worker dropped while Redis was gone: the grant's end to record once Redis is back."""

    spec: GrantSpec
    request_id: str
    obj: ManagedObject
    at: datetime


class Outage:
    """One worker's view of a Redis outage: when it began, when to sweep next, and the spool of ends to record.

    The reconcile loop (replay, over) and the marker watch (noticed, sweep_if_due) share it: the lock keeps the
    outage's start and the spool whole between them, and one sweep by markers at a time.
    """

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.since: float | None = None
        self.next_sweep = 0.0
        self.spool: deque[Removal] = deque()
        self.lock = threading.RLock()

    @property
    def active(self) -> bool:
        return self.since is not None

    def noticed(self, error: Exception) -> None:
        """Note that Redis is gone (logged once an outage); the marker watch sweeps by the markers from now on."""
        with self.lock:
            if self.since is None:
                self.since = time.monotonic()
                self.next_sweep = self.since
                log.error("Redis unreachable: sweeping the load balancers by their markers", error=str(error))

    def sweep_if_due(self) -> None:
        """While Redis is gone, sweep by the markers when a sweep is due (at the interval, or at the next end seen)."""
        with self.lock:
            if self.since is None or time.monotonic() < self.next_sweep:
                return
            started = time.monotonic()
            self.next_sweep = self.sweep(utcnow())
            if self.rt.metrics is not None:  # a sweep by markers is a sweep: the sweep alerts count it too
                self.rt.metrics.swept(time.monotonic() - started)

    def replay(self) -> None:
        """Record what the outage's sweeps ended, in order, once a request; raises (keeping the rest) if Redis fails."""
        while True:
            with self.lock:  # Redis is asked outside the lock: a slow answer must not hold up a sweep by markers
                if not self.spool:
                    return
                first = self.spool[0]
                same = [item for item in self.spool if item.request_id == first.request_id]
            provider = provider_for(first.spec, self.rt.store.redis, self.rt.policy)
            request = self.rt.store.find(first.request_id)  # StoreUnavailableError: kept for the next try
            reconcile.close_swept(self.rt, provider, first.request_id, [item.obj for item in same], request, first.at)
            with self.lock:
                self.spool = deque(item for item in self.spool if item.request_id != first.request_id)

    def over(self) -> None:
        """Redis answered a whole turn of the loop: the outage, if there was one, is over."""
        with self.lock:
            if self.since is not None:
                log.info("Redis is back; the sweeps by markers stop", seconds=round(time.monotonic() - self.since, 1))
                self.since = None

    def sweep(self, now: datetime) -> float:
        """Drop every lease whose end is due, on every spec this worker knows; return when to sweep next (monotonic).

        The next sweep is at the interval, or sooner when a lease seen now ends before it.
        """
        lead = timedelta(seconds=self.rt.settings.jit_revoke_lead)
        interval = self.rt.settings.jit_sweep_interval
        soonest = now + timedelta(seconds=interval)
        removed = 0
        for spec in known_specs(self.rt.policy):
            provider = provider_for(spec, self.rt.store.redis, self.rt.policy)
            if provider.owns_unleased:
                continue  # its leases are booked in Redis (HAProxy ACLs): judged once Redis is back
            try:
                objects = provider.list_managed()
            except ProviderError as err:
                log.error("a load balancer could not be swept while Redis is gone", kind=spec.kind, error=str(err))
                continue
            longest = longest_grant(self.rt.policy, spec)
            for obj in objects:
                if obj.anomaly or not obj.leases:
                    continue  # not ours to judge without Redis: the sweep reports it once Redis is back
                verdicts = {
                    lease.request_id: why
                    for lease in obj.leases
                    if (why := lease_verdict(lease.ends_at, None, now + lead, longest)) is not None
                }
                for lease in obj.leases:
                    if lease.request_id not in verdicts:
                        soonest = min(soonest, lease.ends_at - lead)
                if verdicts:
                    removed += self._drop(spec, provider, obj, verdicts, now)
        log.info("swept by markers while Redis is gone", removed=removed, spooled=len(self.spool))
        # Workers that saw the same end would sweep at the same instant: a little jitter, well within the lead.
        jitter = random.uniform(0, min(0.5, lead.total_seconds() / 4))  # noqa: S311 - jitter, not a secret
        wait = (soonest - utcnow()).total_seconds() + jitter
        return time.monotonic() + min(max(wait, 0.05), interval)

    def _drop(
        self, spec: GrantSpec, provider: Provider, obj: ManagedObject, verdicts: dict[str, str], now: datetime
    ) -> int:
        try:
            # No scope lock (it lives in Redis): nothing is granted meanwhile. Read again just before: another
            # worker sweeping at the same moment may have removed it, and then it is that worker's to record.
            now_obj = provider.read(obj.ref)
            if now_obj is None or not set(verdicts) & now_obj.request_ids():
                return 0
            deleted = bool(provider.drop(now_obj, set(verdicts)))
        except ProviderError as err:
            log.error("an ended lease could not be removed; the next sweep tries again", object=obj.ref, error=str(err))
            return 0
        record_removed(self.rt, spec.kind, obj, sorted(verdicts), verdicts, deleted)
        self.spool.extend(Removal(spec, request_id, obj, now) for request_id in sorted(verdicts))
        return int(deleted)


class MarkerWatch(threading.Thread):
    """Pings Redis on a connection of its own, with short timeouts and no retries, and sweeps by the markers while
    Redis is gone: the reconcile loop notices a refused Redis at once, but a frozen one holds each of its calls
    for seconds (a fresh connection through its retries: tens of seconds), and the ends must not wait for them."""

    def __init__(self, rt: Runtime, outage: Outage) -> None:
        super().__init__(name="jit-markers", daemon=True)
        self.outage = outage
        self.probe: redis.Redis = connect(rt.settings.redis, PROBE)
        self.stopping = threading.Event()

    def run(self) -> None:
        misses = 0
        while not self.stopping.wait(PROBE_SECONDS):
            try:
                self.probe.ping()
                misses = 0
            except (RedisConnectionError, RedisTimeoutError) as err:
                misses += 1
                if misses >= PROBE_MISSES:
                    self.outage.noticed(err)
            try:
                self.outage.sweep_if_due()
            except Exception:  # the watch outlives any one sweep; the next turn tries again
                log.exception("sweep by markers failed; retrying next turn")
