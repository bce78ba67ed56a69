"""The threads every worker process runs beside RQ: the reconcile loop, and the outbox of cards to post."""

from __future__ import annotations

import atexit
import threading
import time
import uuid
from collections.abc import Callable

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jit_lb.access.errors import StoreUnavailableError
from jit_lb.runtime import Runtime
from workers import context, enrolments, lockdown, notices, reconcile
from workers.outage import MarkerWatch, Outage

log = structlog.get_logger("jit_lb.worker")

ENDED_CHECK_SECONDS = 0.1  # how often ended grants are looked for: at most this late, a revoke is queued
DUE_CHECK_SECONDS = 1.0
REDIS_RETRY_SECONDS = 1.0
# What Redis being away looks like from here: the store's own error, or redis-py's from RQ's calls.
REDIS_GONE = (StoreUnavailableError, RedisConnectionError, RedisTimeoutError)


class ReconcileLoop(threading.Thread):
    """Every 0.1 s: queue the revokes of ended grants. Every second, on a thread of its own (`chores`): requeue
    lost revokes, expire pending requests, write spooled audit records and refusal summaries, end idle grants.
    Every JIT_SWEEP_INTERVAL across all workers: one sweep, on a thread of its own too. Neither the chores (an
    idle check asks the load balancer about every open grant) nor a sweep (seconds on many rules) can hold up
    the 0.1 s turn that queues the revokes due next.
    While Redis is gone: each worker sweeps by the markers alone, on the thread of
    workers/outage.py's MarkerWatch, which this loop starts.
    At start and after each SIGHUP (`reload`): read the policy and end the grants
    it no longer covers.

    The sweep's turn is held in the store for the interval: whichever live worker takes it sweeps,
    so the interval holds whichever process dies.
    """

    def __init__(self, rt: Runtime, reload_asked: threading.Event | None = None) -> None:
        super().__init__(name="jit-reconcile", daemon=True)
        self.rt = rt
        self.holder = uuid.uuid4().hex
        self.stopping = threading.Event()
        # Set by the SIGHUP handler, which must not do the work itself: this thread reads, judges and records.
        self.reload_asked = reload_asked or threading.Event()
        self.outage = Outage(rt)
        self.markers = MarkerWatch(rt, self.outage)
        self.judged = False  # a restart reads the policy too: the open grants are judged against it at once
        self.chores = threading.Thread(target=self.chores_every_second, name="jit-chores", daemon=True)
        self.sweeping = threading.Thread()  # the sweep's own thread, once one has started
        # The process's audit chain begins here, before any loop or job writes a record; a checkpoint every
        # 5 minutes (run) and one at stop (RQ returns on SIGTERM, then the interpreter exits) go to Slack too.
        rt.audit.start_chain("worker", rt.settings.jit_audit_key, witness=context.current().notifier.post_checkpoint)
        atexit.register(rt.audit.checkpoint, "stop", background=False)

    def run(self) -> None:
        self.markers.start()
        self.chores.start()
        while not self.stopping.wait(ENDED_CHECK_SECONDS):
            try:
                self.outage.replay()  # what sweeps made while Redis was gone is recorded before anything else
                self.tick()
                self.outage.over()
            except REDIS_GONE as err:
                self.outage.noticed(err)  # the marker watch sweeps by the markers until a tick passes again
            except Exception:
                log.exception("reconcile loop iteration failed; retrying next tick")

    def tick(self) -> None:
        """One turn of the loop, with Redis: the policy read again when asked, and the revokes due now."""
        if self.reload_asked.is_set():
            self.reload_asked.clear()
            self.judged = not self.rt.reload_policy()
        if not self.judged:
            reconcile.end_orphans()
            self.judged = True
        reconcile.enqueue_ended()

    def chores_every_second(self) -> None:
        """The chores' thread: every second while Redis answers (the marker watch stands in while it is gone)."""
        while not self.stopping.wait(DUE_CHECK_SECONDS):
            if self.outage.active:
                continue
            try:
                self.chore_turn()
            except REDIS_GONE as err:
                self.outage.noticed(err)
            except Exception:
                log.exception("a chore of the reconcile loop failed; retrying next second")

    def due_each_second(self) -> tuple[Callable[[], object], ...]:
        """What is due each second, in order (jit_lb.metrics.CHORES names them for jit_chore_failures_total)."""
        return (
            self.rt.audit.flush,
            self.rt.audit.checkpoint_if_due,
            lockdown.enforce_lockdown,
            reconcile.end_idle,
            reconcile.announce_overdue_reviews,
            enrolments.forget_due,
            reconcile.record_refusal_summaries,
            reconcile.close_unrecorded,
            reconcile.enqueue_due,
        )

    def chore_turn(self) -> None:
        """What is due each second, and the sweep's turn. Each chore on its own: one that fails every turn (a record
        its data cannot make, say) is logged and holds up none of the others, the sweep least of all; Redis gone
        ends the turn (the marker watch takes over)."""
        for chore in self.due_each_second():
            try:
                chore()
            except REDIS_GONE:
                raise
            except Exception:
                log.exception("a chore of the reconcile loop failed; the others go on", chore=chore.__name__)
                if self.rt.metrics is not None:
                    self.rt.metrics.chore_failed(chore.__name__)
        if self.sweeping.is_alive():
            return  # this worker's last sweep still runs; the turn is left to the others meanwhile
        if self.rt.store.take_turn("sweep", self.holder, self.rt.settings.jit_sweep_interval):
            self.sweeping = threading.Thread(target=self.sweep, name="jit-sweep", daemon=True)
            self.sweeping.start()

    def sweep(self) -> None:
        """One sweep, alone across every worker. The turn comes once an interval; a sweep longer than that still
        runs alone. The hold lasts about an interval (2 to 10 s, renewed while the sweep runs), so a worker killed
        mid-sweep delays the others' next sweep by no more than that."""
        interval = self.rt.settings.jit_sweep_interval
        try:
            with self.rt.store.running("sweep", seconds=min(10.0, max(2.0, interval))) as alone:
                if not alone:
                    return
                started = time.monotonic()
                log.info("sweep started")
                removed = reconcile.sweep()
                took = time.monotonic() - started
                if self.rt.metrics is not None:
                    self.rt.metrics.swept(took)
                log.info("sweep done", removed=removed, seconds=round(took, 3))
        except REDIS_GONE as err:
            self.outage.noticed(err)  # the marker watch sweeps by the markers until a tick passes again
        except Exception:
            log.exception("sweep failed; the next turn sweeps again")


class OutboxLoop(threading.Thread):
    """Posts the cards the web queued in the store's outbox (new requests, extensions), one at a time."""

    def __init__(self, rt: Runtime) -> None:
        super().__init__(name="jit-cards", daemon=True)
        self.rt = rt

    def run(self) -> None:
        while True:
            try:
                request_id = self.rt.store.next_to_announce(timeout=1.0)
                if request_id is not None:
                    notices.announce(request_id)
            except StoreUnavailableError:
                time.sleep(REDIS_RETRY_SECONDS)
            except Exception:
                log.exception("posting an approval card failed; the request expires unanswered if it stays unposted")
