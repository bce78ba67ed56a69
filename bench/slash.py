"""Slash-command answer latency of jit-lb's web process next to a bare Bolt app that only acks."""

from __future__ import annotations

import time

from bench.bare_app import bare_app_process
from bench.load import LoadResult, run_load
from bench.stats import Row, latency_row, summarize
from bench.world import APPROVALS, REQUESTER, World
from devtools.slack_client import command_body
from devtools.stack import BOT_TOKEN, SIGNING_SECRET, Stack

WARM_UP = 20  # Bolt's first request makes its one auth.test call; neither app is timed on that


def command_bodies(world: World, count: int) -> list[str]:
    target = world.targets["sl"][0][0]
    return [command_body(REQUESTER, f"request {target} 30m --ip {world.host()} load {i}") for i in range(count)]


def measured(url: str, bodies: list[str], concurrency: int) -> LoadResult:
    run_load(url, SIGNING_SECRET, bodies[:WARM_UP], concurrency)
    return run_load(url, SIGNING_SECRET, bodies[WARM_UP:], concurrency)


def slash_commands(stack: Stack, world: World, count: int, concurrency: int) -> list[Row]:
    """The same signed `/jit request` load against the bare app, then against jit-lb's web."""
    bodies = command_bodies(world, count + WARM_UP)
    with bare_app_process(SIGNING_SECRET, BOT_TOKEN, stack.slack.api_url) as bare_url:
        bare = measured(bare_url, bodies, concurrency)
    cards_before = len(stack.slack.messages(APPROVALS))
    ours = measured(f"http://127.0.0.1:{stack.web_ports[0]}/slack/events", bodies, concurrency)
    # The cards are posted after the ack; wait for them (bounded) so that later figures do not share the CPU.
    deadline = time.monotonic() + 120
    while len(stack.slack.messages(APPROVALS)) < cards_before + count + WARM_UP and time.monotonic() < deadline:
        time.sleep(0.5)
    ratio = summarize(ours.latencies_ms).p99 / summarize(bare.latencies_ms).p99
    failed = sum(1 for status in ours.statuses if status != 200)
    return [
        latency_row(
            "1. /jit request answered: jit-lb",
            ours.latencies_ms,
            note=f"{count / ours.wall_s:.0f} req/s at concurrency {concurrency}; {failed} not 200",
        ),
        latency_row(
            "   /jit answered: bare Bolt app (floor)",
            bare.latencies_ms,
            note=f"{count / bare.wall_s:.0f} req/s; ack only",
        ),
        Row("   ratio p99 jit-lb / p99 floor", f"{ratio:.2f}x", "within 2x"),
    ]
