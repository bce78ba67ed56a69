"""The benchmark's policy (targets on security groups of their own) and the moves of a user and an approver."""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job

from bench.load import LoadResult, run_load
from devtools.moto_server import Network
from devtools.slack_client import click_payload, command_body, form_body
from devtools.stack import SIGNING_SECRET, Stack

APPROVALS = "C0BENCHAPPROVALS"
REQUESTER = "U0DEV1"
SECOND_REQUESTER = "U0DEV2"
APPROVER = "U0APPROVER1"
RULES_PER_GROUP = 50  # moto refuses a 61st rule in a VPC security group
ID = re.compile(r"jit-[a-z0-9]{6}")
CARD = re.compile(r"^Access request (jit-[a-z0-9]{6}):")


def group_count(grants: int) -> int:
    return max(1, -(-grants // RULES_PER_GROUP))


def target_policy(group_id: str, description: str = "bench target") -> dict[str, Any]:
    """A target on one security group, port 443, that lets the requester name an address."""
    return {
        "description": description,
        "default_duration": "30m",
        "min_duration": "1s",
        "max_duration": "2h",
        "approvers": [APPROVER],
        "allow_requester_ip": True,
        "allow_private_ip": True,  # each grant names its own 10.x host, so that each is a rule of its own
        "grant": {"kind": "aws_security_group", "region": "us-east-1", "security_group_id": group_id, "ports": [443]},
    }


def policy_document(targets: dict[str, str]) -> dict[str, Any]:
    """The whole policy for targets named to their security groups."""
    return {
        "approver_channel": APPROVALS,
        "pending_ttl": "15m",
        "principals": {
            REQUESTER: {"source_cidr": "203.0.113.7/32"},
            APPROVER: {"source_cidr": "192.0.2.10/32"},
            SECOND_REQUESTER: {"source_cidr": "203.0.113.8/32"},  # bench/metrics_cost.py's load, a limit of its own
        },
        # One bench requester stands for a whole company's engineers: the per-person limits would stop the load.
        "limits": {"pending_per_user": 10_000, "commands_per_minute": 100_000},
        "targets": {name: target_policy(group_id) for name, group_id in targets.items()},
    }


def create_groups(stack: Stack, vpc_id: str, prefix: str, count: int) -> list[str]:
    ec2 = stack.moto.client("ec2")
    return [
        ec2.create_security_group(GroupName=f"bench-{prefix}-{i}", Description="bench", VpcId=vpc_id)["GroupId"]
        for i in range(count)
    ]


@dataclass
class World:
    """Pools of targets, one security group each, sized so that no group passes RULES_PER_GROUP grants."""

    pools: dict[str, int]  # pool name -> how many grants it will hold at once
    stack: Stack | None = None
    targets: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # pool -> [(target, group id)]
    _next_host: int = 0

    def policy(self, network: Network) -> dict[str, Any]:
        assert self.stack is not None, "attach the stack before it starts"
        for pool, grants in self.pools.items():
            groups = create_groups(self.stack, network.vpc_id, pool, group_count(grants))
            self.targets[pool] = [(f"{pool}-{i:02d}", group_id) for i, group_id in enumerate(groups)]
        named = {name: group_id for pairs in self.targets.values() for name, group_id in pairs}
        return policy_document(named)

    def group_ids(self, pool: str) -> set[str]:
        return {group_id for _, group_id in self.targets[pool]}

    def host(self) -> str:
        """A fresh /32 for each grant, so that each grant is a rule of its own."""
        self._next_host += 1
        return str(ipaddress.IPv4Address("10.0.0.0") + self._next_host)

    def commands(self, pool: str, count: int, duration: str, start: int = 0) -> list[str]:
        """`/jit request` bodies spread round-robin over the pool's targets, from its `start`-th request on."""
        pairs = self.targets[pool]
        return [
            command_body(REQUESTER, f"request {pairs[i % len(pairs)][0]} {duration} --ip {self.host()} bench {i}")
            for i in range(start, start + count)
        ]


def post(stack: Stack, bodies: list[str], concurrency: int, web: int = 0) -> LoadResult:
    return run_load(f"http://127.0.0.1:{stack.web_ports[web]}/slack/events", SIGNING_SECRET, bodies, concurrency)


def request_ids(result: LoadResult) -> list[str]:
    """The request id each `/jit request` answer names; raise if any failed."""
    ids = []
    for status, text in zip(result.statuses, result.texts, strict=True):
        match = ID.search(text)
        if status != 200 or match is None:
            raise RuntimeError(f"a /jit request failed: HTTP {status} {text[:300]}")
        ids.append(match.group(0))
    return ids


def card_timestamps(stack: Stack, ids: list[str], timeout: float) -> dict[str, str]:
    """Each request's approval-card ts, waiting (at most `timeout`) for the web process to post them all."""
    wanted, found = set(ids), {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in stack.slack.messages(APPROVALS):
            match = CARD.match(str(message.get("text", "")))
            if match and "thread_ts" not in message and match.group(1) in wanted:
                found[match.group(1)] = str(message["ts"])
        if len(found) == len(wanted):
            return found
        time.sleep(0.2)
    raise RuntimeError(f"only {len(found)} of {len(wanted)} approval cards were posted within {timeout}s")


def approve_bodies(ids: list[str], cards: dict[str, str]) -> list[str]:
    return [form_body(click_payload(APPROVER, "jit_approve", rid, APPROVALS, cards[rid])) for rid in ids]


def stamp(text: str) -> float:
    """An ISO timestamp from the audit log as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class AuditTail:
    """The audit log read incrementally: per request id, each event's epoch times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.events: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            if line.strip():
                record = json.loads(line)
                if record.get("request_id"):
                    self.events[record["request_id"]][record["event"]].append(stamp(record["ts"]))

    def count(self, request_id: str, event: str) -> int:
        return len(self.events.get(request_id, {}).get(event, []))

    def first(self, request_id: str, event: str) -> float | None:
        times = self.events.get(request_id, {}).get(event, [])
        return min(times) if times else None

    def wait(self, done: Callable[[AuditTail], bool], timeout: float, every: float = 0.05) -> bool:
        """Poll until `done(self)`, at most `timeout` seconds; whether it came true."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if done(self):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(every)


@dataclass(frozen=True)
class JobTimes:
    """When RQ enqueued, started and ended a job, as epoch seconds (None when unknown)."""

    enqueued: float | None
    started: float | None
    ended: float | None
    result: str | None = None


def job_times(client: redis.Redis, job_id: str) -> JobTimes:
    try:
        job = Job.fetch(job_id, connection=client)
    except NoSuchJobError:
        return JobTimes(None, None, None)
    result = job.return_value()

    def epoch(moment: datetime | None) -> float | None:
        if moment is None:
            return None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()

    return JobTimes(
        epoch(job.enqueued_at), epoch(job.started_at), epoch(job.ended_at), None if result is None else str(result)
    )


def settle(stack: Stack, timeout: float = 60.0) -> bool:
    """Wait until the workers have nothing queued or running, so that the next figure has the CPU to itself."""
    from rq import Queue
    from rq.registry import StartedJobRegistry

    client = redis.Redis.from_url(stack.redis.url)
    queues = [Queue(name, connection=client) for name in ("jit", "jit-notices")]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(queue.count == 0 and StartedJobRegistry(queue=queue).count == 0 for queue in queues):
            return True
        time.sleep(0.2)
    return False


def workers_through(stack: Stack, endpoint: str | None, count: int = 3, timeout: float = 60.0) -> None:
    """Restart the Stack's workers with their AWS calls sent to `endpoint` (the latency proxy), or to moto itself
    with None; wait until RQ lists `count` workers again."""
    from rq import Worker

    for process in stack.by_prefix("worker"):
        process.stop()
        stack.processes.remove(process)
    if endpoint is None:
        stack.extra_env.pop("AWS_ENDPOINT_URL", None)
    else:
        stack.extra_env["AWS_ENDPOINT_URL"] = endpoint
    client = redis.Redis.from_url(stack.redis.url)
    for _ in range(count):
        stack.start_worker()
    deadline = time.monotonic() + timeout
    while Worker.count(connection=client) != count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{Worker.count(connection=client)} workers registered, not {count}, after {timeout}s")
        time.sleep(0.2)
