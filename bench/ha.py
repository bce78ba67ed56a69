"""High availability: a Sentinel failover, Redis gone, and two webs and two workers beside one of each.

Each figure runs on a Stack of its own (the Procfile's processes, moto, the Slack stand-in):

* failover: a master, a replica and three Sentinels (`down-after-milliseconds 1000`); requests
  acknowledged and grants applied, then the master is SIGKILLed; kill → Sentinel's promotion →
  the first `/jit request` accepted (one command every 0.1 s), the acknowledged requests the new
  master lacks, and the grants ending across the failover: gone by their end or not.
* Redis gone: a durable Redis SIGKILLed with grants active; each grant's rule gone - its end
  (the workers sweep by markers alone), then Redis started again and the records counted. Redis
  frozen: the same with SIGSTOP (every call hangs instead of failing), then SIGCONT.
* scale: the same signed `/jit request` load through 1 web + 1 worker, then 2 webs + 2 workers
  (half the load through each web at once): throughput and latency, on whatever cores there are.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import redis

from bench.grants import log
from bench.load import LoadResult
from bench.moto_view import reset_moto
from bench.stats import Row, latency_row, summarize
from bench.world import REQUESTER, AuditTail, World, approve_bodies, card_timestamps, post, request_ids, stamp
from devtools.stack import Stack

POOL = "ha"


def _rules_by_request(stack: Stack, world: World) -> dict[str, int]:
    """How many rules at moto carry each request's lease, across the world's groups."""
    ec2 = stack.moto.client("ec2")
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": sorted(world.group_ids(POOL))}])
    held: Counter[str] = Counter()
    for rule in rules["SecurityGroupRules"]:
        for tag in rule.get("Tags", []):
            if tag["Key"].startswith("jit-lb:lease:"):
                held[tag["Key"].removeprefix("jit-lb:lease:")] += 1
    return dict(held)


def _granted(stack: Stack, world: World, count: int, duration: str, start: int = 0) -> dict[str, float]:
    """`count` requests approved and applied; each request id with its end (epoch seconds) from `grant.applied`."""
    ids = request_ids(post(stack, world.commands(POOL, count, duration, start), concurrency=4))
    post(stack, approve_bodies(ids, card_timestamps(stack, ids, 60)), concurrency=4)
    tail = AuditTail(stack.audit_path)
    if not tail.wait(lambda t: all(t.count(rid, "grant.applied") for rid in ids), timeout=60):
        raise RuntimeError("the grants were not applied within 60 s")
    ends = {}
    for record in stack.audit():
        if record["event"] == "grant.applied" and record.get("request_id") in ids:
            ends[record["request_id"]] = stamp(record["ends_at"])
    return ends


def _gone_offsets(stack: Stack, world: World, ends: dict[str, float], timeout: float) -> dict[str, float]:
    """Poll moto every 0.1 s until each grant's rules are gone; each one's gone - end, in seconds."""
    offsets: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(offsets) < len(ends) and time.monotonic() < deadline:
        held = _rules_by_request(stack, world)
        now = time.time()
        for request_id, end in ends.items():
            if request_id not in offsets and request_id not in held:
                offsets[request_id] = now - end
        time.sleep(0.1)
    return offsets


# --- failover ---------------------------------------------------------------------------------------


def failover(acknowledged: int, grants: int) -> list[Row]:
    world = World({POOL: acknowledged + grants + 50})
    stack = Stack(policy=world.policy, webs=1, workers=2, sentinel=True, sweep_interval=5.0)
    world.stack = stack
    with stack:
        assert stack.topology is not None
        topology = stack.topology
        pending = request_ids(post(stack, world.commands(POOL, acknowledged, "30m"), concurrency=4))
        ends = _granted(stack, world, grants, "15s", start=acknowledged)
        old = topology.master_port()
        promoted: list[float] = []
        killed = time.monotonic()
        topology.kill_master()

        def watch() -> None:
            topology.wait_promoted(old)
            promoted.append(time.monotonic())

        watcher = threading.Thread(target=watch)
        watcher.start()
        refused, accepted_at = 0, None
        client = stack.client()
        while accepted_at is None and time.monotonic() - killed < 60:
            answer = client.command(REQUESTER, f"request ha-00 30m --ip {world.host()} during the failover")
            text = str(answer.json().get("text", ""))
            if "jit-" in text and "unavailable" not in text:
                accepted_at = time.monotonic()
            else:
                refused += 1
                time.sleep(0.1)
        watcher.join(timeout=60)
        new = redis.Redis(host="127.0.0.1", port=topology.master_port())
        missing = sum(1 for rid in pending if not new.exists(f"jit:req:{rid}"))
        offsets = _gone_offsets(stack, world, ends, timeout=max(ends.values()) - time.time() + 30)
    on_time = sum(1 for offset in offsets.values() if offset <= 0)
    promotion = f"{promoted[0] - killed:.2f} s" if promoted else "none within 60 s"
    accepted = f"{accepted_at - killed:.2f} s" if accepted_at else "none within 60 s"
    gone = summarize([offset * 1000 for offset in offsets.values()])
    return [
        Row("failover: master killed → Sentinel's promotion", promotion, "", "down-after-milliseconds 1000"),
        Row(
            "failover: master killed → first /jit request accepted",
            accepted,
            "≤ 5 s",
            f"one command every 0.1 s; {refused} answered 'jit-lb is unavailable … try again' before",
        ),
        Row("failover: acknowledged requests missing after", f"{missing} of {len(pending)}", "0", "WAIT for a replica"),
        Row(
            "failover: grants ending across it gone by their end",
            f"{on_time} of {len(ends)}",
            "all",
            f"gone - end p50 {gone.p50 / 1000:+.2f} s, max {gone.max / 1000:+.2f} s",
        ),
    ]


# --- Redis gone -------------------------------------------------------------------------------------


def redis_gone(grants: int, sweep_interval: float, frozen: bool = False) -> list[Row]:
    """Redis SIGKILLed (it refuses) or, `frozen`, SIGSTOPped (it accepts connections and never answers, as behind
    a partition) with grants active; then started again (or SIGCONT)."""
    world = World({POOL: grants + 10})
    stack = Stack(policy=world.policy, webs=1, workers=2, durable_redis=True, sweep_interval=sweep_interval)
    world.stack = stack
    with stack:
        # Ends spread over a few seconds after the kill; under heavy load the grants take long to apply, and a grant
        # that ended before the kill was revoked with Redis: only those ending after it are measured.
        ends: dict[str, float] = {}
        for index in range(grants):
            ends |= _granted(stack, world, 1, f"{20 + 2 * index}s", start=index)
        killed = time.time()
        pid = stack.redis.pid
        if frozen:
            os.kill(pid, signal.SIGSTOP)
        else:
            stack.redis.kill()
        after = {request_id: end for request_id, end in ends.items() if end > killed}
        offsets = _gone_offsets(stack, world, after, timeout=max(ends.values()) - time.time() + 3 * sweep_interval)
        back = time.monotonic()
        if frozen:
            os.kill(pid, signal.SIGCONT)
        else:
            stack.redis.start()
        tail = AuditTail(stack.audit_path)
        recorded = tail.wait(lambda t: all(t.count(rid, "grant.revoked") for rid in ends), timeout=60)
        arrived = time.monotonic() - back
        time.sleep(2)  # a duplicate would come now
        tail.poll()
        twice = sum(1 for rid in ends if tail.count(rid, "grant.revoked") > 1)
    late = summarize([offset * 1000 for offset in offsets.values()])
    name, how = ("Redis frozen", "SIGSTOPped") if frozen else ("Redis gone", "SIGKILLed")
    return [
        Row(
            f"{name}: rule gone - end",
            f"p50 {late.p50 / 1000:+.2f} s, max {late.max / 1000:+.2f} s ({len(offsets)} of {len(after)} gone)",
            f"≤ {sweep_interval:g} s (JIT_SWEEP_INTERVAL)",
            f"Redis {how} before {len(after)} of {len(ends)} ends; 2 workers sweeping by markers",
        ),
        Row(
            f"{name}: records once it is back",
            f"{'all' if recorded else 'not all'} in {arrived:.2f} s, {twice} twice",
            "all, once",
            "grant.revoked, reason sweep",
        ),
    ]


# --- two of each -----------------------------------------------------------------------------------


def _slash(webs: int, workers: int, count: int, concurrency: int) -> tuple[float, LoadResult]:
    world = World({POOL: 1})
    stack = Stack(policy=world.policy, webs=webs, workers=workers)
    world.stack = stack
    with stack:
        post(stack, world.commands(POOL, 100, "30m"), concurrency)  # warm-up, untimed
        bodies = world.commands(POOL, count, "30m", start=100)
        shares = [bodies[web::webs] for web in range(webs)]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=webs) as pool:
            results = list(pool.map(lambda web: post(stack, shares[web], concurrency // webs, web), range(webs)))
        wall = time.monotonic() - started
    merged = LoadResult(
        [ms for r in results for ms in r.latencies_ms],
        [s for r in results for s in r.statuses],
        [t for r in results for t in r.texts],
        [s for r in results for s in r.sent_at],
        [a for r in results for a in r.answered_at],
        wall,
    )
    return count / wall, merged


def scale(count: int, concurrency: int) -> list[Row]:
    rows = []
    for webs, workers in ((1, 1), (2, 2)):
        log(f"slash commands through {webs} web(s) and {workers} worker(s) ...")
        rate, result = _slash(webs, workers, count, concurrency)
        ok = sum(1 for status in result.statuses if status == 200)
        rows.append(
            latency_row(
                f"{webs} web + {workers} worker: /jit request answer",
                result.latencies_ms,
                "",
                f"{rate:.0f} commands/s; {ok} of {count} answered 200; concurrency {concurrency}",
            )
        )
    return rows


def ha_figures(quick: bool) -> list[Row]:
    started = datetime.now(UTC)
    rows = failover(acknowledged=10 if quick else 50, grants=2 if quick else 5)
    reset_moto()  # moto's state is global to this process (and bench/moto_view.py's indexes with it)
    rows += redis_gone(grants=2 if quick else 5, sweep_interval=5.0)
    reset_moto()
    rows += redis_gone(grants=2 if quick else 5, sweep_interval=5.0, frozen=True)
    reset_moto()
    rows += scale(count=200 if quick else 1000, concurrency=20)
    log(f"high availability figures in {(datetime.now(UTC) - started).total_seconds():.0f} s")
    return rows
