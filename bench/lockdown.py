"""Lockdown: from an admin's `/jit lockdown on` to the last of many real grants gone at its load balancer."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from bench.grants import log, ms
from bench.latency_proxy import latency_proxy
from bench.memory import children
from bench.moto_view import MotoMeter, MotoView, listener_rule_arns
from bench.stats import Row, cpu_seconds, latency_row
from bench.world import (
    AuditTail,
    JobTimes,
    World,
    approve_bodies,
    card_timestamps,
    job_times,
    post,
    request_ids,
    settle,
    workers_through,
)
from devtools.moto_server import Network, seed_load_balancer
from devtools.stack import Stack
from jit_lb.access.store import RequestStore
from workers.providers.haproxy import RuntimeApi

ADMIN = "U0ADMIN"
RULES_PER_LISTENER = 50  # an ALB takes 100 rules (its quota, and the provider's limit): half, as a real one would hold
POLL_S = 0.02  # how often the load balancers are looked at: a gone time is at most this late, plus the poll
QUEUE_EVERY = 5  # polls between two looks at the queue of revoke jobs
QUEUE_KEY = "rq:queue:jit"  # RQ's list for JIT_QUEUE (default `jit`), where the revoke jobs wait
# How RQ names a job in a worker's log when it starts it: `jit: workers.jobs.revoke_access(...) (<job id>)`;
# the product's lockdown jobs are `revoke-lockdown-<request id>-<lockdown stamp>` and `clear-<spec digest>-<stamp>`.
JOB_LINE = re.compile(r"\(((?:revoke-lockdown-jit-[a-z0-9]{6}|clear-[0-9a-f]{16})-\d+)\)\s*$")
KINDS = {"sg": "security group rules", "alb": "ALB listener rules", "hap": "HAProxy ACL entries"}


@dataclass(frozen=True)
class Mix:
    """How many grants of each kind are active when the lockdown comes."""

    sg: int
    alb: int
    haproxy: int

    @property
    def total(self) -> int:
        return self.sg + self.alb + self.haproxy

    @property
    def listeners(self) -> int:
        return -(-self.alb // RULES_PER_LISTENER)

    def text(self) -> str:
        haproxy = f", {self.haproxy} HAProxy ACL entries" if self.haproxy else ", no HAProxy (not installed)"
        balancers = f"{self.listeners} load balancer{'s' if self.listeners != 1 else ''}"
        return (
            f"{self.sg} SG rules ({-(-self.sg // 50)} groups), {self.alb} ALB rules "
            f"({balancers}, at most {RULES_PER_LISTENER} each){haproxy}"
        )


@dataclass
class LockdownWorld:
    """The bench's World for the security groups, plus ALBs of their own and the Stack's HAProxy as more pools."""

    mix: Mix
    world: World = field(init=False)
    listener_arns: set[str] = field(default_factory=set)
    runtime_api: str = ""
    acl: str = ""

    def __post_init__(self) -> None:
        self.world = World({"sg": self.mix.sg})

    def policy(self, network: Network) -> dict[str, Any]:
        document = self.world.policy(network)
        document["admins"] = [ADMIN]
        base = next(iter(document["targets"].values()))
        assert self.world.stack is not None
        self.world.targets["alb"] = []
        for index in range(self.mix.listeners):
            alb = seed_load_balancer(self.world.stack.moto)
            grant = {
                "kind": "aws_alb_listener_rule",
                "region": "us-east-1",
                "listener_arn": alb.listener_arn,
                "target_group_arn": alb.target_group_arn,
            }
            document["targets"][f"alb-{index:02d}"] = base | {"grant": grant, "description": "bench ALB"}
            self.world.targets["alb"].append((f"alb-{index:02d}", alb.listener_arn))
            self.listener_arns.add(alb.listener_arn)
        if self.mix.haproxy:
            self.runtime_api, self.acl = network.haproxy_runtime_api, network.haproxy_acl
            grant = {"kind": "haproxy_acl", "runtime_api": self.runtime_api, "acl": self.acl}
            document["targets"]["edge"] = base | {"grant": grant, "description": "bench HAProxy"}
            self.world.targets["hap"] = [("edge", self.acl)]
        return document


class CpuClock:
    """CPU seconds each of the Stack's processes (and this one, which serves moto) used between start and stop."""

    def __init__(self, stack: Stack, extra: dict[str, int]) -> None:
        self.pids: dict[str, int] = dict(extra)
        for process in stack.by_prefix("web") + stack.by_prefix("worker"):
            assert process.popen is not None
            self.pids[process.name] = process.popen.pid
            for child in children(process.popen.pid):
                self.pids[f"{process.name} child"] = child
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._wall = time.monotonic()
        self._self = time.process_time()
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        self.wall = time.monotonic() - self._wall
        self.used = {name: cpu_seconds(pid) - self._before[name] for name, pid in self.pids.items()}
        self.used["bench (moto, polls)"] = time.process_time() - self._self

    def text(self) -> str:
        workers = [seconds for name, seconds in self.used.items() if name.startswith("worker") and "child" not in name]
        parts = [f"workers {' + '.join(f'{s:.1f}' for s in workers)} s"]
        parts += [
            f"{name} {seconds:.1f} s"
            for name, seconds in self.used.items()
            if not name.startswith("worker") and seconds >= 0.05
        ]
        total = sum(self.used.values())
        return f"{total:.1f} CPU s in {self.wall:.1f} s on {os.cpu_count()} cores: " + ", ".join(parts)


@dataclass
class LockdownWatch:
    """Per request: its kind, its objects (as its grant.applied record names them), and when all were seen gone."""

    kinds: dict[str, str]
    refs: dict[str, set[str]]
    gone: dict[str, float] = field(default_factory=dict)

    def note_gone(self, present: set[str], now: float) -> None:
        for request_id, refs in self.refs.items():
            if request_id not in self.gone and not refs & present:
                self.gone[request_id] = now


def grant_all(stack: Stack, place: LockdownWorld) -> tuple[dict[str, str], float]:
    """File, approve and apply every grant of the mix through the product; each request's kind, and the time taken."""
    mix, world = place.mix, place.world
    plan = [("sg", mix.sg), ("alb", mix.alb), ("hap", mix.haproxy)]
    bodies, kinds = [], []
    for pool, count in plan:
        if count:
            bodies += world.commands(pool, count, "30m")
            kinds += [pool] * count
    started = time.monotonic()
    ids = request_ids(post(stack, bodies, concurrency=20))
    cards = card_timestamps(stack, ids, timeout=60 + len(ids) / 10)
    log(f"lockdown: {len(ids)} requests filed and their cards posted in {time.monotonic() - started:.1f}s")
    audit = AuditTail(stack.audit_path)
    audit.poll()
    clicks = post(stack, approve_bodies(ids, cards), concurrency=100)
    if set(clicks.statuses) != {200}:
        raise RuntimeError(f"approve clicks answered {sorted(set(clicks.statuses))}")
    audit.wait(lambda a: all(a.count(rid, "grant.applied") for rid in ids), timeout=60 + len(ids) / 4, every=0.5)
    seconds = time.monotonic() - started
    granted = sum(1 for rid in ids if audit.count(rid, "grant.applied"))
    log(f"lockdown: {granted}/{len(ids)} granted in {seconds:.1f}s")
    return dict(zip(ids, kinds, strict=True)), seconds


def present_objects(place: LockdownWorld, api: RuntimeApi | None) -> Callable[[], set[str]]:
    """A poll of every object the lockdown is to remove, as refs: SG rule ids, ALB rule ARNs, HAProxy patterns."""
    view = MotoView(place.world.group_ids("sg"))

    def present() -> set[str]:
        found = view.rule_ids() | listener_rule_arns(place.listener_arns)
        if api is not None:
            found |= {line.partition(" ")[2].strip() for line in api.show_acl(place.acl).splitlines()}
        return found

    return present


def runs_of(stack: Stack) -> Counter[str]:
    """How many times the workers started each lockdown job (a grant's revoke, a spec's clear), from RQ's log lines."""
    runs: Counter[str] = Counter()
    for process in stack.processes:
        if process.name.startswith("worker") and process.log_path.exists():
            for line in process.log_path.read_text(errors="replace").splitlines():
                match = JOB_LINE.search(line)
                if match and "Job OK" not in line:
                    runs[match.group(1)] += 1
    return runs


@dataclass
class Run:
    """What one lockdown did: when it was sent and answered, and when each job was first seen queued."""

    sent: float
    answered: float = 0.0
    first_queued: dict[str, float] = field(default_factory=dict)  # job id -> first seen in the queue

    def note_queued(self, rq: redis.Redis, now: float) -> None:
        for raw in rq.lrange(QUEUE_KEY, 0, -1):
            self.first_queued.setdefault(raw.decode() if isinstance(raw, bytes) else str(raw), now)


def lock_down(stack: Stack, watch: LockdownWatch, present: Callable[[], set[str]], rq: redis.Redis) -> Run:
    """Send `/jit lockdown on` as the admin, then poll until every watched object is gone (or give up)."""
    run = Run(sent=time.time())
    answer = stack.client().command(ADMIN, "lockdown on bench")
    run.answered = time.time()
    if answer.status != 200 or "Lockdown on" not in answer.body:
        raise RuntimeError(f"/jit lockdown on answered HTTP {answer.status}: {answer.body[:300]}")
    give_up = run.sent + 60 + len(watch.refs) / 2
    polls = 0
    while len(watch.gone) < len(watch.refs) and time.time() < give_up:
        watch.note_gone(present(), time.time())
        if polls % QUEUE_EVERY == 0:
            run.note_queued(rq, time.time())
        polls += 1
        time.sleep(POLL_S)
    return run


@dataclass
class LockdownResult:
    """One lockdown run's rows, the seconds from the command to the last object gone, and per kind when each went."""

    rows: list[Row]
    last_s: float | None
    gone_by_kind: dict[str, list[float]]


def lockdown(mix: Mix, latency: float = 0.0) -> LockdownResult:
    """`mix.total` grants granted through the product, then `/jit lockdown on`: time to the last object gone.

    With `latency` (seconds), the workers are restarted after the grants are applied with their AWS calls
    sent through the latency proxy (bench/latency_proxy.py), so the lockdown runs at a real region's pace.
    """
    if mix.haproxy and shutil.which("haproxy") is None:
        mix = Mix(mix.sg + mix.haproxy, mix.alb, 0)
    place = LockdownWorld(mix)
    stack = Stack(policy=place.policy, webs=1, workers=3, with_haproxy=bool(mix.haproxy))
    place.world.stack = stack
    with stack, contextlib.ExitStack() as proxied:
        kinds, setup_s = grant_all(stack, place)
        settle(stack, timeout=120)
        if latency:
            endpoint = proxied.enter_context(latency_proxy(stack.moto.endpoint, latency))
            workers_through(stack, endpoint)
        applied = {r["request_id"]: set(r.get("objects") or []) for r in stack.audit() if r["event"] == "grant.applied"}
        watch = LockdownWatch({rid: kind for rid, kind in kinds.items() if applied.get(rid)}, {})
        watch.refs = {rid: applied[rid] for rid in watch.kinds}
        api = RuntimeApi(place.runtime_api) if mix.haproxy else None
        present = present_objects(place, api)
        rq = redis.Redis.from_url(stack.redis.url)
        extra = {"redis": int(rq.info("server")["process_id"])}
        if api is not None:
            info = dict(line.split(": ", 1) for line in api.run("show info").splitlines() if ": " in line)
            extra["haproxy"] = int(info["Pid"])
        reads = open_request_reads(rq)
        clock = CpuClock(stack, extra)
        missing = len(watch.refs) - sum(1 for refs in watch.refs.values() if refs & present())
        with MotoMeter() as meter:
            clock.start()
            run = lock_down(stack, watch, present, rq)
            clock.stop()
        last = max(watch.gone.values(), default=run.sent)
        log(f"lockdown: {len(watch.gone)}/{len(watch.refs)} gone, the last {last - run.sent:.1f}s after the command")
        lockdown_on = RequestStore(rq).lockdown()
        assert lockdown_on is not None, "the lockdown is on until the bench ends"
        stamp = int(lockdown_on.at.timestamp())
        wait_for_revokes(rq, run, [f"revoke-lockdown-{rid}-{stamp}" for rid in watch.refs])
        settle(stack)
        runs = runs_of(stack)
        jobs = {rid: job_times(rq, f"revoke-lockdown-{rid}-{stamp}") for rid in watch.refs}
        clears = {job_id: job_times(rq, job_id) for job_id in runs if job_id.startswith("clear-")}
        where = f", {latency * 1000:.0f} ms AWS latency" if latency else ""
        head = [
            Row(f"8. lockdown: command → last object gone{where}", *figure(mix, watch, run.sent, missing)),
            Row(
                "   command answered",
                f"{ms(run.answered - run.sent):.0f} ms",
                "",
                f"setup: {mix.total} real grants filed, approved and applied in {setup_s:.0f} s"
                + ("; then the workers restarted behind the latency proxy" if latency else ""),
            ),
        ]
        rows = head + stage_rows(watch, run, jobs, runs, stamp, clears) + cost_rows(watch, run, clock, meter) + reads
        gone_by_kind = {
            KINDS[kind]: [
                watch.gone[rid] - run.sent for rid, k in watch.kinds.items() if k == kind and rid in watch.gone
            ]
            for kind in KINDS
            if any(k == kind for k in watch.kinds.values())
        }
        never = len(watch.refs) - len(watch.gone)
        return LockdownResult(rows, None if never or not watch.gone else last - run.sent, gone_by_kind)


def wait_for_revokes(rq: redis.Redis, run: Run, job_ids: list[str], timeout: float = 30.0) -> None:
    """Until every grant's revoke job is queued (the workers queue them once the clearing jobs have finished), noting
    when each was first seen in the queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.note_queued(rq, time.time())
        with rq.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(f"rq:job:{job_id}")
            if all(pipe.execute()):
                return
        time.sleep(POLL_S * QUEUE_EVERY)
    log("lockdown: not every grant's revoke job was queued within 30 s")


def open_request_reads(rq: redis.Redis) -> list[Row]:
    """What reading every open request costs a worker's loop (twice a second in a lockdown), with the workers idle.

    `open_requests()` (enforce_lockdown and end_idle each call it every second) reads the requests one
    GET at a time; `find_many` reads the same ones with one MGET. Best of three each.
    """
    store = RequestStore(rq)
    requests = store.open_requests()
    ids = {request.id for request in requests}
    one_by_one, batched = [], []
    for _ in range(3):
        started = time.perf_counter()
        store.open_requests()
        one_by_one.append(time.perf_counter() - started)
        started = time.perf_counter()
        store.find_many(ids)
        batched.append(time.perf_counter() - started)
    return [
        Row(
            f"   loop: read {len(requests):,} open requests",
            f"{ms(min(one_by_one)):.0f} ms",
            "",
            f"open_requests(), one GET each, as enforce_lockdown and end_idle do every second; "
            f"find_many (one MGET): {ms(min(batched)):.0f} ms; workers idle, best of 3",
        )
    ]


def figure(mix: Mix, watch: LockdownWatch, sent: float, missing: int) -> tuple[str, str, str]:
    last = max(watch.gone.values(), default=None)
    never = len(watch.refs) - len(watch.gone)
    value = f"{last - sent:.2f} s" if last is not None and not never else f"{never} still there"
    note = f"{len(watch.refs)} grants: {mix.text()}; 3 workers; objects polled every {POLL_S * 1000:.0f} ms"
    if len(watch.refs) < mix.total or missing:
        note += f"; {mix.total - len(watch.refs)} never granted, {missing} not at the load balancer before"
    return value, "<= 3 s", note


def stage_rows(
    watch: LockdownWatch,
    run: Run,
    jobs: dict[str, JobTimes],
    runs: Counter[str],
    stamp: int,
    clears: dict[str, JobTimes],
) -> list[Row]:
    """When each revoke was first queued, how long it waited, and by kind: work before and after its object went.

    A job run twice (its claim ran out while it waited, and a loop queued it again) keeps only its
    second run's times in RQ, so the per-job stages count the jobs run once.
    """
    sent = run.sent

    def job_id(rid: str) -> str:
        return f"revoke-lockdown-{rid}-{stamp}"

    queued = {}
    for rid, job in jobs.items():
        seen = run.first_queued.get(job_id(rid))
        once = runs[job_id(rid)] == 1 and job.enqueued is not None
        candidates = [t for t in (seen, job.enqueued if once else None) if t is not None]
        if candidates:
            queued[rid] = min(candidates)
    single = {rid: job for rid, job in jobs.items() if runs[job_id(rid)] == 1 and job.started}
    revokes = [job for job in runs if job.startswith("revoke-lockdown-")]
    twice = sum(1 for job in runs if runs[job] > 1)
    clear_work = [ms(job.ended - job.started) for job in clears.values() if job.started and job.ended]
    rows = [
        latency_row(
            "   command → revoke job first queued",
            [ms(t - sent) for t in queued.values()],
            note="enforce_lockdown queues them once the clearing jobs have finished; queue sampled every "
            f"{POLL_S * QUEUE_EVERY * 1000:.0f} ms",
        ),
        Row(
            "   lockdown jobs run twice",
            f"{twice} of {len(runs)}",
            "0",
            f"{len(revokes)} grants' revoke jobs and {len(clears)} clearing jobs seen started in the workers' logs",
        ),
        latency_row(
            "   clearing job: started → ended",
            clear_work,
            note="an ALB spec a job, other kinds 4 specs a job in threads; each spec: one listing, drop_all (SG: 100 "
            "rules a call; ALB: 16 calls at a time; HAProxy: one connection)",
        ),
        latency_row(
            "   revoke job waits in queue (jobs run once)",
            [ms(job.started - job.enqueued) for job in single.values() if job.started and job.enqueued],
        ),
    ]
    for kind, name in KINDS.items():
        mine = [rid for rid, k in watch.kinds.items() if k == kind]
        if not mine:
            continue
        done = [rid for rid in mine if rid in watch.gone and rid in single and single[rid].ended]
        rows += [
            latency_row(
                f"   command → gone: {name}", [ms(watch.gone[rid] - sent) for rid in mine if rid in watch.gone]
            ),
            latency_row(
                f"   its revoke job: started → ended: {name}",
                [ms((single[rid].ended or 0) - (single[rid].started or 0)) for rid in done],
                note="finds its objects gone (cleared by the clearing jobs first), reads back, records, tells",
            ),
        ]
    return rows


def cost_rows(watch: LockdownWatch, run: Run, clock: CpuClock, meter: MotoMeter) -> list[Row]:
    gone_times = sorted(watch.gone.values())
    rate = len(gone_times) / max(gone_times[-1] - run.sent, 1e-9) if gone_times else 0.0
    return [
        Row("   revokes done per second", f"{rate:.1f}/s", "", "objects gone / (last gone - command)"),
        Row("   CPU while locking down", f"{sum(clock.used.values()):.1f} s", "", clock.text()),
        Row(
            "   moto CPU while locking down",
            f"{sum(meter.seconds.values()):.1f} s",
            "",
            meter.text(len(gone_times) or 1, "revoke"),
        ),
    ]
