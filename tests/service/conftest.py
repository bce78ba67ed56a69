"""One in-process jit-lb for each test: the web's services, the worker's jobs and notices, and the reconciler.

They run in the test process against real parts: the private Redis, moto in server mode (one for the
session, a security group of its own for each test) and the Slack stand-in on loopback. Jobs run when
a test calls them, or when it drains the queues with `World.work` (RQ's SimpleWorker, in burst mode).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet

from bot.service.commands import CommandService
from bot.service.forms import FormService
from bot.service.mfa import MfaService
from devtools.moto_server import MotoServer, Network
from devtools.slack_standin import TEST_TOKEN, SlackStandin
from jit_lb.settings import Settings
from slack_out.process import connect
from tests.service.world import DecisionsThenNotices, World, policy_of
from workers import context

MFA_KEY = Fernet.generate_key().decode()  # one for the session: tests may turn require_mfa on


@pytest.fixture(name="slack")
def fixture_slack() -> Iterator[SlackStandin]:
    """The Slack Web API stand-in, in this process on loopback, recording every call."""
    with SlackStandin() as standin:
        yield standin


@pytest.fixture(name="ec2", scope="session")
def fixture_ec2(moto: MotoServer) -> Any:
    """One EC2 client of moto's for the session (making a boto3 client costs tens of milliseconds)."""
    return moto.client("ec2")


@pytest.fixture(name="vpc_id", scope="session")
def fixture_vpc_id(ec2: Any) -> str:
    """One VPC for the session's security groups."""
    return str(ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"])


@pytest.fixture(name="network")
def fixture_network(ec2: Any, vpc_id: str) -> Network:
    """An empty security group of the test's own, for its grants to land in."""
    name = f"jit-service-{uuid.uuid4().hex[:12]}"
    group = ec2.create_security_group(GroupName=name, Description="jit-lb service tests", VpcId=vpc_id)
    return Network(vpc_id=vpc_id, security_group_id=group["GroupId"])


@pytest.fixture(name="world")
def fixture_world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    ec2: Any,
    network: Network,
    slack: SlackStandin,
) -> Iterator[World]:
    """jit-lb's runtime and notifier, installed as this process's worker context for the test.

    AWS_* (moto's endpoint and test credentials) are the session's, set by the `moto` fixture.
    """
    for key in list(os.environ):
        if key.startswith(("SLACK_", "JIT_", "REDIS_")):
            monkeypatch.delenv(key)
    policy_file = tmp_path / "policy.yml"
    policy_file.write_text(yaml.safe_dump(policy_of(network)), encoding="utf-8")
    audit_path = tmp_path / "audit.jsonl"
    settings = Settings(
        slack_bot_token=TEST_TOKEN,
        slack_api_url=slack.api_url,
        redis_url=redis_url,
        jit_policy_file=str(policy_file),
        jit_audit_log=str(audit_path),
        jit_queue=f"jit-{uuid.uuid4().hex[:8]}",
        jit_mfa_key=MFA_KEY,
    )
    rt, notifier = connect(settings)
    mfa = MfaService(rt, notifier)
    commands, decisions = CommandService(rt, mfa), DecisionsThenNotices(rt, notifier, mfa)
    context.install(context.WorkerContext(rt, notifier))
    try:
        yield World(
            rt=rt,
            notifier=notifier,
            slack=slack,
            ec2=ec2,
            network=network,
            audit_path=audit_path,
            mfa=mfa,
            commands=commands,
            decisions=decisions,
            forms=FormService(rt, notifier, commands, decisions, mfa),
        )
    finally:
        context.install(None)
        rt.store.redis.close()
