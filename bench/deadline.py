"""Revokes against the deadline: when each grant's rule is gone at moto, against the end its approver gave it."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job

from bench.grants import log, ms
from bench.load import LoadResult
from bench.moto_view import MotoMeter, MotoView
from bench.stats import Row, latency_row
from bench.world import World, approve_bodies, card_timestamps, job_times, post, request_ids, settle
from devtools.stack import Stack

POOL = "dl"
STEP_S = 2  # one wave of approvals every STEP_S seconds, each wave's grants STEP_S seconds shorter
POLL_S = 0.02  # how often moto's rules are looked at: a gone time is at most this late
LEARN_S = 0.2  # how often new rules (and their lease ends) are looked for while grants are being applied


@dataclass
class Wave:
    """Requests of one duration, approved together at `at` (epoch seconds)."""

    duration_s: int
    at: float = 0.0
    ids: list[str] = field(default_factory=list)
    clicks: LoadResult | None = None


@dataclass
class DeadlineWatch:
    """Per request: its rule at moto, its lease end as the rule's tag says, and when the rule was first seen gone."""

    rules: dict[str, str] = field(default_factory=dict)
    ends: dict[str, float] = field(default_factory=dict)
    gone: dict[str, float] = field(default_factory=dict)

    def learn(self, view: MotoView) -> None:
        for request_id, rule in view.leases().items():
            if request_id not in self.rules:
                self.rules[request_id] = rule.rule_id
                self.ends[request_id] = rule.ends_at.timestamp()

    def note_gone(self, present: set[str], now: float) -> None:
        for request_id, rule_id in self.rules.items():
            if rule_id not in present and request_id not in self.gone:
                self.gone[request_id] = now


def waves_of(world: World, stack: Stack, count: int, shortest_s: int, longest_s: int) -> list[Wave]:
    """File `count` requests in waves of decreasing duration (longest first), and wait for their approval cards."""
    waves = [Wave(duration) for duration in range(longest_s, shortest_s - 1, -STEP_S)]
    sizes = [count // len(waves) + (index < count % len(waves)) for index in range(len(waves))]
    bodies, start = [], 0
    for wave, size in zip(waves, sizes, strict=True):
        bodies += world.commands(POOL, size, f"{wave.duration_s}s", start=start)
        start += size
    ids = request_ids(post(stack, bodies, concurrency=20))
    start = 0
    for wave, size in zip(waves, sizes, strict=True):
        wave.ids, start = ids[start : start + size], start + size
    return waves


def approve_in_waves(stack: Stack, waves: list[Wave], cards: dict[str, str]) -> list[threading.Thread]:
    """Approve wave k at t0 + k * STEP_S, each from a thread of its own, so that every grant ends near t0 + longest."""
    t0 = time.time() + 1.0

    def approve(wave: Wave) -> None:
        time.sleep(max(0.0, wave.at - time.time()))
        wave.clicks = post(stack, approve_bodies(wave.ids, cards), concurrency=len(wave.ids))

    threads = []
    for index, wave in enumerate(waves):
        wave.at = t0 + index * STEP_S
        threads.append(threading.Thread(target=approve, args=(wave,), name=f"wave-{index}", daemon=True))
        threads[-1].start()
    return threads


@dataclass
class DeadlineResult:
    """One deadline run's rows, and its samples for the goals and the pictures (seconds)."""

    rows: list[Row]
    differences_s: list[float]  # rule gone - approved end, one a grant gone
    cut_short_s: list[float]  # end - gone, for the grants gone by their end
    ends_spread_s: float  # last approved end - first (whole seconds): how close together the grants ended


def revoke_deadline(
    stack: Stack, world: World, count: int, shortest_s: int, longest_s: int, label: str = ""
) -> DeadlineResult:
    """`count` grants ending within a few seconds of each other; for each, rule gone at moto - approved end.

    The requests are filed with durations from `longest_s` down to `shortest_s`, STEP_S apart, and
    approved in waves STEP_S apart, longest first: each grant's end (its grant time + its duration,
    cut to the second) then falls near the same moment, and every grant is applied well before the
    workers' revoke leads (JIT_REVOKE_LEAD + the jobs ahead at the measured costs) open.
    """
    waves = waves_of(world, stack, count, shortest_s, longest_s)
    ids = [rid for wave in waves for rid in wave.ids]
    cards = card_timestamps(stack, ids, timeout=60 + count / 10)
    view = MotoView(world.group_ids(POOL))
    watch = DeadlineWatch()
    threads = approve_in_waves(stack, waves, cards)
    last_wave = waves[-1].at
    give_up = waves[0].at + longest_s + 60
    learned_at = 0.0
    with contextlib.ExitStack() as metering:
        meter: MotoMeter | None = None
        while time.time() < give_up:
            now = time.time()
            if len(watch.rules) < len(ids) and now - learned_at >= LEARN_S:
                watch.learn(view)
                learned_at = now
            if meter is None and (len(watch.rules) == len(ids) or now > last_wave + 5):
                meter = metering.enter_context(MotoMeter())  # from here on, moto's CPU is the revokes'
                log(f"deadline: {len(watch.rules)}/{len(ids)} granted, {now - last_wave:.1f}s after the last wave")
            watch.note_gone(view.rule_ids(), time.time())
            if (
                watch.rules
                and len(watch.gone) == len(watch.rules)
                and (len(watch.rules) == len(ids) or now > last_wave + 10)
            ):
                break
            time.sleep(POLL_S)
    for thread in threads:
        thread.join()
    settle(stack)  # every revoke job has recorded its grants' ends: RQ has each job's times
    bad_clicks = sum(1 for wave in waves for status in (wave.clicks.statuses if wave.clicks else []) if status != 200)
    rows = deadline_rows(stack, watch, count, bad_clicks, meter, label)
    differences = [watch.gone[rid] - end for rid, end in watch.ends.items() if rid in watch.gone]
    spread = max(watch.ends.values(), default=0.0) - min(watch.ends.values(), default=0.0)
    return DeadlineResult(rows, differences, [-d for d in differences if d <= 0], spread)


def deadline_rows(
    stack: Stack, watch: DeadlineWatch, count: int, bad_clicks: int, meter: MotoMeter | None, label: str
) -> list[Row]:
    """The figure and its stages, from the watch and RQ's record of each grant's `revoke_expired` job."""
    ends = watch.ends
    differences = [ms(watch.gone[rid] - end) for rid, end in ends.items() if rid in watch.gone]
    early = [-difference for difference in differences if difference <= 0]
    late = sum(1 for difference in differences if difference > 0)
    rq = redis.Redis.from_url(stack.redis.url)
    queued_before_end, waited, working, after, enqueued = [], [], [], [], []
    batches: dict[str, int] = {}
    leads: list[float] = []
    costs: set[tuple[float, float, float, float, int]] = set()
    for request_id, end in ends.items():
        raw = rq.get(f"jit:revoke-job:{request_id}")  # the job the workers' loop queued for this grant
        if raw is None:
            continue
        job_id = raw.decode()
        batches[job_id] = batches.get(job_id, 0) + 1
        job = job_times(rq, job_id)
        gone = watch.gone.get(request_id)
        if job.enqueued and job.started and job.ended and gone:
            enqueued.append(job.enqueued)
            queued_before_end.append(ms(end - job.enqueued))
            waited.append(ms(job.started - job.enqueued))
            working.append(ms(gone - job.started))
            after.append(ms(job.ended - gone))
        with contextlib.suppress(NoSuchJobError):
            meta = Job.fetch(job_id, connection=rq).meta
            leads.append(1000 * float(meta.get("lead", "nan")))
            costs.add(
                (
                    float(meta.get("wait_s", "nan")),
                    float(meta.get("job_s", "nan")),
                    float(meta.get("first_record_s", "nan")),
                    float(meta.get("grant_s", "nan")),
                    int(meta.get("workers", 0)),
                )
            )
    spread = max(ends.values(), default=0) - min(ends.values(), default=0)
    gone_times = sorted(watch.gone.values())
    # From the first rule seen gone to the last, at least one poll apart (all may go between two polls).
    rate = len(gone_times) / max(gone_times[-1] - gone_times[0], POLL_S) if gone_times else 0.0
    never = len(watch.rules) - len(watch.gone)
    note = f"{len(ends)} grants, their ends in {spread + 1:.0f} whole second(s), 3 workers; {late} gone after their end"
    if len(watch.rules) < count or never or bad_clicks:
        note += f"; {count - len(watch.rules)} never seen granted, {never} never gone, {bad_clicks} clicks not 200"
    moto = (
        Row(
            "   moto CPU while revoking",
            f"{sum(meter.seconds.values()):.1f} s",
            "",
            meter.text(len(gone_times) or 1, "revoke"),
        )
        if meter is not None
        else Row("   moto CPU while revoking", "not measured")
    )
    sizes = sorted(batches.values())
    title = "7. revoke vs deadline: rule gone - approved end" + (f", {label}" if label else "")
    return [
        latency_row(title, differences, "p99 <= 0", note),
        latency_row(
            "   access cut short (end - gone, if gone early)",
            early,
            "p50 <= 2000",
            note=f"{len(early)} of {len(differences)} gone by their end",
        ),
        latency_row(
            "   revoke job queued before the end",
            queued_before_end,
            note="each grant's lead: JIT_REVOKE_LEAD 1 s + the jobs ending at or before it, on the workers",
        ),
        latency_row(
            "   lead its job was queued at",
            leads,
            note=assumed(costs),
        ),
        Row(
            "   revoke_expired jobs (grants each)",
            f"{len(sizes)} jobs",
            "",
            f"sizes {', '.join(map(str, sizes))}; queued first → last "
            + (f"{max(enqueued) - min(enqueued):.2f} s" if enqueued else "never"),
        ),
        latency_row("   revoke job waits in queue", waited),
        latency_row(
            "   job started → rule gone", working, note="worker: locks, one listing, one revoke call a hundred rules"
        ),
        latency_row(
            "   rule gone → job ended",
            after,
            note="worker: one listing to verify, then each grant's record, audit, activity, notice",
        ),
        Row(
            "   revokes done per second",
            f"{rate:.1f}/s",
            "",
            f"first to last rule gone: {gone_times[-1] - gone_times[0]:.2f} s" if gone_times else "",
        ),
        moto,
    ]


def assumed(costs: set[tuple[float, float, float, float, int]]) -> str:
    """The costs the leads assumed (measured over the last minute, from the jobs' meta), as ranges."""
    if not costs:
        return "no job meta"

    def span(values: list[float], unit: str) -> str:
        low, high = min(values), max(values)
        return f"{low:.1f}{unit}" if high - low < 0.05 else f"{low:.1f}-{high:.1f}{unit}"

    waits, jobs, firsts, grants, workers = zip(*costs, strict=True)
    return (
        f"the leads assumed a wait in the queue of {span([1000 * w for w in waits], ' ms')}, "
        f"a job {span([1000 * j for j in jobs], ' ms')} until access gone, "
        f"its first record {span([1000 * f for f in firsts], ' ms')}, each further one "
        f"{span([1000 * g for g in grants], ' ms')}; {span([float(w) for w in workers], '')} workers"
    )
