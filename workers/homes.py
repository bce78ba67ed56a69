"""The App Homes' one writer: each home rendered from the store when it is published, and read again after, so that
it ends showing the newest state; a rate-limited views.publish waits out Retry-After without holding up a job."""

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
    """Publishes App Homes on the caller's thread (a notice: a home opened, or a change it shows), each rendered
    from the store when it is sent and read again after it landed, published again when it moved meanwhile, so that
    a publish from an older read landing last is corrected (as the cards' edits are, notices.show_card).

    When Slack rate-limits views.publish, the people to publish wait (coalesced, in the order first asked) and go
    out after Retry-After, from a timer: no job waits for it and no other publish asks Slack meanwhile.
    """

    def __init__(self, rt: Runtime, notifier: Notifier) -> None:
        self.rt = rt
        self.notifier = notifier  # its client does not wait out a 429 (the publisher does, from a timer)
        self._lock = threading.Condition()
        self._waiting: dict[str, None] = {}  # people whose home waits for Slack's rate limit, in the order asked
        self._draining = False  # the waiting are being published, after Retry-After
        self._resume: threading.Timer | None = None  # set while Slack's Retry-After runs

    def publish(self, user: str, open_requests: list[AccessRequest] | None = None) -> None:
        """Publish `user`'s home now, as the store holds it (`open_requests`, when the caller read them just now);
        while Slack rate-limits views.publish, once after the limit however often it is asked meanwhile."""
        with self._lock:
            if self._resume is not None or self._draining:
                self._waiting.setdefault(user)
                return
        self._show(user, open_requests)

    def refresh(self, request: AccessRequest) -> int:
        """Publish again the homes `request` shows in (of those who opened one); how many."""
        users = viewers_of(self.rt, request)
        open_requests = self.rt.store.open_requests() if users else []
        for user in users:
            self.publish(user, open_requests)
        return len(users)

    @property
    def waiting(self) -> int:
        """How many homes wait for Slack's rate limit to end."""
        with self._lock:
            return len(self._waiting)

    def settled(self, timeout: float = 10.0) -> bool:
        """Wait until no home is being published after a rate limit (the waiting may wait for Retry-After);
        False after `timeout`."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._draining, timeout)

    def _show(self, user: str, open_requests: list[AccessRequest] | None = None) -> bool:
        """Publish `user`'s home, and again while it moves under the publish; False when Slack rate-limited it."""
        sent: View | None = None
        for _ in range(HOME_PUBLISHES):
            try:
                view = home_of(self.rt, user, self.rt.store.open_requests() if open_requests is None else open_requests)
            except JitError as err:
                log.error("an App Home could not be read; it goes out at its next change", user=user, error=str(err))
                return True
            open_requests = None  # read again after each publish
            if view == sent:
                return True
            retry_after = self.notifier.publish_home(user, view)
            if retry_after is not None:
                self._later(user, retry_after)
                return False
            sent = view
        return True

    def _later(self, user: str, retry_after: float) -> None:
        """Slack rate-limited views.publish: `user` goes first, and the waiting are published after Retry-After."""
        with self._lock:
            self._waiting = {user: None, **self._waiting}
            if self._resume is not None:
                return
            self._resume = threading.Timer(retry_after, self._drain)
            self._resume.daemon = True
            self._resume.name = "jit-homes-retry"
            self._resume.start()
        log.info("views.publish rate-limited; the homes wait", waiting=self.waiting, retry_after=retry_after)

    def _drain(self) -> None:
        """After Retry-After, on the timer's thread: publish the waiting, oldest first, until none or Slack limits
        again (then a new timer takes over)."""
        with self._lock:
            self._resume = None
            self._draining = True
        while True:
            with self._lock:
                if not self._waiting or self._resume is not None:
                    self._draining = False
                    self._lock.notify_all()
                    return
                user = next(iter(self._waiting))
                del self._waiting[user]
            try:
                self._show(user)
            except Exception:  # the timer's thread has no one to tell: this home goes out at its next change
                log.exception("publishing an App Home that waited failed", user=user)
