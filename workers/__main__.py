"""`python -m workers`: an RQ worker (with RQ's scheduler) plus the reconcile and outbox loops of workers/loops.py."""

from __future__ import annotations

import faulthandler
import gc
import signal
import sys
import threading
import time

import structlog
from prometheus_client import start_http_server
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import SimpleWorker

from jit_lb.access.errors import JitError
from jit_lb.logs import configure_logging
from jit_lb.runtime import Runtime
from jit_lb.settings import load_settings
from slack_out.process import connect
from workers import context
from workers.loops import REDIS_RETRY_SECONDS, OutboxLoop, ReconcileLoop
from workers.providers.registry import provider_for, specs_of

log = structlog.get_logger("jit_lb.worker")


def main() -> int:
    # `kill -USR2 <pid>` writes every thread's stack to stderr: what a stuck worker is waiting for.
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    # SIGHUP reads the policy again; asked for before start-up is done, it is done once the loop runs.
    reload_asked = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: reload_asked.set())
    try:
        settings = load_settings()
        configure_logging(settings.jit_log_level)
        rt, notifier = connect(settings)
    except JitError as err:
        print(f"jit-lb worker: {err}", file=sys.stderr)
        return 2
    context.install(context.WorkerContext(rt, notifier))
    serve_metrics(rt)  # first: a scrape during the slow start below says the worker is up
    for spec in specs_of(rt.policy):
        # Made now, not in the first job: creating a boto3 client costs most of a second.
        provider_for(spec, rt.store.redis, rt.policy)
    gc.freeze()  # start-up's objects (boto3's models above all) stay for good: full collections skip them
    ReconcileLoop(rt, reload_asked).start()
    OutboxLoop(rt).start()
    return work(rt)


def serve_metrics(rt: Runtime) -> None:
    """GET /metrics on JIT_METRICS_PORT, from a thread of its own; jobs run in this process, so they count here."""
    port = rt.settings.jit_metrics_port
    if rt.metrics is None or port is None:
        return
    start_http_server(port, addr=rt.settings.jit_metrics_host, registry=rt.metrics.registry)
    log.info("metrics served", port=port)


def work(rt: Runtime) -> int:
    """Run RQ's worker until SIGTERM; when it gives up because Redis went away, start it again."""
    while True:
        # SimpleWorker runs jobs in this process: no fork per job, and boto3 clients stay warm between jobs.
        # Queues in order of priority: grants and revokes first, then the Slack posts of their outcomes.
        worker = SimpleWorker([rt.queue, rt.notices], connection=rt.store.redis)
        try:
            worker.work(with_scheduler=True, logging_level=rt.settings.jit_log_level)
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


if __name__ == "__main__":
    sys.exit(main())
