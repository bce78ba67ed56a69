"""A loopback stand-in for PagerDuty's REST API v2 (users and on-calls), speaking its real shapes and refusals."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from devtools.loopback import LoopbackServer, serve_standin

TEST_TOKEN = "pd-test-token"
MAX_LIMIT = 100  # PagerDuty caps `limit` at 100 for classic pagination
DEFAULT_LIMIT = 25


@dataclass(frozen=True)
class Shift:
    """One on-call entry as PagerDuty computes it: a user at an escalation level of a policy, through a schedule."""

    user_id: str
    schedule_id: str | None
    escalation_level: int
    start: datetime | None
    end: datetime | None
    escalation_policy_id: str = "PEP0001"

    def covers(self, since: datetime, until: datetime) -> bool:
        starts = self.start is None or self.start <= until
        ends = self.end is None or self.end > since
        return starts and ends


@dataclass(frozen=True)
class Call:
    """One request the stand-in answered: the path, its query (repeated keys kept) and the HTTP status."""

    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    status: int
    at: float = field(default_factory=time.monotonic)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _error(status: int, message: str, code: int, errors: list[str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": {"message": message, "code": code}}
    if errors:
        body["error"]["errors"] = errors
    return web.json_response(body, status=status)


class PagerDutyStandin(LoopbackServer):
    """Serves `GET /users` and `GET /oncalls` on 127.0.0.1 from people and shifts a test sets up.

    Like PagerDuty it wants `Authorization: Token token=<key>` (401 otherwise), pages with
    `limit`/`offset`/`more`/`total`, takes repeated `user_ids[]`/`schedule_ids[]`, and answers the
    on-calls covering `since`..`until` (now when both are left out). Faults: `fail_next` answers an
    HTTP status (429 with Retry-After, or a 5xx), `delay` holds every answer, `stop` makes it unreachable.
    """

    name = "PagerDuty stand-in"

    def __init__(self, token: str = TEST_TOKEN, *, port: int | None = None) -> None:
        self.token = token
        super().__init__(port)
        self.delay = 0.0
        self.while_asked: Callable[[], object] | None = None  # run as each call arrives (a test's race, made certain)
        self._lock = threading.Lock()
        self._users: dict[str, dict[str, Any]] = {}
        self._shifts: list[Shift] = []
        self._faults: list[int] = []
        self._calls: list[Call] = []

    # --- life cycle ---------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/users", self._list_users)
        app.router.add_get("/oncalls", self._list_oncalls)

    # --- what PagerDuty knows -----------------------------------------------------------------

    def add_user(self, user_id: str, email: str, name: str = "") -> None:
        with self._lock:
            self._users[user_id] = {
                "id": user_id,
                "type": "user",
                "summary": name or email,
                "name": name or email,
                "email": email,
                "self": f"{self.api_url}/users/{user_id}",
                "html_url": f"https://example.pagerduty.com/users/{user_id}",
            }

    def put_on_call(
        self,
        user_id: str,
        schedule_id: str | None,
        *,
        level: int = 1,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Shift:
        shift = Shift(user_id, schedule_id, level, start, end)
        with self._lock:
            self._shifts.append(shift)
        return shift

    def reset(self) -> None:
        """Forget shifts, pending faults and the delay; people stay."""
        with self._lock:
            self._shifts.clear()
            self._faults.clear()
            self.delay = 0.0
            self.while_asked = None

    def fail_next(self, status: int = 500, times: int = 1) -> None:
        """The next `times` requests answer HTTP `status` (429 carries Retry-After, as PagerDuty's does)."""
        with self._lock:
            self._faults.extend([status] * times)

    def calls(self, path: str | None = None) -> list[Call]:
        with self._lock:
            return [call for call in self._calls if path is None or call.path == path]

    # --- the API ------------------------------------------------------------------------------

    async def _gate(self, request: web.Request) -> web.Response | None:
        """Delay, faults and authentication, in PagerDuty's order; None when the request may go on."""
        if self.while_asked is not None:
            self.while_asked()
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        if fault == 429:
            response = _error(429, "Rate Limit Exceeded", 2020)
            response.headers["Retry-After"] = "1"
            return response
        if fault is not None:
            return _error(fault, "Internal Server Error", 2000)
        if request.headers.get("Authorization", "") != f"Token token={self.token}":
            return _error(401, "Unauthorized", 2006)
        return None

    def _record(self, request: web.Request, status: int) -> None:
        with self._lock:
            self._calls.append(Call(request.path, list(request.query.items()), dict(request.headers), status))

    @staticmethod
    def _page(request: web.Request, name: str, items: list[dict[str, Any]]) -> web.Response:
        try:
            limit = min(MAX_LIMIT, int(request.query.get("limit", DEFAULT_LIMIT)))
            offset = int(request.query.get("offset", 0))
        except ValueError:
            return _error(400, "Invalid Input Provided", 2001, ["Limit and offset must be integers."])
        if limit < 1 or offset < 0:
            return _error(400, "Invalid Input Provided", 2001, ["Limit must be positive, offset not negative."])
        total = len(items) if request.query.get("total") == "true" else None
        page = items[offset : offset + limit]
        more = offset + limit < len(items)
        return web.json_response({name: page, "limit": limit, "offset": offset, "more": more, "total": total})

    async def _list_users(self, request: web.Request) -> web.Response:
        refused = await self._gate(request)
        if refused is not None:
            self._record(request, refused.status)
            return refused
        query = request.query.get("query", "").lower()
        with self._lock:
            users = [
                user
                for user in self._users.values()
                if not query or query in user["email"].lower() or query in user["name"].lower()
            ]
        self._record(request, 200)
        return self._page(request, "users", users)

    async def _list_oncalls(self, request: web.Request) -> web.Response:
        refused = await self._gate(request)
        if refused is not None:
            self._record(request, refused.status)
            return refused
        now = datetime.now(UTC)
        try:
            since = _parse_time(request.query["since"]) if "since" in request.query else now
            until = _parse_time(request.query["until"]) if "until" in request.query else now
        except ValueError:
            self._record(request, 400)
            return _error(400, "Invalid 'since' or 'until' parameter values", 2004)
        if until < since:
            self._record(request, 400)
            return _error(400, "Invalid Query Date Range", 2005)
        user_ids = set(request.query.getall("user_ids[]", []))
        schedule_ids = set(request.query.getall("schedule_ids[]", []))
        with self._lock:
            shifts = [
                shift
                for shift in self._shifts
                if shift.covers(since, until)
                and (not user_ids or shift.user_id in user_ids)
                and (not schedule_ids or shift.schedule_id in schedule_ids)
            ]
            oncalls = [self._oncall(shift) for shift in shifts]
        self._record(request, 200)
        return self._page(request, "oncalls", oncalls)

    def _oncall(self, shift: Shift) -> dict[str, Any]:
        user = self._users.get(shift.user_id, {"summary": shift.user_id})
        schedule = None
        if shift.schedule_id is not None:
            schedule = {
                "id": shift.schedule_id,
                "type": "schedule_reference",
                "summary": f"Schedule {shift.schedule_id}",
                "self": f"{self.api_url}/schedules/{shift.schedule_id}",
                "html_url": f"https://example.pagerduty.com/schedules/{shift.schedule_id}",
            }
        return {
            "escalation_policy": {
                "id": shift.escalation_policy_id,
                "type": "escalation_policy_reference",
                "summary": "Escalation policy",
                "self": f"{self.api_url}/escalation_policies/{shift.escalation_policy_id}",
                "html_url": f"https://example.pagerduty.com/escalation_policies/{shift.escalation_policy_id}",
            },
            "escalation_level": shift.escalation_level,
            "schedule": schedule,
            "user": {
                "id": shift.user_id,
                "type": "user_reference",
                "summary": user["summary"],
                "self": f"{self.api_url}/users/{shift.user_id}",
                "html_url": f"https://example.pagerduty.com/users/{shift.user_id}",
            },
            "start": _iso(shift.start),
            "end": _iso(shift.end),
        }


def main(argv: list[str] | None = None) -> None:
    """Run the stand-in in the foreground until interrupted."""
    serve_standin(PagerDutyStandin, __doc__ or "", TEST_TOKEN, argv)


if __name__ == "__main__":
    main()
