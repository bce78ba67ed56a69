"""Prometheus metrics of one process (docs/metrics.md): what the web and the workers count, and what a scrape reads.

Counters and histograms are counted where things happen: request outcomes from the audit records that
state them (so a count never says more than the log), grant and revoke figures in the worker's jobs, the
sweep's time in its loop. The worker runs jobs in its own process (RQ's SimpleWorker), so nothing counted in
a job is lost with a child process. Gauges that are state (grants active, lockdown, Redis reachable) are read
from Redis when scraped, so every process tells the truth of the store rather than its own memory of it.

A target's name is a label value only when the target is in the policy in force; any other name (a typo in
a refused command, a target since removed) counts as `other`, so that nobody can grow the label set by typing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from jit_lb.access.errors import StoreUnavailableError

if TYPE_CHECKING:
    from jit_lb.access.policy import Policy
    from jit_lb.access.store import RequestStore

log = structlog.get_logger("jit_lb.metrics")

OTHER_TARGET = "other"
OUTCOMES = ("created", "refused", "approved", "auto_approved", "denied", "expired", "cancelled")
KINDS = ("aws_security_group", "aws_alb_listener_rule", "aws_iam_policy", "haproxy_acl", "nginx_allowlist")

# Approval counted -> grant verified: a job's queueing plus the load balancer's API.
GRANT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Access gone - approved end: negative is early (revokes start before the end), positive is late.
END_OFFSET_BUCKETS = (
    -3600.0,
    -600.0,
    -60.0,
    -30.0,
    -10.0,
    -5.0,
    -2.0,
    -1.0,
    -0.5,
    0.0,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
# The per-second chores of a worker's reconcile loop (workers/loops.py, by function name): a series each from the start.
CHORES = (
    "flush",
    "checkpoint_if_due",
    "enforce_lockdown",
    "end_idle",
    "announce_overdue_reviews",
    "forget_due",
    "record_refusal_summaries",
    "close_unrecorded",
    "enqueue_due",
)
SWEEP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# What each audit event says became of a request (request.approved counts once, when the request is approved).
_OUTCOME_OF = {
    "request.created": "created",
    "request.refused": "refused",
    "request.denied": "denied",
    "request.expired": "expired",
    "request.cancelled": "cancelled",
}


class Metrics:
    """The metrics of one process, in a registry of its own (a test builds many runtimes in one interpreter)."""

    def __init__(self, policy: Callable[[], Policy], sweep_interval: float) -> None:
        # No `_created` twin of every series: half the lines a scrape reads, nothing lost.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self._policy = policy
        self.requests = Counter(
            "jit_requests_total", "Requests and what became of them.", ["target", "outcome"], registry=self.registry
        )
        self.grant_seconds = Histogram(
            "jit_grant_seconds",
            "Seconds from the approval that counted to the grant verified at the load balancer.",
            ["kind"],
            buckets=GRANT_BUCKETS,
            registry=self.registry,
        )
        self.end_offset = Histogram(
            "jit_access_end_offset_seconds",
            "Access gone at the load balancer minus the approved end, in seconds (negative: gone before its end).",
            ["kind"],
            buckets=END_OFFSET_BUCKETS,
            registry=self.registry,
        )
        self.revoke_failures = Counter(
            "jit_revoke_failures_total", "Revokes that failed (each retry counts).", ["kind"], registry=self.registry
        )
        self.sweep_seconds = Histogram(
            "jit_sweep_seconds",
            "Seconds one sweep over every load balancer took.",
            buckets=SWEEP_BUCKETS,
            registry=self.registry,
        )
        self.audit_failures = Counter(
            "jit_audit_write_failures",
            "Audit records that could not be written when first tried.",
            registry=self.registry,
        )
        self.unreadable = Counter(
            "jit_unreadable_requests",
            "Reads of a stored request that could not be read (each read counts: a chore retries every second).",
            registry=self.registry,
        )
        self.chore_failures = Counter(
            "jit_chore_failures",
            "A worker's per-second chores that raised (each turn counts; the other chores go on).",
            ["chore"],
            registry=self.registry,
        )
        interval = Gauge(
            "jit_sweep_interval_seconds", "JIT_SWEEP_INTERVAL: a sweep is due this often.", registry=self.registry
        )
        interval.set(sweep_interval)
        self.sweep_last = Gauge(
            "jit_sweep_last_timestamp_seconds",
            "When this process last finished a sweep (Unix time; 0: not since it started).",
            registry=self.registry,
        )
        for kind in KINDS:  # every series from the start, so that rate() and increase() see the first event
            self.revoke_failures.labels(kind)
            self.grant_seconds.labels(kind)
            self.end_offset.labels(kind)
        for chore in CHORES:
            self.chore_failures.labels(chore)
        for name in policy().targets:
            for outcome in OUTCOMES:
                self.requests.labels(name, outcome)

    def target(self, name: Any) -> str:
        """`name` as a label value: the target's name when it is in the policy in force, else `other`."""
        return name if isinstance(name, str) and name in self._policy().targets else OTHER_TARGET

    # --- the audit log's observer ---------------------------------------------------------------------

    def recorded(self, event: str, record: dict[str, Any]) -> None:
        """An audit record accepted: count the request outcome it states, if it states one."""
        outcome = _OUTCOME_OF.get(event)
        if event == "request.approved" and record.get("status") == "approved":
            outcome = "auto_approved" if record.get("auto_approve") else "approved"
        if outcome is None:
            return
        count = record.get("refused") if event == "request.refused" and record.get("summary") else 1
        self.requests.labels(self.target(record.get("target")), outcome).inc(count if isinstance(count, int) else 1)

    def write_failed(self) -> None:
        self.audit_failures.inc()

    # --- the workers ----------------------------------------------------------------------------------

    def granted(self, kind: str, took: timedelta) -> None:
        self.grant_seconds.labels(_kind(kind)).observe(took.total_seconds())

    def access_ended(self, kind: str, offset: timedelta) -> None:
        self.end_offset.labels(_kind(kind)).observe(offset.total_seconds())

    def revoke_failed(self, kind: str) -> None:
        self.revoke_failures.labels(_kind(kind)).inc()

    def chore_failed(self, chore: str) -> None:
        self.chore_failures.labels(chore).inc()

    # --- the store's observer -------------------------------------------------------------------------

    def unreadable_request(self) -> None:
        self.unreadable.inc()

    def swept(self, seconds: float) -> None:
        self.sweep_seconds.observe(seconds)
        self.sweep_last.set_to_current_time()

    # --- state read when scraped ----------------------------------------------------------------------

    def read_state_from(self, store: RequestStore) -> None:
        """Serve jit_grants_active, jit_lockdown and jit_redis_up from the store at each scrape."""
        self.registry.register(_StoreState(store, self.target))


def _kind(kind: str) -> str:
    return kind if kind in KINDS else "other"


class _StoreState(Collector):
    """The gauges that are state in Redis, read at each scrape (a few round trips)."""

    def __init__(self, store: RequestStore, target: Callable[[Any], str]) -> None:
        self.store = store
        self.target = target

    def describe(self) -> Iterable[Metric]:
        return self._families({}, 0, 0)

    def collect(self) -> Iterable[Metric]:
        try:
            self.store.redis.ping()
            lockdown = 1 if self.store.lockdown() is not None else 0
            active: dict[str, int] = {}
            for name in self.store.granted_targets():
                label = self.target(name)
                active[label] = active.get(label, 0) + 1
        except (RedisError, StoreUnavailableError, OSError) as err:
            log.warning("metrics: Redis did not answer", error=str(err))
            return self._families(None, None, 0)  # what Redis holds is unknown, so it is not said
        return self._families(active, lockdown, 1)

    @staticmethod
    def _families(active: dict[str, int] | None, lockdown: int | None, redis_up: int) -> Iterator[Metric]:
        grants = GaugeMetricFamily("jit_grants_active", "Grants applied and not yet ended.", labels=["target"])
        for name, count in sorted((active or {}).items()):
            grants.add_metric([name], count)
        if active is not None:
            yield grants
        if lockdown is not None:
            yield GaugeMetricFamily("jit_lockdown", "1 while a lockdown is on.", value=lockdown)
        yield GaugeMetricFamily("jit_redis_up", "1 while this process reaches Redis.", value=redis_up)
