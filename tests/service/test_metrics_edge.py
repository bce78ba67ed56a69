"""GET /metrics on the web's public port (it must sit beside /slack/events) never holds up what the web does for
people: a flood of scrapes shares one rendering, on a thread of its own (a security review's finding)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from bot.app import healthz_handler, metrics_handler
from tests.service.world import World

SCRAPES = 40  # more than the event loop's default executor has threads (at most 32)


class HeldScrape(Collector):
    """A collector whose reading waits until released, as a slow Redis would keep a scrape waiting."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.reads = 0

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        self.reads += 1
        self.released.wait(20)
        return []


async def test_a_flood_of_scrapes_holds_up_nothing_else(world: World) -> None:
    """Forty scrapes arrive while one is slow: the web still answers /healthz (its Redis ping runs on the default
    executor, as the commands' and clicks' work does), and the forty share one reading."""
    assert world.rt.metrics is not None
    held = HeldScrape()
    world.rt.metrics.registry.register(held)
    app = web.Application()
    app.router.add_get("/healthz", healthz_handler(world.rt))
    app.router.add_get("/metrics", metrics_handler(world.rt.metrics))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session:
            scrapes = [asyncio.create_task(session.get(server.make_url("/metrics"))) for _ in range(SCRAPES)]
            for _ in range(2000):  # until the first scrape is reading (20 s at most)
                if held.reads:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # the rest of the scrapes are in
            async with session.get(server.make_url("/healthz")) as health:
                answer = (health.status, await health.json())
            held.released.set()
            statuses = [response.status for response in await asyncio.gather(*scrapes)]
    finally:
        held.released.set()
        await server.close()
        world.rt.metrics.registry.unregister(held)
    assert answer == (200, {"ok": True})
    assert statuses == [200] * SCRAPES
    assert held.reads <= 2  # one reading for the lot (and perhaps one begun as it ended)


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def healthz(world: World, clock: Clock) -> AsyncIterator[Callable[[], Awaitable[tuple[int, object]]]]:
    """/healthz served on loopback by the web's own handler (on `clock`), and a hit on it: its status and body."""
    app = web.Application()
    app.router.add_get("/healthz", healthz_handler(world.rt, clock=clock))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session:

            async def hit() -> tuple[int, object]:
                async with session.get(server.make_url("/healthz")) as health:
                    return health.status, await health.json()

            yield hit
    finally:
        await server.close()


async def test_a_flood_of_health_checks_writes_redis_about_once_a_second(world: World) -> None:
    """/healthz answers anyone who reaches the port: sixty hits at once and sixty more within the same second write
    Redis's health key once between them (each hit wrote it), and a hit a second later probes again."""
    redis = world.rt.store.redis
    saved = redis.config_get("notify-keyspace-events")["notify-keyspace-events"]
    redis.config_set("notify-keyspace-events", "K$")  # a keyspace event for each SET
    listener = redis.pubsub()
    listener.psubscribe("__keyspace@*__:jit:health")
    clock = Clock()
    try:
        async with healthz(world, clock) as hit:
            at_once = await asyncio.gather(*(hit() for _ in range(60)))
            after = [await hit() for _ in range(60)]
            clock.now += 1.5
            later = await hit()
        writes = []
        while (message := listener.get_message(timeout=1.0)) is not None:
            if message["type"] == "pmessage":
                writes.append(message["data"])
    finally:
        listener.close()
        redis.config_set("notify-keyspace-events", saved)
    assert at_once + after == [(200, {"ok": True})] * 120
    assert later == (200, {"ok": True})
    assert writes == [b"set", b"set"]


async def test_a_flood_of_health_checks_between_write_probes_shares_its_pings(world: World) -> None:
    """Between write probes each hit PINGs Redis, so that a Redis killed since is 503 at once: sixty hits at once
    share the PING in flight rather than sending sixty (each took a thread of the pool the commands' listeners use)."""
    redis = world.rt.store.redis
    async with healthz(world, Clock()) as hit:
        assert await hit() == (200, {"ok": True})  # the write probe; its answer stands for a second
        before = int(redis.info("commandstats").get("cmdstat_ping", {}).get("calls", 0))
        at_once = await asyncio.gather(*(hit() for _ in range(60)))
        pings = int(redis.info("commandstats").get("cmdstat_ping", {}).get("calls", 0)) - before
    assert [status for status, _ in at_once] == [200] * 60
    assert 1 <= pings <= 10, f"{pings} PINGs for 60 hits at once"  # a few other PINGs may fall in too
