"""The App Homes' one writer: each home rendered from the store when it is published, and read again after, so that
it ends showing the newest state; published on a thread of its own, so that no job (no revoke queued behind one)
waits for views.publish, and a rate-limited views.publish waits out Retry-After on a timer."""

from __future__ import annotations

import threading

import structlog

from jit_lb.access.errors import JitError
from jit_lb.access.requests import AccessRequest
from jit_lb.runtime import Runtime
from slack_out.home import home_of, viewers_of
from slack_out.poster import Notifier
from slack_out.views import View

log = structlog.get_logger("jit_lb.worker")

HOME_PUBLISHES = 5  # publishes of one home a call makes at most, while its requests keep changing


class HomePublisher:
    """Publishes App Homes on a thread of its own (a notice: a home opened, or a change it shows), each rendered from
    the store when it is sent and read again after it landed, published again when it moved meanwhile, so that a
    publish from an older read landing last is corrected (as the cards' edits are, notices.show_card).

    A job only hands the people on (coalesced, in the order first asked) and ends: no job, and so no revoke or grant
    queued behind one, waits for views.publish, however slow Slack is or however many homes are opened. When Slack
    rate-limits views.publish, the thread waits out Retry-After on a timer, the people still waiting.
    """

    def __init__(self, rt: Runtime, notifier: Notifier) -> None:
        self.rt = rt
        self.notifier = notifier  # its client does not wait out a 429 (the publisher does, from a timer)
        self._lock = threading.Condition()
        self._waiting: dict[str, None] = {}  # people whose home is to be published, in the order asked
        self._busy = False  # the thread is publishing one
        self._resume: threading.Timer | None = None  # set while Slack's Retry-After runs
        self._thread: threading.Thread | None = None

    def publish(self, user: str) -> None:
        """Publish `user`'s home soon, as the store holds it then; once however often it is asked meanwhile."""
        with self._lock:
            self._waiting.setdefault(user)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="jit-homes", daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def refresh(self, request: AccessRequest) -> int:
        """Publish again the homes `request` shows in (of those who opened one); how many."""
        users = viewers_of(self.rt, request)
        for user in users:
            self.publish(user)
        return len(users)

    @property
    def waiting(self) -> int:
        """How many homes wait to be published."""
        with self._lock:
            return len(self._waiting)

    def settled(self, timeout: float = 10.0) -> bool:
        """Wait until no home is being published or waits to be (but those waiting for Slack's Retry-After);
        False after `timeout`."""
        with self._lock:
            return self._lock.wait_for(
                lambda: not self._busy and (not self._waiting or self._resume is not None), timeout
            )

    def _run(self) -> None:
        """The homes' thread: publish the waiting, oldest first, each as the store holds it; pause on a rate limit."""
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._waiting) and self._resume is None)
                user = next(iter(self._waiting))
                del self._waiting[user]
                self._busy = True
            try:
                self._show(user)
            except Exception:  # the thread has no one to tell: this home goes out at its next change or open
                log.exception("publishing an App Home failed", user=user)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _show(self, user: str) -> None:
        """Publish `user`'s home, and again while it moves under the publish."""
        sent: View | None = None
        for _ in range(HOME_PUBLISHES):
            try:
                view = home_of(self.rt, user, self.rt.store.open_requests())
            except JitError as err:
                log.error("an App Home could not be read; it goes out at its next change", user=user, error=str(err))
                return
            if view == sent:
                return
            retry_after = self.notifier.publish_home(user, view)
            if retry_after is not None:
                self._later(user, retry_after)
                return
            sent = view

    def _later(self, user: str, retry_after: float) -> None:
        """Slack rate-limited views.publish: `user` goes first, and the waiting are published after Retry-After."""
        with self._lock:
            self._waiting = {user: None, **self._waiting}
            if self._resume is None:
                self._resume = threading.Timer(retry_after, self._resumed)
                self._resume.daemon = True
                self._resume.name = "jit-homes-retry"
                self._resume.start()
        log.info("views.publish rate-limited; the homes wait", waiting=self.waiting, retry_after=retry_after)

    def _resumed(self) -> None:
        with self._lock:
            self._resume = None
            self._lock.notify_all()
