"""The composition root: what a process shares, made once at start from the settings (policy, store, audit, queues)."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from rq import Queue, Retry

from jit_lb.access.approvers import Approvers, GroupDirectory
from jit_lb.access.connections import WORKER, Timeouts, connect
from jit_lb.access.errors import MfaKeyError, PagerDutyConfigError, PolicyError
from jit_lb.access.mfa import MfaStore, fernet
from jit_lb.access.oncall import PagerDuty, pagerduty_for
from jit_lb.access.policy import Policy, load_policy
from jit_lb.access.store import RequestStore
from jit_lb.audit.writer import AuditLog
from jit_lb.metrics import Metrics
from jit_lb.settings import Settings

log = structlog.get_logger("jit_lb.runtime")


@dataclass
class Runtime:
    """Everything a process shares, made once at start from the settings; the policy is read again on SIGHUP."""

    settings: Settings
    policy: Policy
    store: RequestStore
    audit: AuditLog
    approvers: Approvers
    mfa: MfaStore
    queue: Queue  # grants, revokes and the sweep's follow-ups
    notices: Queue  # Slack posts of outcomes; workers take them when `queue` is empty
    pagerduty: PagerDuty | None = None  # asked live for auto-approval from on-call; None when no target does
    metrics: Metrics | None = None  # None with JIT_METRICS=false

    def reload_policy(self) -> bool:
        """Read the policy file again (SIGHUP); an invalid one is refused and audited, and the one in force stays.

        What a grant applied is recorded with it, so a policy without its target, or with another
        spec for it, ends it (reason `policy`) rather than orphaning it: the workers' reconciler does that.
        """
        path = self.settings.jit_policy_file
        try:
            policy = load_policy(path)
            if policy.mfa_targets and self.mfa.cipher is None:
                fernet(None, policy.mfa_targets)
            pagerduty = self.pagerduty or _pagerduty(self.settings, policy)
        except (PolicyError, MfaKeyError, PagerDutyConfigError) as err:
            self.audit.record("policy.refused", actor="system", file=path, why=str(err), must=True)
            log.error("policy reload refused; the policy in force stays", error=str(err))
            return False
        self.policy = policy
        self.pagerduty = pagerduty
        self.audit.record("policy.reloaded", actor="system", file=path, targets=sorted(policy.targets), must=True)
        log.info("policy reloaded", targets=len(policy.targets))
        return True

    @property
    def revoke_retry(self) -> Retry:
        """RQ's retries of a failed revoke (JIT_REVOKE_RETRY_INTERVALS); the sweep keeps trying after them."""
        intervals = self.settings.revoke_retry_intervals
        return Retry(max=len(intervals), interval=intervals)


def build_runtime(settings: Settings, directory: GroupDirectory, timeouts: Timeouts = WORKER) -> Runtime:
    """Load the policy and connect to Redis and the audit log; raises PolicyError on a bad policy.

    `directory` looks usergroups up (Slack, in both processes); the core only asks it for members.
    `timeouts`: how long the process waits for Redis (the web, which answers Slack, waits less).
    """
    policy = load_policy(settings.jit_policy_file)
    key = settings.jit_mfa_key.get_secret_value() if settings.jit_mfa_key else None
    cipher = fernet(key, policy.mfa_targets)
    pagerduty = _pagerduty(settings, policy)
    client = connect(settings.redis, timeouts)
    runtime = Runtime(
        settings=settings,
        policy=policy,
        store=RequestStore(client, settings.redis),
        audit=AuditLog.open(settings.jit_audit_log),
        approvers=Approvers(directory, lambda: runtime.policy),
        mfa=MfaStore(client, cipher),
        queue=Queue(settings.jit_queue, connection=client),
        notices=Queue(f"{settings.jit_queue}-notices", connection=client),
        pagerduty=pagerduty,
    )
    if settings.jit_metrics:
        runtime.metrics = Metrics(lambda: runtime.policy, settings.jit_sweep_interval)
        runtime.metrics.read_state_from(runtime.store)
        runtime.audit.observer = runtime.metrics
        runtime.store.observer = runtime.metrics
    return runtime


def _pagerduty(settings: Settings, policy: Policy) -> PagerDuty | None:
    token = settings.pagerduty_token.get_secret_value() if settings.pagerduty_token else None
    return pagerduty_for(token, settings.pagerduty_api_url, policy.on_call_targets)
