"""Is a person on call now? PagerDuty's REST API, asked live with a short timeout, for auto-approval.

Plain HTTP through the standard library rather than PagerDuty's `pagerduty` package: that client
refuses any base URL but https:// (a loopback stand-in, an egress proxy) and sleeps through 429s and
network errors with growing back-offs, where a request must be judged within a second or two and a
PagerDuty that does not answer at once simply means "ask a human".
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jit_lb.access.errors import PagerDutyConfigError, PagerDutyError

ACCEPT = "application/vnd.pagerduty+json;version=2"
PAGE = 100  # entries a page; PagerDuty's classic pagination caps `limit` at 100
MAX_PAGES = 5  # a person is on few schedules: more pages than this is not an answer worth waiting for


@dataclass(frozen=True)
class Shift:
    """The on-call entry that qualified a person: which schedule, at which escalation level, from when to when."""

    schedule: str
    escalation_level: int
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class OnCall:
    """PagerDuty's answer: the qualifying shift, or why there is none (a sentence for the card)."""

    shift: Shift | None
    why_not: str = ""


def pagerduty_for(token: str | None, base_url: str, needed_by: list[str]) -> PagerDuty | None:
    """The client targets with `auto_approve.on_call` need; PagerDutyConfigError when they need one and have none."""
    if not needed_by:
        return None
    if not token:
        raise PagerDutyConfigError(
            f"PAGERDUTY_TOKEN: is required because these targets auto-approve from on-call: {', '.join(needed_by)}"
        )
    return PagerDuty(token, base_url)


class PagerDuty:
    """A read-only REST API v2 client: find a user by e-mail, list their on-calls at an instant.

    Each call waits at most `timeout` seconds, and one check (the user, then every page of on-calls)
    at most `budget` in all: a card must not wait on a PagerDuty that answers slowly page after page.
    """

    def __init__(self, token: str, base_url: str, timeout: float = 1.5, budget: float = 3.0) -> None:
        self.token = token
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.budget = budget

    def on_call(self, email: str, schedules: list[str], max_level: int, at: datetime) -> OnCall:
        """Whether the person with `email` is on call at `at` in one of `schedules`, at `max_level` or nearer."""
        deadline = time.monotonic() + self.budget
        try:
            user_id = self._user_id(email, deadline)
            if user_id is None:
                return OnCall(None, f"PagerDuty knows no user with the e-mail {email}")
            entries = self._oncalls(user_id, schedules, at, deadline)
        except PagerDutyError as err:
            return OnCall(None, f"PagerDuty could not be asked ({err})")
        return judge(entries, user_id, schedules, max_level)

    def _user_id(self, email: str, deadline: float) -> str | None:
        for user in self._list("users", {"query": email}, deadline):
            if str(user.get("email", "")).lower() == email.lower():
                return str(user["id"])
        return None

    def _oncalls(self, user_id: str, schedules: list[str], at: datetime, deadline: float) -> list[dict[str, Any]]:
        instant = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        params: list[tuple[str, str]] = [("user_ids[]", user_id), ("since", instant), ("until", instant)]
        params += [("schedule_ids[]", schedule) for schedule in schedules]
        return self._list("oncalls", params, deadline)

    def _list(
        self, resource: str, params: dict[str, str] | list[tuple[str, str]], deadline: float
    ) -> list[dict[str, Any]]:
        """Every page of `GET /<resource>` (classic pagination: limit, offset, more)."""
        found: list[dict[str, Any]] = []
        base = list(params.items()) if isinstance(params, dict) else list(params)
        for page in range(MAX_PAGES):
            query = urllib.parse.urlencode([*base, ("limit", str(PAGE)), ("offset", str(page * PAGE))])
            body = self._get(f"/{resource}?{query}", deadline)
            items = body.get(resource)
            if not isinstance(items, list):
                raise PagerDutyError(f"its answer to /{resource} had no list of {resource}")
            found += [item for item in items if isinstance(item, dict)]
            if not body.get("more"):
                return found
        raise PagerDutyError(f"/{resource} had more than {MAX_PAGES} pages")

    def _get(self, path: str, deadline: float) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PagerDutyError("no answer within the timeout")
        request = urllib.request.Request(  # noqa: S310 - the scheme is the operator's PAGERDUTY_API_URL, checked at start
            self.base_url + path,
            headers={"Authorization": f"Token token={self.token}", "Accept": ACCEPT},
        )
        try:
            with urllib.request.urlopen(request, timeout=min(self.timeout, left)) as response:  # noqa: S310 - as above
                body = json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise PagerDutyError(f"HTTP {err.code}{_message(err)}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise PagerDutyError(
                "no answer within the timeout" if "timed out" in str(reason) else str(reason)
            ) from None
        except ValueError:
            raise PagerDutyError("its answer was not JSON") from None
        if not isinstance(body, dict):
            raise PagerDutyError("its answer was not a JSON object")
        return body


def _message(err: urllib.error.HTTPError) -> str:
    """PagerDuty's own words for a refusal (`{"error": {"message": …}}`), when it gave any."""
    try:
        message = json.loads(err.read())["error"]["message"]
    except (ValueError, KeyError, TypeError, OSError):
        return ""
    return f": {str(message)[:100]}"


def judge(entries: list[dict[str, Any]], user_id: str, schedules: list[str], max_level: int) -> OnCall:
    """The nearest qualifying entry of `user_id` among PagerDuty's on-calls: one of `schedules`, level `max_level`
    or nearer. Entries of anyone else never count, whatever filter PagerDuty applied (or failed to)."""
    levels: list[int] = []
    best: Shift | None = None
    for entry in entries:
        schedule = (entry.get("schedule") or {}).get("id")
        level = entry.get("escalation_level")
        someone_else = (entry.get("user") or {}).get("id") != user_id
        if someone_else or schedule not in schedules or not isinstance(level, int):
            continue
        levels.append(level)
        if level <= max_level and (best is None or level < best.escalation_level):
            best = Shift(schedule, level, _when(entry.get("start")), _when(entry.get("end")))
    if best is not None:
        return OnCall(best)
    if levels:
        return OnCall(None, f"on call at escalation level {min(levels)}, and only level {max_level} or nearer counts")
    return OnCall(None, "not on call now in " + ", ".join(schedules))


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
