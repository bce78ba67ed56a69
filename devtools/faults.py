"""Faults the system tests put into a worker from outside the product: `python -m devtools.faults` is the Procfile's
worker with a pause of JIT_FAULT_PAUSE_AFTER_APPLY seconds between a grant's apply at the load balancer and its
record, so that a test can kill the worker there (tests/system/test_resilience.py)."""

from __future__ import annotations

import os
import sys
import time

PAUSE_AFTER_APPLY = "JIT_FAULT_PAUSE_AFTER_APPLY"


def pause_after_apply(seconds: float) -> None:
    """Every grant job of this process waits `seconds` once its objects are applied and read back."""
    from workers import jobs

    checked = jobs.holds_lease

    def pausing(*args: object, **kwargs: object) -> bool:
        verified = checked(*args, **kwargs)  # type: ignore[arg-type]
        time.sleep(seconds)  # a test kills the worker here
        return verified

    jobs.holds_lease = pausing  # type: ignore[assignment]


def main() -> int:
    from workers import __main__ as worker

    pause_after_apply(float(os.environ.get(PAUSE_AFTER_APPLY, "0")))
    return worker.main()


if __name__ == "__main__":
    sys.exit(main())
