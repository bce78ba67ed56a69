"""Slash-command answer latency of jit-lb's web process next to a bare Bolt app that only acks."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bench.bare_app import bare_app_process
from bench.load import LoadResult, run_load
from bench.redis_cost import round_trip_cpu_us
from bench.stats import Row, cpu_seconds, latency_row, summarize
from bench.world import APPROVALS, REQUESTER, World
from devtools.slack_client import command_body
from devtools.stack import BOT_TOKEN, SIGNING_SECRET, Stack

WARM_UP = 200  # untimed, for both apps: Bolt's one auth.test, connection pools, the first collections


def command_bodies(world: World, count: int) -> list[str]:
    target = world.targets["sl"][0][0]
    return [command_body(REQUESTER, f"request {target} 30m --ip {world.host()} load {i}") for i in range(count)]


def measured(url: str, bodies: list[str], concurrency: int) -> LoadResult:
    run_load(url, SIGNING_SECRET, bodies[:WARM_UP], concurrency)
    return run_load(url, SIGNING_SECRET, bodies[WARM_UP:], concurrency)


@dataclass(frozen=True)
class Measured:
    """One app's timed posts, and the CPU (user + system) its process spent a timed post, in milliseconds."""

    load: LoadResult
    cpu_ms: float


def measured_with_cpu(url: str, bodies: list[str], concurrency: int, pid: int) -> Measured:
    """`measured`, with the serving process's CPU read from /proc around the timed posts (not the warm-up)."""
    run_load(url, SIGNING_SECRET, bodies[:WARM_UP], concurrency)
    before = cpu_seconds(pid)
    load = run_load(url, SIGNING_SECRET, bodies[WARM_UP:], concurrency)
    return Measured(load, (cpu_seconds(pid) - before) / len(load.latencies_ms) * 1000)


def process_id(stack: Stack, name: str) -> int:
    [process] = [process for process in stack.processes if process.name == name]
    assert process.popen is not None
    return process.popen.pid


@contextlib.contextmanager
def workers_paused(stack: Stack) -> Iterator[None]:
    """SIGSTOP the worker processes for the block, SIGCONT after: they keep their jobs and carry on."""
    pids = [process.popen.pid for process in stack.processes if process.name.startswith("worker") and process.popen]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


@dataclass
class SlashResult:
    """The slash-command rows, and the median round's ratio of p99s to the fair floor (for the goals)."""

    rows: list[Row]
    ratio: float
    live_ratio: float


def slash_commands(stack: Stack, world: World, count: int, concurrency: int, rounds: int = 3) -> SlashResult:
    """The same signed `/jit request` load against the bare app and jit-lb's web alone, in rounds, then with workers.

    The floor is the bare app run as jit-lb's web runs (`process_before_response=True`); the old floor
    (Bolt's default, acks polled every 10 ms) is measured once beside it, for the record. The bare app
    has the machine to itself, so jit-lb's like-for-like figure is taken with the workers paused; they
    post those approval cards once resumed. Each round runs the bare app, then jit-lb, back to back;
    the row shown is the round with the median ratio, and the note lists every round's, since one run
    on a shared 2-core machine swings by half. Then the same load while 3 workers post each new
    request's card on the same cores, against the same floor.
    """
    bodies = command_bodies(world, count + WARM_UP)
    url = f"http://127.0.0.1:{stack.web_ports[0]}/slack/events"
    cards_before = cards(stack)
    web = process_id(stack, "web.1")
    with bare_app_process(SIGNING_SECRET, BOT_TOKEN, stack.slack.api_url, fair=False) as polled_app:
        polled = measured(polled_app.url, bodies, concurrency)
    measured_rounds: list[tuple[float, Measured, Measured]] = []
    for _ in range(rounds):
        with bare_app_process(SIGNING_SECRET, BOT_TOKEN, stack.slack.api_url) as bare_app:
            bare_round = measured_with_cpu(bare_app.url, bodies, concurrency, bare_app.pid)
        with workers_paused(stack):
            alone_round = measured_with_cpu(url, bodies, concurrency, web)
        ratio = summarize(alone_round.load.latencies_ms).p99 / summarize(bare_round.load.latencies_ms).p99
        measured_rounds.append((ratio, bare_round, alone_round))
        wait_for_cards(stack, cards_before + len(measured_rounds) * len(bodies))
    ratio, bare_round, alone_round = sorted(measured_rounds, key=lambda item: item[0])[len(measured_rounds) // 2]
    bare, alone = bare_round.load, alone_round.load
    round_trip_us = round_trip_cpu_us(stack.redis_url, 5000, concurrency)
    every = ", ".join(f"{r:.2f}x" for r, _, _ in measured_rounds)
    live = measured(url, bodies, concurrency)
    # The cards are posted after the answers; wait for them (bounded) so that later figures do not share the CPU.
    expected = (rounds + 1) * len(bodies)
    posted = wait_for_cards(stack, cards_before + expected)
    floor = summarize(bare.latencies_ms).p99
    live_ratio = summarize(live.latencies_ms).p99 / floor
    rows = [
        latency_row(
            "1. /jit request answered: jit-lb web, workers paused",
            alone.latencies_ms,
            note=f"{count / alone.wall_s:.0f} req/s at concurrency {concurrency}; {_failed(alone)} not 200; "
            "workers paused, as the bare app has the cores to itself",
        ),
        latency_row(
            "   /jit answered: bare Bolt app (fair floor)",
            bare.latencies_ms,
            note=f"{count / bare.wall_s:.0f} req/s; ack only; process_before_response=True, as jit-lb's web",
        ),
        latency_row(
            "   /jit answered: bare Bolt app, acks polled (old floor)",
            polled.latencies_ms,
            note=f"{count / polled.wall_s:.0f} req/s; Bolt's default: the ack is polled every 10 ms; one round, "
            "for the record (it flattered jit-lb)",
        ),
        Row(
            "   ratio p99 jit-lb (paused) / p99 fair floor",
            f"{ratio:.2f}x",
            "<= 1.5x",
            f"median of {rounds} rounds: {every}",
        ),
        *cpu_rows(alone_round, bare_round, round_trip_us, concurrency),
        latency_row(
            "   /jit answered while 3 workers post cards",
            live.latencies_ms,
            note=f"{count / live.wall_s:.0f} req/s; {_failed(live)} not 200; {posted - cards_before}/{expected} "
            "cards posted",
        ),
        Row(
            "   ratio p99 jit-lb (workers live) / p99 fair floor",
            f"{live_ratio:.2f}x",
            "",
            "the workers post two Slack messages a card on the same 2 cores; the stand-in answers them in the "
            "benchmark's own process",
        ),
    ]
    return SlashResult(rows, ratio, live_ratio)


def cpu_rows(web: Measured, floor: Measured, round_trip_us: float, concurrency: int) -> list[Row]:
    """What the p99s rest on: each server's CPU a command and how much of a core it used, one Redis round trip's CPU
    through the web's client, and what a p99 within 1.5x of the floor's would take of jit-lb's rate and CPU."""
    web_rate, floor_rate = web.load.rate, floor.load.rate
    # Little's law for a closed loop: the mean answer is concurrency / rate. Keeping jit-lb's tail (p99 / mean) as it
    # is, a p99 of 1.5x the floor's needs this rate, and, on the same share of its core, this CPU a command.
    tail = summarize(web.load.latencies_ms).p99 / (1000 * concurrency / web_rate)
    target_ms = 1.5 * summarize(floor.load.latencies_ms).p99
    rate_needed = 1000 * concurrency * tail / target_ms
    return [
        Row(
            "   CPU a command: jit-lb web (paused) / fair floor",
            f"{web.cpu_ms:.3f} / {floor.cpu_ms:.3f} ms: {web.cpu_ms / floor.cpu_ms:.2f}x",
            "",
            f"user + system of each server process over the median round's timed posts, from /proc; "
            f"{web.cpu_ms * web_rate / 1000:.2f} and {floor.cpu_ms * floor_rate / 1000:.2f} of a core",
        ),
        Row(
            "   one Redis round trip through the web's client (PING)",
            f"{round_trip_us:.0f} µs CPU",
            "",
            "the least a call carries; a command makes one of its own (the create script) and shares two with the "
            "commands of its turn of the loop (the replay check, the card push)",
        ),
        Row(
            "   what 1.5x would take of jit-lb, its tail as now",
            f">= {rate_needed:.0f} req/s, <= {web.cpu_ms * web_rate / rate_needed:.2f} ms CPU a command",
            "",
            f"mean answer = {concurrency} / rate (Little's law); jit-lb's p99 {tail:.2f}x its mean; "
            f"the floor's p99 x 1.5 = {target_ms:.1f} ms",
        ),
    ]


def cards(stack: Stack) -> int:
    """Approval cards posted so far: the approvals channel's messages that are not thread replies."""
    return sum(
        1
        for message in stack.slack.messages(APPROVALS)
        if "thread_ts" not in message and "Audit checkpoint" not in str(message.get("text"))
    )


def wait_for_cards(stack: Stack, total: int, timeout: float = 120.0) -> int:
    """Wait (at most `timeout`) until `total` approval cards are posted; return how many are."""
    deadline = time.monotonic() + timeout
    while cards(stack) < total and time.monotonic() < deadline:
        time.sleep(0.5)
    return cards(stack)


def _failed(result: LoadResult) -> int:
    return sum(1 for status in result.statuses if status != 200)
