"""What Prometheus metrics cost a `/jit request`: the same load on a web with metrics and on one with JIT_METRICS=false.

Two webs started alike for this figure run side by side against the same Redis, policy and Slack stand-in;
the rounds alternate between them (on, off, off, on, …) so that the shared machine's swings fall on both
alike, and a scraper reads the metrics web's /metrics every 5 s meanwhile (three times as often as
Prometheus' default), so the cost of being scraped is in the figure too.

Latency on a shared machine swings by far more than 5 % from one round to the next, so the figure that
decides is each web's own CPU time per request (user + system, from /proc), which other processes' load
barely moves; the latencies are shown beside it, as the median of the rounds' paired ratios.
"""

from __future__ import annotations

import threading
import urllib.request

from bench.load import LoadResult
from bench.slash import WARM_UP, measured, process_id, workers_paused
from bench.stats import Row, cpu_seconds, latency_row, summarize
from bench.world import SECOND_REQUESTER, World
from devtools.ports import free_port
from devtools.slack_client import command_body
from devtools.stack import Stack, procfile

SCRAPE_EVERY = 5.0


def metrics_cost(stack: Stack, world: World, count: int, concurrency: int, rounds: int = 8) -> list[Row]:
    """Rows: the answer time with metrics, without, and the difference (the goal: within 5 %)."""
    ports = {"on": free_port(), "off": free_port()}
    for side, port in ports.items():
        env = {"PORT": str(port), "JIT_METRICS": "true" if side == "on" else "false"}
        stack._spawn(f"web.metrics-{side}", procfile()["web"], env)
    for port in ports.values():
        stack.wait_healthy(port)
    urls = {side: f"http://127.0.0.1:{port}/slack/events" for side, port in ports.items()}
    pids = {side: process_id(stack, f"web.metrics-{side}") for side in ports}
    cpu = {"on": 0.0, "off": 0.0}
    target = world.targets["sl"][0][0]
    bodies = [
        command_body(SECOND_REQUESTER, f"request {target} 30m --ip {world.host()} metrics {i}")
        for i in range(2 * rounds * (count + WARM_UP))
    ]
    chunks = [bodies[i : i + count + WARM_UP] for i in range(0, len(bodies), count + WARM_UP)]
    results: dict[str, list[LoadResult]] = {"on": [], "off": []}
    stop = threading.Event()
    scrapes = [0]
    scraper = threading.Thread(target=_scrape, args=(ports["on"], stop, scrapes), daemon=True)
    scraper.start()
    try:
        with workers_paused(stack):
            for index in range(rounds):
                for side in ("on", "off") if index % 2 == 0 else ("off", "on"):
                    before = cpu_seconds(pids[side])
                    results[side].append(measured(urls[side], chunks.pop(), concurrency))
                    cpu[side] += cpu_seconds(pids[side]) - before
    finally:
        stop.set()
        scraper.join(timeout=10)
    pairs = list(zip(results["on"], results["off"], strict=True))
    p50s = sorted(_p(a, 0.5) / _p(b, 0.5) - 1 for a, b in pairs)
    p99s = sorted(_p(a, 0.99) / _p(b, 0.99) - 1 for a, b in pairs)
    fewer = sorted(b.rate / a.rate - 1 for a, b in pairs)
    on = [ms for result in results["on"] for ms in result.latencies_ms]
    off = [ms for result in results["off"] for ms in result.latencies_ms]
    served = rounds * (count + WARM_UP)  # the warm-up's requests too: the CPU is read around both
    per_request = {side: cpu[side] / served * 1000 for side in cpu}
    rate = {
        side: sum(len(r.latencies_ms) for r in runs) / sum(r.wall_s for r in runs) for side, runs in results.items()
    }
    return [
        latency_row(
            "1b. /jit request with metrics (JIT_METRICS on)",
            on,
            note=f"{rate['on']:.0f} req/s at concurrency {concurrency}; /metrics scraped {scrapes[0]} times meanwhile",
        ),
        latency_row("   the same without metrics (JIT_METRICS=false)", off, note=f"{rate['off']:.0f} req/s"),
        Row(
            "   cost of metrics: web CPU per /jit request",
            f"{per_request['on']:.2f} ms on, {per_request['off']:.2f} ms off: "
            f"{per_request['on'] / per_request['off'] - 1:+.1%}",
            "within 5 %",
            f"user + system CPU of each web over its {served} requests (scrapes included), from /proc",
        ),
        Row(
            "   latency with metrics (median of paired rounds)",
            f"{_median(p50s):+.1%} p50, {_median(p99s):+.1%} p99, {_median(fewer):+.1%} fewer req/s",
            "",
            f"{rounds} alternating rounds of {count}, workers paused; p50 cost by round, sorted: "
            + ", ".join(f"{value:+.1%}" for value in p50s),
        ),
    ]


def _p(result: LoadResult, quantile: float) -> float:
    summary = summarize(result.latencies_ms)
    return summary.p50 if quantile == 0.5 else summary.p99


def _median(values: list[float]) -> float:
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def _scrape(port: int, stop: threading.Event, scrapes: list[int]) -> None:
    while not stop.wait(SCRAPE_EVERY):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            answer.read()
        scrapes[0] += 1
