"""The in-process jit-lb a service test drives (`World`), its policy, and small readers of what Slack was sent."""

from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rq import SimpleWorker
from rq.registry import FailedJobRegistry

from bot.service.commands import CommandService
from bot.service.decisions import DecisionService
from bot.service.forms import FormService
from bot.service.mfa import MfaService
from devtools.moto_server import Network
from devtools.slack_standin import SlackStandin
from jit_lb.access import store
from jit_lb.access.requests import AccessRequest, Extension
from jit_lb.runtime import Runtime
from slack_out.poster import Notifier
from workers import context, jobs, notices

APPROVALS = "C0APPROVALS"
DEVS = "C0DEVS"
DEV1_CIDR = "203.0.113.7/32"
DEV2_CIDR = "198.51.100.0/28"
NETOPS = "S0NETOPS"
# A security group id that moto never made: grants on it fail.
MISSING_GROUP = "sg-0123456789abcdef0"
# The store's list of ids whose cards are to be posted; private to the store, read here without blocking.
OUTBOX_KEY = store._OUTBOX


def policy_of(network: Network) -> dict[str, Any]:
    """A small policy: one-approval and two-approval targets on the test's group, and one on a missing group."""
    sg = network.security_group_grant([443, 8443])
    limits = {"default_duration": "30m", "min_duration": "1m", "max_duration": "1h"}
    return {
        "approver_channel": APPROVALS,
        "pending_ttl": "15m",
        "principals": {
            "U0DEV1": {"source_cidr": DEV1_CIDR},
            "U0DEV2": {"source_cidr": DEV2_CIDR},
        },
        "targets": {
            "lb-prod": {
                "description": "Production public ALB",
                **limits,
                "approvers": ["U0APPROVER1", "U0APPROVER2", NETOPS],
                "grant": sg,
            },
            "lb-two": {
                **limits,
                "approvers": ["U0APPROVER1", "U0APPROVER2"],
                "approvals_required": 2,
                "requesters": ["U0DEV1"],
                "grant": sg,
            },
            "lb-broken": {
                **limits,
                "approvers": ["U0APPROVER3"],
                "grant": {**sg, "security_group_id": MISSING_GROUP},
            },
        },
    }


def post_notices(rt: Runtime, homes: bool = True) -> None:
    """Run the queued notices in this thread, oldest first, as a worker's loop does when no grant or revoke waits;
    then (`homes`) wait for the App Homes they handed to the homes' thread.

    Each is taken off the queue in one step, so two threads running this never run one twice.
    """
    while (raw := rt.store.redis.lpop(rt.notices.key)) is not None:
        job = rt.notices.fetch_job(raw.decode() if isinstance(raw, bytes) else str(raw))
        if job is not None:
            job.func(*job.args, **job.kwargs)
    if homes:
        context.current().homes.settled()


class DecisionsThenNotices(DecisionService):
    """The web's decisions, each followed by a worker posting the notices it queued (card, thread, DMs), as the
    workers' notices loop does a moment later in the real processes; the grant queue is left to the test."""

    def decide(self, *args: Any, **kwargs: Any) -> None:
        super().decide(*args, **kwargs)
        post_notices(self.rt, homes=False)  # a test reading homes waits for them (work, homes_settled)

    def review(self, *args: Any, **kwargs: Any) -> None:
        super().review(*args, **kwargs)
        post_notices(self.rt, homes=False)


@dataclass
class World:
    """The parts of one test's jit-lb, and the moves a test makes with them."""

    rt: Runtime
    notifier: Notifier
    slack: SlackStandin
    ec2: Any  # a boto3 EC2 client of moto's, to look at the group as AWS has it
    network: Network
    audit_path: Path
    mfa: MfaService
    commands: CommandService
    decisions: DecisionService
    forms: FormService

    def edit_policy(self, change: Any) -> None:
        """Rewrite the policy file with `change(policy)` applied, then read it again as SIGHUP does."""
        path = Path(self.rt.settings.jit_policy_file)
        policy = yaml.safe_load(path.read_text(encoding="utf-8"))
        change(policy)
        path.write_text(yaml.safe_dump(policy), encoding="utf-8")
        assert self.rt.reload_policy()

    # --- the web ------------------------------------------------------------------------------

    async def ask(self, user: str, text: str) -> str:
        """`/jit <text>` as `user` in the developers' channel; the ephemeral answer's text."""
        return (await self.commands.command(user, text, DEVS)).text

    async def request(self, user: str = "U0DEV1", text: str = "request lb-prod 30m debugging 502s") -> AccessRequest:
        """A new request whose card a worker has posted, as the outbox loop does it."""
        request_id = id_in(await self.ask(user, text))
        assert [request_id] == self.outbox()
        assert notices.announce(request_id) == "posted"
        return self.rt.store.get(request_id)

    def click(self, user: str, action: str, request: AccessRequest, ts: str | None = None) -> None:
        """A click on the request's card (at `ts`, when given, instead of where the card is)."""
        assert request.card_channel is not None and request.card_ts is not None
        self.decisions.decide(user, action, request.id, (request.card_channel, ts or request.card_ts))

    async def granted(self, user: str = "U0DEV1", text: str = "request lb-prod 30m debugging 502s") -> AccessRequest:
        """A request approved by an approver and granted at moto by its job run directly.

        The queues are emptied after: the queued twin of the grant and the `tell` of its outcome are not the
        test's subject, which starts from a plain granted request.
        """
        request = await self.request(user, text)
        self.click("U0APPROVER1", "jit_approve", request)
        assert jobs.grant_access(request.id) == "granted"
        self.rt.queue.empty()
        self.rt.notices.empty()
        return self.rt.store.get(request.id)

    def refused_extension(self, request: AccessRequest, answer: str, why: str) -> None:
        """The extend's answer says `why`, and nothing was kept: no extension waits, no card is queued."""
        assert why in answer, answer
        assert self.rt.store.get(request.id).extension is None
        assert self.outbox() == []

    async def approved_extension(self, request: AccessRequest, minutes: int = 10) -> Extension:
        """`/jit extend` by the requester, its card posted by a worker, one approver's click; the extension clicked."""
        answer = await self.ask("U0DEV1", f"extend {request.id} {minutes}m still digging")
        assert "Asked to extend" in answer, answer
        self.outbox()
        assert notices.announce(request.id) == "posted"
        extension = self.rt.store.get(request.id).extension
        assert extension is not None and extension.card_ts is not None
        self.decisions.decide("U0APPROVER2", "jit_approve", request.id, (APPROVALS, str(extension.card_ts)))
        return extension

    # --- the worker ---------------------------------------------------------------------------

    def outbox(self) -> list[str]:
        """Take every request id waiting in the card outbox, oldest first.

        The store only offers a blocking take (BRPOP, whose timeout Redis rounds up to a tenth of a second or
        more), so the test pops the outbox's list itself, from the end `next_to_announce` takes from.
        """
        taken = []
        while (raw := self.rt.store.redis.rpop(OUTBOX_KEY)) is not None:
            taken.append(raw.decode() if isinstance(raw, bytes) else str(raw))
        return taken

    def work(self) -> None:
        """Run every queued job (grants and revokes first, then notices) in this process; fail on a failed job."""
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            SimpleWorker([self.rt.queue, self.rt.notices], connection=self.rt.store.redis).work(
                burst=True, logging_level="WARNING"
            )
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
        context.current().homes.settled()  # the App Homes the jobs handed to the homes' thread
        for queue in (self.rt.queue, self.rt.notices):
            registry = FailedJobRegistry(queue=queue)
            failed = [queue.fetch_job(job_id) for job_id in registry.get_job_ids()]
            why = [(job.id, getattr(job.latest_result(), "exc_string", None)) for job in failed if job is not None]
            assert why == []

    def post_notices(self) -> None:
        """Run the queued notices (card edits, thread replies, DMs) in this thread, oldest first, as a worker does."""
        post_notices(self.rt)

    def post_notices_only(self) -> None:
        """`post_notices`, not waiting for the App Homes they hand to the homes' thread."""
        post_notices(self.rt, homes=False)

    def homes_settled(self) -> bool:
        """Wait until the workers' App Homes are published (those waiting for Slack's Retry-After aside); False
        after 10 s."""
        return context.current().homes.settled()

    def queued(self) -> list[tuple[str | None, tuple[Any, ...]]]:
        """The grant and revoke queue as (function name, arguments)."""
        return [(job.func_name, tuple(job.args)) for job in self.rt.queue.jobs]

    def notices_queued(self) -> list[tuple[str, ...]]:
        """The notices queue as (request id, notice) pairs."""
        return [tuple(job.args) for job in self.rt.notices.jobs]

    # --- what the parts saw -------------------------------------------------------------------

    def audit(self, request_id: str | None = None) -> list[dict[str, Any]]:
        """The audit log's records, all or one request's."""
        lines = self.audit_path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        return [r for r in records if request_id is None or r.get("request_id") == request_id]

    def events(self, request_id: str | None = None) -> list[str]:
        return [record["event"] for record in self.audit(request_id)]

    def record(self, event: str, request_id: str | None = None) -> dict[str, Any]:
        """The one audit record of `event` (for `request_id`, when given)."""
        found = [r for r in self.audit(request_id) if r["event"] == event]
        assert len(found) == 1, found
        return found[0]

    def ingress(self) -> list[dict[str, Any]]:
        """The ingress rules of the test's security group, as moto has them now."""
        rules = self.ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [self.network.security_group_id]}]
        )["SecurityGroupRules"]
        return [rule for rule in rules if not rule["IsEgress"]]

    def rules_of(self, request_id: str) -> list[dict[str, Any]]:
        """The ingress rules holding a lease of `request_id`."""
        key = f"jit-lb:lease:{request_id}"
        return [rule for rule in self.ingress() if key in {tag["Key"] for tag in rule.get("Tags", [])}]

    def texts(self, messages: list[dict[str, Any]]) -> str:
        return "\n".join(str(message.get("text", "")) for message in messages)


def id_in(text: str) -> str:
    match = re.search(r"jit-[23456789abcdefghjkmnpqrstuvwxyz]{6}", text)
    assert match, f"no request id in {text!r}"
    return match.group(0)


def buttons(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The buttons of a card's blocks (none once it is decided)."""
    return [element for block in blocks if block["type"] == "actions" for element in block["elements"]]
