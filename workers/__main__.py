"""`python -m workers`: an RQ worker (with RQ's scheduler) plus the reconcile and outbox loops of workers/loops.py."""

from __future__ import annotations

import faulthandler
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from types import FrameType

import structlog
from prometheus_client import start_http_server
from rq import SimpleWorker
from rq.exceptions import StopRequested

from jit_lb.access import connections
from jit_lb.access.errors import JitError
from jit_lb.logs import configure_logging
from jit_lb.runtime import Runtime
from jit_lb.settings import load_settings
from slack_out.process import connect
from workers import context
from workers.loops import REDIS_GONE, REDIS_RETRY_SECONDS, OutboxLoop, ReconcileLoop
from workers.outage import Outage
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
    loop = ReconcileLoop(rt, reload_asked)
    loop.start()
    OutboxLoop(rt).start()
    return work(rt, Stop(rt, loop.outage))


def serve_metrics(rt: Runtime) -> None:
    """GET /metrics on JIT_METRICS_PORT, from a thread of its own; jobs run in this process, so they count here."""
    port = rt.settings.jit_metrics_port
    if rt.metrics is None or port is None:
        return
    start_http_server(port, addr=rt.settings.jit_metrics_host, registry=rt.metrics.registry)
    log.info("metrics served", port=port)


STOP_GRACE_SECONDS = 2.0  # asked to stop while Redis is unreachable: how long RQ's own shutdown is given first


class Stop:
    """SIGTERM or SIGINT, whether RQ's worker runs or not. RQ's warm shutdown finishes the job in hand and tells
    Redis; with Redis frozen or cut off each of those calls hangs, so a worker asked to stop while Redis is
    unreachable stops without it, as a killed worker would (the sweep and the lost-job checks take up its job)."""

    def __init__(self, rt: Runtime, outage: Outage) -> None:
        self.rt = rt
        self.outage = outage
        self.asked = threading.Event()

    def ask(self, *_: object) -> None:
        if not self.asked.is_set():
            self.asked.set()
            threading.Thread(target=self._without_redis, name="jit-stop", daemon=True).start()

    def install(self) -> None:
        """Our handlers, between two runs of RQ's worker (RQ puts its own in place while it runs)."""
        signal.signal(signal.SIGTERM, self.ask)
        signal.signal(signal.SIGINT, self.ask)

    def _without_redis(self) -> None:
        """After the grace, stop at once whenever Redis is unreachable; while it answers, RQ's shutdown runs."""
        time.sleep(STOP_GRACE_SECONDS)
        while not self.outage.active:
            time.sleep(STOP_GRACE_SECONDS / 10)
        log.warning("asked to stop while Redis is unreachable: stopping without waiting for it")
        for child in multiprocessing.active_children():  # RQ's scheduler, which waits for Redis too
            child.kill()
        self.rt.audit.checkpoint("stop", background=False)  # what atexit does on an ordinary stop
        sys.stderr.flush()
        os._exit(0)


class Worker(SimpleWorker):
    """RQ's SimpleWorker, whose stop signals also reach Stop (and a stop asked before it ran is honoured)."""

    stop: Stop

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()  # type: ignore[no-untyped-call]
        if self.stop.asked.is_set():
            self._stop_requested = True  # its loop checks this before each dequeue

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop.ask()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop.ask()
        super().request_force_stop(signum, frame)


def work(rt: Runtime, stop: Stop) -> int:
    """Run RQ's worker until SIGTERM; when it gives up because Redis went away, start it again once Redis answers.

    RQ gets a Redis client of its own: it raises its client's read timeout above its 405 s blocking dequeue, and
    the store's client, which the loops and jobs use, must keep its few seconds.
    """
    Worker.stop = stop
    queue_client = connections.connect(rt.settings.redis)
    while not stop.asked.is_set():
        stop.install()
        try:
            # SimpleWorker runs jobs in this process: no fork per job, and boto3 clients stay warm between jobs.
            # Queues in order of priority: grants and revokes first, then the Slack posts of their outcomes.
            # Made inside the try: RQ's worker asks Redis as it is made (CLIENT SETNAME).
            worker = Worker([rt.queue, rt.notices], connection=queue_client)
            worker.work(with_scheduler=True, logging_level=rt.settings.jit_log_level)
        except REDIS_GONE as err:
            log.warning("Redis unreachable; the worker waits for it", error=str(err))
        except StopRequested:
            break  # a signal that reached the handler of an RQ worker that had already returned
        stop.install()
        stop.asked.wait(REDIS_RETRY_SECONDS)  # RQ's worker returns on SIGTERM (asked) or when Redis went away
    return 0


if __name__ == "__main__":
    sys.exit(main())
