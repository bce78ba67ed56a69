"""The web's App Home publishes: on a thread of their own, one a person however often they open it, never waiting
on Slack's rate limit, so that no decision, revoke or DM waits behind them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import structlog

from jit_lb.access.errors import JitError
from jit_lb.runtime import Runtime
from slack_out.home import home_of
from slack_out.poster import Notifier

log = structlog.get_logger("jit_lb.web")


class HomePublisher:
    """Publishes App Homes in the order asked, each person's once however many times it was asked meanwhile.

    Each publish renders the home as the store holds it when it is sent. When Slack rate-limits views.publish,
    the people still to publish wait (coalesced) and the publishing resumes after Retry-After, from a timer: no
    thread waits for it, and the web's other work (decisions, revokes, DMs) runs on threads of its own.
    """

    def __init__(self, rt: Runtime, notifier: Notifier) -> None:
        self.rt = rt
        self.notifier = notifier
        self._lock = threading.Condition()
        self._waiting: dict[str, None] = {}  # people whose home is to be published, in the order first asked
        self._draining = False
        self._resume: threading.Timer | None = None  # set while Slack's Retry-After runs
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jit-homes")

    def run(self, work: Callable[..., Any], *args: Any) -> None:
        """Run `work(*args)` on the homes' thread (what an app_home_opened asks: its event id, then the publish)."""
        self._thread.submit(work, *args).add_done_callback(_log_failure)

    def publish(self, user: str) -> None:
        """Publish `user`'s home soon; asked again before it went out, it goes out once."""
        with self._lock:
            if user in self._waiting:
                return
            self._waiting[user] = None
            if self._draining or self._resume is not None:
                return
            self._draining = True
        self.run(self._drain)

    @property
    def waiting(self) -> int:
        """How many homes are still to be published."""
        with self._lock:
            return len(self._waiting)

    def settled(self, timeout: float = 10.0) -> bool:
        """Wait until every home asked for has gone out, or waits for Slack's Retry-After; False after `timeout`."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._draining, timeout)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._waiting:
                    self._draining = False
                    self._lock.notify_all()
                    return
                user = next(iter(self._waiting))
                del self._waiting[user]
            try:
                view = home_of(self.rt, user, self.rt.store.open_requests())
            except JitError as err:
                log.error(
                    "an App Home could not be read; it is published at its next change", user=user, error=str(err)
                )
                continue
            retry_after = self.notifier.publish_home(user, view)
            if retry_after is not None:
                self._later(user, retry_after)
                return

    def _later(self, user: str, retry_after: float) -> None:
        """Slack rate-limited views.publish: `user` goes first again, and the publishing resumes after Retry-After."""
        with self._lock:
            self._waiting = {user: None, **self._waiting}
            self._draining = False
            self._lock.notify_all()
            self._resume = threading.Timer(retry_after, self._resumed)
            self._resume.daemon = True
            self._resume.name = "jit-homes-retry"
            self._resume.start()
        log.info("views.publish rate-limited; the homes wait", waiting=self.waiting, retry_after=retry_after)

    def _resumed(self) -> None:
        with self._lock:
            self._resume = None
            if self._draining or not self._waiting:
                return
            self._draining = True
        self.run(self._drain)


def _log_failure(done: Future[Any]) -> None:
    error = done.exception()
    if error is not None:
        log.error("App Home work failed", error=repr(error), exc_info=error)
