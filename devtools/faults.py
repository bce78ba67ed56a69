"""Faults the tests put into a worker from outside the product: `python -m devtools.faults` is the Procfile's worker
with a pause of JIT_FAULT_PAUSE_AFTER_APPLY seconds between a grant's apply at the load balancer and its record, so
that a test can kill the worker or Redis there (tests/system/test_resilience.py, test_redis_gone.py), and, with
JIT_FAULT_NO_SWEEP_LOCK set, without the hold that keeps one sweep at a time, and with JIT_FAULT_SLOW_SWEEP seconds
added to each sweep (so that the tests that say sweeps never overlap can be seen to fail without the hold)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

PAUSE_AFTER_APPLY = "JIT_FAULT_PAUSE_AFTER_APPLY"
NO_SWEEP_LOCK = "JIT_FAULT_NO_SWEEP_LOCK"
SLOW_SWEEP = "JIT_FAULT_SLOW_SWEEP"
FAULTS = (PAUSE_AFTER_APPLY, NO_SWEEP_LOCK, SLOW_SWEEP)


def pause_after_apply(seconds: float) -> None:
    """Every grant job of this process waits `seconds` once its objects are applied and read back."""
    from workers import jobs

    checked = jobs.holds_lease

    def pausing(*args: object, **kwargs: object) -> bool:
        verified = checked(*args, **kwargs)  # type: ignore[arg-type]
        time.sleep(seconds)  # a test kills the worker here
        return verified

    jobs.holds_lease = pausing  # type: ignore[assignment]


@contextlib.contextmanager
def always_alone(_store: object, _name: str, seconds: float = 10.0) -> Iterator[bool]:
    """RequestStore.running without its hold: every caller is told it runs alone."""
    yield True


def without_sweep_lock() -> None:
    """Every sweep of this process runs whether another worker's sweep is running or not."""
    from jit_lb.access.store import RequestStore

    RequestStore.running = always_alone  # type: ignore[assignment]


def slow_sweep(seconds: float) -> None:
    """Every sweep of this process takes `seconds` longer: longer than the turn that starts sweeps, when it is short."""
    from workers import reconcile

    sweep = reconcile.sweep

    def slower() -> int:
        time.sleep(seconds)
        return sweep()

    reconcile.sweep = slower


def main() -> int:
    from workers import __main__ as worker

    if PAUSE_AFTER_APPLY in os.environ:
        pause_after_apply(float(os.environ[PAUSE_AFTER_APPLY]))
    if NO_SWEEP_LOCK in os.environ:
        without_sweep_lock()
    if SLOW_SWEEP in os.environ:
        slow_sweep(float(os.environ[SLOW_SWEEP]))
    return worker.main()


if __name__ == "__main__":
    sys.exit(main())
