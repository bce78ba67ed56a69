"""The Slack app: build_app(settings, ...) and the `web` process (HTTP or Socket Mode, plus /healthz)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.http import MAX_BODY, slack_events_handler
from bot.listeners import actions, commands, views
from bot.service.commands import CommandService
from bot.service.common import defer_to_workers
from bot.service.decisions import DecisionService
from bot.service.forms import FormService
from bot.service.mfa import MfaService
from jit_lb.access.connections import WEB
from jit_lb.metrics import Metrics
from jit_lb.runtime import Runtime
from jit_lb.settings import Settings
from slack_out.poster import Notifier
from slack_out.process import connect

log = structlog.get_logger("jit_lb.web")


def build_app(settings: Settings, runtime: Runtime, notifier: Notifier) -> AsyncApp:
    """The Bolt app with every listener wired; no I/O happens until a request arrives."""
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    app = AsyncApp(
        client=AsyncWebClient(token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url),
        signing_secret=secret,
        # bot/http.py checks every HTTP request's signature before Bolt sees it; Socket Mode has none to check.
        request_verification_enabled=False,
        # Listeners run before the answer is sent (no 10 ms polling for ack); they hand slow work to threads.
        process_before_response=True,
        logger=logging.getLogger("jit_lb.bolt"),
    )
    mfa = MfaService(runtime, notifier)
    command_service = CommandService(runtime, mfa)
    decisions = DecisionService(runtime, notifier, mfa)
    forms = FormService(runtime, notifier, command_service, decisions, mfa)
    commands.register(app, command_service)
    actions.register(app, decisions, forms)
    views.register(app, decisions, forms)
    return app


HEALTH_FRESH = 1.0  # seconds a write probe's answer serves /healthz: Redis sees at most about one write a second


def healthz_handler(
    runtime: Runtime, clock: Callable[[], float] = time.monotonic, fresh: float = HEALTH_FRESH
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """`{"ok": true}` 200 while Redis takes a write, `{"ok": false}` 503 when not (out of reach, or answering but
    refusing writes: out of memory, a replica, a failed save): why is logged here, never told.

    /healthz answers anyone who reaches PORT, so a flood of hits must not become a flood of writes: hits that arrive
    while a probe is in flight share it, and its answer stands for `fresh` seconds after it came back; meanwhile hits
    only PING (no write; hits that arrive while a PING is in flight share it), so that a Redis killed since is 503 at
    once.
    """
    answered: list[tuple[float, bool]] = []  # when the last probe came back, and what it said

    async def probe() -> bool:
        try:
            ok = await asyncio.wait_for(asyncio.to_thread(runtime.store.takes_writes), timeout=3)
        except Exception as err:  # whatever stops the write (refused, timed out, auth, OOM, READONLY) means "not ok"
            log.warning("health check failed: redis unreachable or refusing writes", error=repr(err))
            ok = False
        else:
            if not ok:
                log.warning("health check failed: redis did not take the write")
        answered[:] = [(clock(), ok)]
        return ok

    async def answers() -> bool:
        try:
            return await asyncio.wait_for(asyncio.to_thread(runtime.store.answers), timeout=3)
        except Exception as err:  # out of reach since the last write probe: not ok at once, not a second later
            log.warning("health check failed: redis unreachable", error=repr(err))
            return False

    write_probe, ping = _shared(probe), _shared(answers)

    async def handle_healthz(_: web.Request) -> web.Response:
        if answered and clock() - answered[0][0] < fresh:
            # The write probe's answer stands, but a Redis gone since is told at once: a PING, which writes nothing.
            ok = answered[0][1] and await ping()
        else:
            ok = await write_probe()
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    return handle_healthz


def _shared(check: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
    """`check` with one call in flight at a time, its answer given to every caller that asked meanwhile: a flood of
    hits costs Redis one round trip and the web one thread at a time, not one each. A caller that hangs up cancels
    only its own wait."""
    flight: list[asyncio.Future[bool]] = []

    async def ask() -> bool:
        if not flight:
            task = asyncio.ensure_future(check())
            task.add_done_callback(flight.remove)
            flight.append(task)
        return await asyncio.shield(flight[0])

    return ask


def web_application(settings: Settings, runtime: Runtime, notifier: Notifier) -> tuple[AsyncApp, web.Application]:
    app = build_app(settings, runtime, notifier)
    server = web.Application(client_max_size=MAX_BODY)
    if not settings.socket_mode:
        assert settings.slack_signing_secret is not None
        handler = slack_events_handler(
            app, settings.slack_signing_secret.get_secret_value(), runtime.store.first_signed_async
        )
        server.router.add_post("/slack/events", handler)
    server.router.add_get("/healthz", healthz_handler(runtime))
    if runtime.metrics is not None:
        server.router.add_get("/metrics", metrics_handler(runtime.metrics))
    return app, server


def metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET /metrics: Prometheus' text format, rendered off the event loop since a scrape reads Redis.

    /metrics answers anyone who reaches PORT (it sits beside /slack/events), so a flood of scrapes must hold up
    nothing the web does for people: the rendering runs on a thread of its own, never the default executor's
    (commands, clicks and /healthz use it), and scrapes that arrive while one renders share its answer.
    """
    renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jit-metrics")
    rendering: list[asyncio.Future[bytes]] = []  # the rendering in flight, if any

    def finished(done: asyncio.Future[bytes]) -> None:
        if done in rendering:
            rendering.remove(done)

    async def handle_metrics(_: web.Request) -> web.Response:
        if not rendering:
            future = asyncio.get_running_loop().run_in_executor(renderer, generate_latest, metrics.registry)
            future.add_done_callback(finished)
            rendering.append(future)
        body = await asyncio.shield(rendering[0])
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle_metrics


def audit_checkpoints(runtime: Runtime, notifier: Notifier) -> Callable[[web.Application], AsyncIterator[None]]:
    """The web's audit chain: begun at start, a checkpoint every 5 minutes and one at stop, each posted to Slack."""

    async def checkpoints(_: web.Application) -> AsyncIterator[None]:
        runtime.audit.start_chain("web", runtime.settings.jit_audit_key, witness=notifier.post_checkpoint)
        every = asyncio.create_task(runtime.audit.keep_checkpoints())
        yield
        every.cancel()
        await runtime.audit.checkpoint_async("stop", background=False)

    return checkpoints


def serve(settings: Settings) -> None:
    """Run the `web` process until SIGTERM or SIGINT; SIGHUP reads the policy file again."""
    # No thread of the web waits on Slack's rate limit: a call Slack refuses for it goes to a worker (defer).
    runtime, notifier = connect(settings, WEB, wait_on_rate_limits=False)
    notifier.defer = defer_to_workers(runtime)
    app, server = web_application(settings, runtime, notifier)

    async def reload_on_sighup(_: web.Application) -> None:
        loop = asyncio.get_running_loop()
        # Read off the event loop: a slow disk must not hold up Slack's answers.
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, runtime.reload_policy))

    server.on_startup.append(reload_on_sighup)
    server.cleanup_ctx.append(audit_checkpoints(runtime, notifier))
    if settings.socket_mode:
        from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

        assert settings.slack_app_token is not None
        app_token = settings.slack_app_token.get_secret_value()

        async def socket_mode(_: web.Application) -> AsyncIterator[None]:
            # Built here, not above: the handler opens an aiohttp session and a task, so it needs the running loop.
            handler = AsyncSocketModeHandler(app, app_token)
            # Connect in the background: /healthz answers from the start, even while Slack is out of reach.
            connecting = asyncio.create_task(handler.connect_async())  # type: ignore[no-untyped-call]
            yield
            connecting.cancel()
            await handler.close_async()  # type: ignore[no-untyped-call]

        server.cleanup_ctx.append(socket_mode)
    log.info("jit-lb web starting", port=settings.port, socket_mode=settings.socket_mode)
    # What start-up made (Bolt, slack_sdk, pydantic models, the policy) lives as long as the process: moved out
    # of the collector's sight, a full collection under load takes ~1 ms instead of ~40 ms that every answer waits.
    gc.freeze()
    # No access log: bot/http.py logs each refusal, and the audit log records each command and click.
    web.run_app(server, host="0.0.0.0", port=settings.port, print=None, access_log=None)  # noqa: S104 - web serves on all interfaces (docs/deployment.md)
