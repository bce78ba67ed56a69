"""`python -m workers`: an RQ worker (with RQ's scheduler) plus the sweep loop that any live worker runs."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import uuid

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import SimpleWorker

from bot.access.errors import JitError, StoreUnavailableError
from bot.logs import configure_logging
from bot.runtime import Runtime, build_runtime
from bot.service import AccessService
from bot.settings import load_settings
from workers import jobs
from workers.providers.registry import provider_for, specs_of

log = structlog.get_logger("jit_lb.worker")

SWEEP_KEY = "jit:sweep:next"
ENDED_CHECK_SECONDS = 0.1  # how often ended grants are looked for: at most this late, a revoke is queued
DUE_CHECK_SECONDS = 1.0
REDIS_RETRY_SECONDS = 1.0


class SweepLoop(threading.Thread):
    """Every 0.1 s: queue the revokes of ended grants. Every second: requeue lost revokes, expire pending
    requests. Every JIT_SWEEP_INTERVAL across all workers: one sweep.

    The sweep's turn is a Redis key with the interval as its TTL: whichever live worker sets it
    sweeps, so the interval holds whichever process dies.
    """

    def __init__(self, rt: Runtime) -> None:
        super().__init__(name="jit-sweep", daemon=True)
        self.rt = rt
        self.name_token = uuid.uuid4().hex
        self.stopping = threading.Event()

    def run(self) -> None:
        interval_ms = int(self.rt.settings.jit_sweep_interval * 1000)
        next_due = time.monotonic()
        while not self.stopping.wait(ENDED_CHECK_SECONDS):
            try:
                jobs.enqueue_ended()
                if time.monotonic() < next_due:
                    continue
                next_due = time.monotonic() + DUE_CHECK_SECONDS
                jobs.enqueue_due()
                if self.rt.store.redis.set(SWEEP_KEY, self.name_token, nx=True, px=interval_ms):
                    started = time.monotonic()
                    removed = jobs.sweep()
                    log.info("sweep done", removed=removed, seconds=round(time.monotonic() - started, 3))
            except Exception:
                log.exception("sweep loop iteration failed; retrying next tick")


class CardPoster(threading.Thread):
    """Posts the approval cards of new requests, so that the web process only answers commands."""

    def __init__(self, rt: Runtime) -> None:
        super().__init__(name="jit-cards", daemon=True)
        self.service = AccessService(rt.policy, rt.store, rt.audit, rt.notifier, rt.queue)

    def run(self) -> None:
        while True:
            try:
                request_id = self.service.store.next_to_announce(timeout=1.0)
                if request_id is not None:
                    self.service.announce(request_id)
            except StoreUnavailableError:
                time.sleep(REDIS_RETRY_SECONDS)
            except Exception:
                log.exception("posting an approval card failed; the request expires unanswered if it stays unposted")


def main() -> int:
    configure_logging()
    try:
        settings = load_settings()
        rt = build_runtime(settings)
    except JitError as err:
        print(f"jit-lb worker: {err}", file=sys.stderr)
        return 2
    jobs.use_runtime(rt)
    for spec in specs_of(rt.policy):
        # Made now, not in the first job: creating a boto3 client costs most of a second.
        provider_for(spec, rt.store.redis, rt.policy)
    gc.freeze()  # start-up's objects (boto3's models above all) stay for good: full collections skip them
    SweepLoop(rt).start()
    CardPoster(rt).start()
    return work(rt)


def work(rt: Runtime) -> int:
    """Run RQ's worker until SIGTERM; when it gives up because Redis went away, start it again."""
    while True:
        # SimpleWorker runs jobs in this process: no fork per job, and boto3 clients stay warm between jobs.
        # Queues in order of priority: grants and revokes first, then the Slack posts of their outcomes.
        worker = SimpleWorker([rt.queue, rt.notices], connection=rt.store.redis)
        try:
            worker.work(with_scheduler=True, logging_level=settings_level())
        except (RedisConnectionError, RedisTimeoutError) as err:
            log.warning("Redis unreachable; the worker waits for it", error=str(err))
        if _asked_to_stop(worker):
            return 0
        time.sleep(REDIS_RETRY_SECONDS)
        if _asked_to_stop(worker):
            return 0


def _asked_to_stop(worker: SimpleWorker) -> bool:
    """RQ notes SIGTERM/SIGINT only in its private state; anything else that ends work() is Redis going away."""
    return bool(worker._stop_requested or worker._shutdown_requested_date)


def settings_level() -> str:
    return os.environ.get("JIT_LOG_LEVEL", "INFO").upper()


if __name__ == "__main__":
    sys.exit(main())
