"""A loopback stand-in for Slack (Web API, response_url, Socket Mode) that records every call for tests and demos."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from devtools.ports import free_port

TEST_TOKEN = "xoxb-test-token"
APP_ID = "A123456"
# Web API methods that take the app-level token (xapp-…) rather than the bot token.
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
T = TypeVar("T")
Handler = Callable[[dict[str, Any]], dict[str, Any]]
Message = dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One request the stand-in answered: the Web API method (or "response_url"), its fields, and the answer."""

    method: str
    args: dict[str, Any]
    at: float
    response: dict[str, Any] = field(default_factory=dict)


def dm_channel(channel: str) -> str:
    """The DM channel id Slack would answer for a user id; other channel ids unchanged."""
    return f"D0{channel}" if channel[:1] in {"U", "W"} else channel


def decoded(value: Any) -> Any:
    """Form fields such as `blocks` arrive as JSON strings; tests want them as lists and dicts."""
    if isinstance(value, str) and value[:1] in {"[", "{"}:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class SlackStandin:
    """An aiohttp server on 127.0.0.1 in its own thread and event loop, answering like Slack."""

    def __init__(
        self,
        token: str = TEST_TOKEN,
        *,
        strict_token: bool = False,
        port: int | None = None,
        rate_limit_per_channel: float | None = None,
    ) -> None:
        self.token = token
        self.strict_token = strict_token
        self.port = port or free_port()
        self.rate_limit_per_channel = rate_limit_per_channel
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._messages: dict[tuple[str, str], dict[str, Any]] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._faults: dict[str, list[tuple[int, int]]] = {}
        self._last_post: dict[str, float] = {}
        self._last_ts = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._envelopes_sent = 0
        self._handlers: dict[str, Handler] = {
            "apps.connections.open": self._connections_open,
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.getPermalink": self._permalink,
            "conversations.open": self._open,
            "users.info": self._user_info,
            "usergroups.users.list": self._usergroup_users,
        }

    # --- life cycle ---------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def response_url_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/response/"

    @property
    def socket_url(self) -> str:
        """Where Socket Mode clients connect; apps.connections.open adds a ticket, as Slack does."""
        return f"ws://127.0.0.1:{self.port}/socket-mode"

    def response_url(self, name: str) -> str:
        """The response_url to put into a payload; posts to it are recorded under `name`."""
        return self.response_url_base + name

    def start(self) -> SlackStandin:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="slack-standin", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure or not ready.is_set():
            cause = failure[0] if failure else None
            raise RuntimeError(f"the Slack stand-in did not start on port {self.port}") from cause
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> SlackStandin:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{name}", self._response)
        app.router.add_get("/socket-mode", self._socket)
        app.on_shutdown.append(self._close_sockets)
        runner = web.AppRunner(app, access_log=None)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        except OSError as err:
            failure.append(err)
            loop.run_until_complete(runner.cleanup())
            loop.close()
            ready.set()
            return
        self._loop = loop
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    # --- configuration and faults -------------------------------------------------------------

    def set_usergroup(self, group_id: str, users: list[str]) -> None:
        with self._lock:
            self._usergroups[group_id] = list(users)

    def fail_next(self, method: str, times: int = 1, status: int = 429, retry_after: int = 1) -> None:
        """The next `times` calls of `method` answer HTTP `status` (429 with Retry-After, or a 5xx)."""
        with self._lock:
            self._faults.setdefault(method, []).extend([(status, retry_after)] * times)

    def reset(self) -> None:
        """Forget calls, messages and pending faults; usergroups and settings stay."""
        with self._lock:
            self._calls.clear()
            self._messages.clear()
            self._faults.clear()
            self._last_post.clear()

    # --- HTTP ---------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            body = json.loads(await request.text() or "{}")
            args.update(body if isinstance(body, dict) else {})
        elif request.can_read_body:
            args.update({key: value for key, value in (await request.post()).items() if isinstance(value, str)})
        args = {key: decoded(value) for key, value in args.items()}
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else args.pop("token", "")
        args.pop("token", None)
        status, headers, answer = self._answer(method, args, str(token))
        return web.json_response(answer, status=status, headers=headers)

    def _answer(self, method: str, args: dict[str, Any], token: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        status, headers = 200, {}
        with self._lock:
            if not token:
                answer: dict[str, Any] = {"ok": False, "error": "not_authed"}
            elif not self._token_fits(method, token):
                answer = {"ok": False, "error": "invalid_auth"}
            elif self._faults.get(method):
                status, retry_after = self._faults[method].pop(0)
                if status == 429:
                    headers["Retry-After"] = str(retry_after)
                answer = {"ok": False, "error": "ratelimited" if status == 429 else "internal_error"}
            elif method == "chat.postMessage" and self._too_fast(str(args.get("channel", ""))):
                status, headers = 429, {"Retry-After": "1"}
                answer = {"ok": False, "error": "ratelimited"}
            else:
                answer = self._handlers.get(method, self._unknown)(args)
            self._calls.append(Call(method, args, time.time(), answer))
        return status, headers, answer

    async def _response(self, request: web.Request) -> web.Response:
        body = json.loads(await request.text() or "{}")
        args = {"name": request.match_info["name"], **(body if isinstance(body, dict) else {})}
        with self._lock:
            self._calls.append(Call("response_url", args, time.time(), {"ok": True}))
        return web.Response(text="ok")

    def _token_fits(self, method: str, token: str) -> bool:
        if method in APP_TOKEN_METHODS:
            return token.startswith("xapp-")
        return token == self.token or (not self.strict_token and token.startswith("xoxb-"))

    # --- Socket Mode --------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            known = request.query.get("ticket") in self._tickets
        if not known:
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        with self._lock:
            self._sockets.append(socket)
            count = len(self._sockets)
        try:
            await socket.send_json(
                {
                    "type": "hello",
                    "num_connections": count,
                    "debug_info": {"host": "slack-standin", "build_number": 1, "approximate_connection_time": 18060},
                    "connection_info": {"app_id": APP_ID},
                }
            )
            async for message in socket:
                if message.type == WSMsgType.TEXT:
                    self._receive(message.data)
        finally:
            with self._lock:
                self._sockets.remove(socket)
        return socket

    def _receive(self, text: str) -> None:
        """Record what the app sent over the socket; an ack completes the envelope it names."""
        try:
            message = json.loads(text)
        except ValueError:
            message = {"raw": text}
        if not isinstance(message, dict):
            message = {"raw": message}
        with self._lock:
            self._calls.append(
                Call("socket_mode.ack" if "envelope_id" in message else "socket_mode.message", message, time.time())
            )
        acked = self._acks.get(str(message.get("envelope_id")))
        if acked is not None and not acked.done():
            acked.set_result(message)

    async def _deliver(self, envelope: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            sockets = [socket for socket in self._sockets if not socket.closed]
            if not sockets:
                raise AssertionError("no Socket Mode connection is open")
            self._calls.append(Call("socket_mode.envelope", envelope, time.time()))
            self._envelopes_sent += 1
            turn = self._envelopes_sent
        acked = asyncio.get_running_loop().create_future()
        self._acks[envelope["envelope_id"]] = acked
        try:
            # Slack spreads envelopes over an app's open connections.
            await sockets[turn % len(sockets)].send_json(envelope)
            return await acked
        finally:
            del self._acks[envelope["envelope_id"]]

    async def _close_sockets(self, _: web.Application) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for socket in sockets:
            await socket.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    def socket_connected(self) -> bool:
        """Whether an app holds a Socket Mode connection open right now."""
        with self._lock:
            return any(not socket.closed for socket in self._sockets)

    def send_envelope(self, kind: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send `payload` as a Socket Mode envelope of type `kind` and return the app's ack.

        `kind` is "slash_commands" or "interactive"; an ack of a slash command may carry a
        `payload`, the reply shown to the user. No ack within `timeout` raises AssertionError.
        """
        if self._loop is None:
            raise RuntimeError("the Slack stand-in is not running")
        envelope = {
            "envelope_id": str(uuid.uuid4()),
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind == "slash_commands",
        }
        delivery = asyncio.run_coroutine_threadsafe(self._deliver(envelope), self._loop)
        try:
            return delivery.result(timeout)
        except TimeoutError:
            delivery.cancel()
            raise AssertionError(f"no ack within {timeout}s for {kind} envelope {envelope['envelope_id']}") from None

    # --- Web API methods (called with the lock held) -------------------------------------------

    def _too_fast(self, channel: str) -> bool:
        if self.rate_limit_per_channel is None:
            return False
        now, last = time.monotonic(), self._last_post.get(dm_channel(channel))
        return last is not None and now - last < 1.0 / self.rate_limit_per_channel

    def _next_ts(self) -> str:
        # Slack's ts is the posting time in microseconds; bumping keeps it unique under bursts.
        self._last_ts = max(int(time.time() * 1_000_000), self._last_ts + 1)
        return f"{self._last_ts // 1_000_000}.{self._last_ts % 1_000_000:06d}"

    def _unknown(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False, "error": "unknown_method"}

    def _connections_open(self, _: dict[str, Any]) -> dict[str, Any]:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"ok": True, "url": f"{self.socket_url}?ticket={ticket}&app_id={APP_ID}"}

    def _auth_test(self, _: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://example.slack.com/",
            "team": "example",
            "user": "jit-lb",
            "team_id": "T0001",
            "user_id": "U0BOT",
            "bot_id": "B0BOT",
        }

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not any(args.get(key) for key in ("text", "blocks", "attachments")):
            return {"ok": False, "error": "no_text"}
        channel, ts = dm_channel(str(args["channel"])), self._next_ts()
        message: dict[str, Any] = {"type": "message", "ts": ts, "user": "U0BOT", "bot_id": "B0BOT"}
        message.update({key: args[key] for key in ("text", "blocks", "attachments", "thread_ts") if key in args})
        self._messages[(channel, ts)] = message
        self._last_post[channel] = time.monotonic()
        return {"ok": True, "channel": channel, "ts": ts, "message": dict(message)}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = dm_channel(str(args.get("channel", ""))), str(args.get("ts", ""))
        message = self._messages.get((channel, ts))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.update({key: args[key] for key in ("text", "blocks", "attachments") if key in args})
        return {"ok": True, "channel": channel, "ts": ts, "text": message.get("text", ""), "message": dict(message)}

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel") or not args.get("user"):
            return {"ok": False, "error": "channel_not_found" if not args.get("channel") else "user_not_found"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("message_ts", ""))
        link = f"https://example.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        return {"ok": True, "channel": channel, "permalink": link}

    def _open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = [user for user in str(args.get("users", "")).split(",") if user]
        if not users:
            return {"ok": False, "error": "users_list_not_supplied"}
        return {"ok": True, "channel": {"id": dm_channel(users[0])}}

    def _user_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user", ""))
        if not user:
            return {"ok": False, "error": "user_not_found"}
        name = user.lower()
        return {
            "ok": True,
            "user": {
                "id": user,
                "name": name,
                "real_name": name.title(),
                "tz": "UTC",
                "profile": {"display_name": name, "real_name": name.title()},
            },
        }

    def _usergroup_users(self, args: dict[str, Any]) -> dict[str, Any]:
        users = self._usergroups.get(str(args.get("usergroup", "")))
        return {"ok": False, "error": "no_such_subteam"} if users is None else {"ok": True, "users": list(users)}

    # --- queries ------------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [call for call in self._calls if method is None or call.method == method]

    def _sent(self, keep: Callable[[Call], bool], methods: Sequence[str] = ("chat.postMessage",)) -> list[Message]:
        """Accepted calls of `methods` that `keep` selects, as their fields plus the `ts` Slack gave them."""
        return [
            {**call.args, "ts": call.response.get("ts", call.response.get("message_ts"))}
            for call in self.calls()
            if call.method in methods and call.response.get("ok") and keep(call)
        ]

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Messages as posted (fields plus `ts`), to `channel` (a user id and its D-channel are one) or anywhere."""
        return self._sent(lambda call: channel is None or call.response["channel"] == dm_channel(channel))

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The message as it stands now, after any chat.update."""
        with self._lock:
            found = self._messages.get((dm_channel(channel), ts))
            return dict(found) if found else None

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        return [message for message in self.messages(channel) if message.get("thread_ts") == ts]

    def dms(self, user_id: str) -> list[dict[str, Any]]:
        """Messages to the user's DM channel and ephemerals shown to the user, in the order sent."""

        def to_user(call: Call) -> bool:
            return call.response.get("channel") == dm_channel(user_id) or call.args.get("user") == user_id

        return self._sent(to_user, ("chat.postMessage", "chat.postEphemeral"))

    def updates(self, channel: str, ts: str) -> list[dict[str, Any]]:
        return [
            call.args
            for call in self.calls("chat.update")
            if call.response.get("ok") and call.response["channel"] == dm_channel(channel) and call.response["ts"] == ts
        ]

    def responses(self, name: str | None = None) -> list[dict[str, Any]]:
        """Bodies posted to response_url(name), or to any response_url."""
        return [call.args for call in self.calls("response_url") if name is None or call.args["name"] == name]

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Poll `predicate` until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                dump = "\n".join(
                    f"  {call.method} {json.dumps(call.args, default=str)[:300]} -> "
                    f"{json.dumps(call.response, default=str)[:120]}"
                    for call in self.calls()[-30:]
                )
                raise AssertionError(f"not true within {timeout}s; the last Slack calls were:\n{dump or '  (none)'}")
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    """Run the stand-in in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--token", default=TEST_TOKEN)
    options = parser.parse_args(argv)
    with SlackStandin(options.token, port=options.port) as standin:
        print(standin.api_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
