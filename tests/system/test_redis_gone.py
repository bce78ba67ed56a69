"""Redis killed (SIGKILL) or frozen (SIGSTOP) while grants are active: access still ends on time, the workers still stop
when asked, and the records arrive once it is back."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from devtools.faults import PAUSE_AFTER_APPLY
from devtools.stack import Process, Stack
from tests.helpers import ask, click, granted, lease_end, rules_of, stack_policy

pytestmark = pytest.mark.slow

SWEEP = 5.0
SLACK_WAITS = 3.0  # seconds Slack waits for a command's answer


@pytest.fixture(name="stack")
def fixture_stack() -> Iterator[Stack]:
    with Stack(policy=stack_policy, sweep_interval=SWEEP, workers=2, durable_redis=True) as stack:
        yield stack


def test_access_ends_with_redis_gone_and_is_recorded_once_it_is_back(stack: Stack) -> None:
    """Two grants ending while Redis is dead: their rules go by end + JIT_SWEEP_INTERVAL, the web says jit-lb is
    unavailable and /healthz is 503; once Redis is back each grant is recorded revoked (reason sweep) once."""
    first = granted(stack, "U0DEV1", "request lb-prod 12s redis will die")
    second = granted(stack, "U0DEV2", "request lb-prod 15s redis will die too")
    ends = {request_id: lease_end(stack, request_id) for request_id in (first, second)}
    stack.redis.kill()

    answer = stack.client().command("U0DEV2", "request lb-prod 5m while redis is dead")
    assert answer.status == 200
    assert "jit-lb is unavailable" in answer.json()["text"]
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"http://127.0.0.1:{stack.web_ports[0]}/healthz", timeout=10)
    assert caught.value.code == 503
    caught.value.close()

    for request_id, end in sorted(ends.items(), key=lambda item: item[1]):
        stack.wait_for(lambda rid=request_id: not rules_of(stack, rid), timeout=60, what=f"the rules of {request_id}")
        assert (datetime.now(UTC) - end).total_seconds() <= SWEEP
    removed = [r for r in stack.audit() if r["event"] == "sweep.removed"]
    assert {rid for r in removed for rid in r["leases_dropped"]} == set(ends)
    assert all("grant.revoked" not in stack.events(request_id) for request_id in ends)

    stack.redis.start()
    for request_id in ends:
        stack.wait_for(lambda rid=request_id: "grant.revoked" in stack.events(rid), timeout=30, what="grant.revoked")
    after = granted(stack, "U0DEV1", "request lb-prod 1m after redis is back")
    for request_id in ends:
        counts = Counter(stack.events(request_id))
        assert counts["grant.revoked"] == 1, counts
        (revoked,) = [r for r in stack.audit(request_id) if r["event"] == "grant.revoked"]
        assert revoked["reason"] == "sweep"
    assert rules_of(stack, after)


@pytest.fixture(name="pausing")
def fixture_pausing() -> Iterator[Stack]:
    """One worker whose grant jobs wait 3 s between the load balancer and the record: Redis can go mid-job."""
    extra = {PAUSE_AFTER_APPLY: "3"}
    with Stack(policy=stack_policy, sweep_interval=SWEEP, durable_redis=True, extra_env=extra) as stack:
        yield stack


def _applied_mid_job(stack: Stack) -> tuple[str, datetime]:
    request_id, _ = ask(stack, "U0DEV1", "request lb-prod 8s redis goes mid job")
    assert click(stack, "U0APPROVER1", "jit_approve", request_id) == 200
    stack.wait_for(lambda: rules_of(stack, request_id), what="the rules applied before the pause")
    return request_id, lease_end(stack, request_id)


def _stops_on_sigterm(worker: Process) -> int | None:
    """SIGTERM, then the exit status within 20 s (None: still running)."""
    assert worker.popen is not None
    worker.popen.send_signal(signal.SIGTERM)
    try:
        return worker.popen.wait(timeout=20)
    except subprocess.TimeoutExpired:
        return None


def test_redis_killed_mid_job_the_worker_keeps_sweeping_and_stops_when_asked(pausing: Stack) -> None:
    """Redis SIGKILLed while a grant job is between the load balancer and its record: RQ's worker gives up on the
    job, and the worker process lives on, sweeps the rules away by their end, and stops on SIGTERM."""
    request_id, _ = _applied_mid_job(pausing)
    pausing.redis.kill()
    (worker,) = pausing.by_prefix("worker")

    pausing.wait_for(lambda: not rules_of(pausing, request_id), timeout=40, what=f"the rules of {request_id} gone")
    assert worker.alive()
    assert _stops_on_sigterm(worker) == 0


def test_redis_frozen_the_worker_keeps_sweeping_and_stops_when_asked(pausing: Stack) -> None:
    """Redis SIGSTOPped (it accepts connections and never answers, as behind a partition) mid grant job: the web still
    answers within Slack's 3 seconds that jit-lb is unavailable, the worker sweeps the rules away by their end all the
    same, and stops on SIGTERM although every Redis call hangs."""
    request_id, _ = _applied_mid_job(pausing)
    redis_pid = pausing.redis.pid
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        answer = pausing.client().command("U0DEV2", "request lb-prod 5m while redis is frozen", timeout=SLACK_WAITS)
        assert "jit-lb is unavailable" in answer.json()["text"]
        (worker,) = pausing.by_prefix("worker")
        pausing.wait_for(lambda: not rules_of(pausing, request_id), timeout=40, what=f"the rules of {request_id} gone")
        assert _stops_on_sigterm(worker) == 0
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    removed = [r for r in pausing.audit() if r["event"] == "sweep.removed"]
    assert {rid for r in removed for rid in r["leases_dropped"]} == {request_id}
