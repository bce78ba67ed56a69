"""An enrolment whose DM Slack rate-limits in the web: the secret still leaves Slack once the enrolment is confirmed,
and never sits in the queue (a security review's finding)."""

from __future__ import annotations

from collections.abc import Iterator

import pyotp
import pytest

from bot.service.common import defer_to_workers
from bot.service.mfa import Verified
from slack_out.poster import Notifier, web_client
from tests.service.test_mfa import fixture_mfa_world, secret_from_dm
from tests.service.world import World
from workers import context, enrolments

__all__ = ["fixture_mfa_world"]


@pytest.fixture(name="web_and_worker")
def fixture_web_and_worker(mfa_world: World) -> Iterator[World]:
    """The web's notifier waits out no 429 and hands a rate-limited call to the workers (as bot/app.py wires it);
    the worker's client waits out Slack's Retry-After."""
    world = mfa_world
    waiting = world.notifier.client
    context.install(context.WorkerContext(world.rt, Notifier(waiting, lambda: world.rt.policy)))
    world.notifier.client = web_client(world.rt.settings, wait_on_rate_limits=False)
    world.notifier.defer = defer_to_workers(world.rt)
    yield world
    world.notifier.client, world.notifier.defer = waiting, None


def run_jobs_now(world: World) -> list[str]:
    """Every job queued, scheduled ones too (as after their Retry-After), run by a worker here; the arguments of
    each, as they sat in Redis."""
    notices = world.rt.notices
    registry = notices.scheduled_job_registry
    for job_id in registry.get_job_ids():
        job = notices.fetch_job(job_id)
        registry.remove(job_id)
        assert job is not None
        notices.enqueue_job(job)
    held = [repr((job.args, job.kwargs)) for job in notices.jobs]
    world.work()
    return held


def test_an_enrolment_dm_rate_limited_in_the_web_leaves_slack_once_confirmed(web_and_worker: World) -> None:
    """chat.postMessage answers 429 when the web sends the enrolment's DM: the DM still reaches the person, its
    secret is in no queued job, and once the first code confirms the enrolment Slack holds nothing of it."""
    world = web_and_worker
    reply = world.mfa.command("U0DEV1", ["enroll"])
    assert reply.view is not None
    world.slack.fail_next("chat.postMessage", status=429, retry_after=1)
    world.mfa.send_enrolment("U0DEV1")

    held = run_jobs_now(world)
    secret = secret_from_dm(world, "U0DEV1")
    assert [args for args in held if secret in args] == []

    result = world.mfa.verify("U0DEV1", reply.view["private_metadata"], pyotp.TOTP(secret).now())
    assert isinstance(result, Verified) and result.enrolled
    assert enrolments.forget_enrolment("U0DEV1") == "forgotten"
    assert world.slack.holding(secret) == []
