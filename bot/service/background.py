"""Work a listener starts after its answer: the app runs listeners before it responds, so they must not wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import structlog

from jit_lb.access.errors import StoreUnavailableError

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


class _Undoer:
    """One thread that keeps trying to undo writes whose answer was lost (each `undo` raises StoreUnavailableError
    while Redis is out of reach), every UNDO_EVERY seconds, each until done or its deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Callable[[], object], float]] = []
        self._thread: threading.Thread | None = None

    def add(self, what: str, undo: Callable[[], object], seconds: float) -> None:
        with self._lock:
            self._pending.append((what, undo, time.monotonic() + seconds))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="jit-undo", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                batch, self._pending = self._pending, []
            kept = []
            for what, undo, deadline in batch:
                try:
                    log.info("a write whose answer was lost is undone", what=what, result=undo())
                except StoreUnavailableError:
                    if time.monotonic() < deadline:
                        kept.append((what, undo, deadline))
                    else:
                        log.error("a write whose answer was lost could not be undone in time", what=what)
                except Exception:
                    log.exception("undoing a write whose answer was lost failed", what=what)
            with self._lock:
                self._pending = kept + self._pending
            time.sleep(UNDO_EVERY)


UNDO_EVERY = 0.5
_UNDOER = _Undoer()


def undo_later(what: str, undo: Callable[[], object], seconds: float) -> None:
    """Call `undo` on a thread of its own until it no longer raises StoreUnavailableError, for at most `seconds`."""
    _UNDOER.add(what, undo, seconds)
