"""What a process shares, made once at start from the settings: policy, store, audit log, Slack, queue."""

from __future__ import annotations

from dataclasses import dataclass

from rq import Queue

from bot.access.audit import AuditLog
from bot.access.policy import Policy, load_policy
from bot.access.store import RequestStore, connect
from bot.notify import Notifier
from bot.settings import Settings


@dataclass(frozen=True)
class Runtime:
    """Everything a process shares, made once at start from the settings."""

    settings: Settings
    policy: Policy
    store: RequestStore
    audit: AuditLog
    notifier: Notifier
    queue: Queue
    notices: Queue  # Slack posts of outcomes; workers take them when `queue` is empty


def build_runtime(settings: Settings) -> Runtime:
    """Load the policy and connect to Redis, Slack and the audit log; raises PolicyError on a bad policy."""
    policy = load_policy(settings.jit_policy_file)
    client = connect(settings.redis_url)
    return Runtime(
        settings=settings,
        policy=policy,
        store=RequestStore(client, settings.redis_url),
        audit=AuditLog.open(settings.jit_audit_log),
        notifier=Notifier(settings.slack_bot_token.get_secret_value(), settings.slack_api_url, policy),
        queue=Queue(settings.jit_queue, connection=client),
        notices=Queue(f"{settings.jit_queue}-notices", connection=client),
    )
