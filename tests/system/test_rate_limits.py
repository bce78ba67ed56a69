"""Slack's rate limits against the web: a storm of App Home opens while views.publish answers 429 holds up no
approval, each person's home goes out once when the limit ends, and a post Slack rate-limits in the web is made
by a worker after Retry-After."""

from __future__ import annotations

import pytest

from devtools.stack import Stack
from tests.helpers import APPROVALS, ask, card_ts, dm_text, stack_policy

pytestmark = pytest.mark.slow

LIMIT_SECONDS = 90  # views.publish refused this long: far longer than a click may take to count


def test_an_approval_counts_while_home_opens_wait_out_a_rate_limited_views_publish() -> None:
    """30 Home opens (10 people, 3 times each) meet views.publish answering 429 with Retry-After 90 s; an approval
    clicked then is counted, and its grant applied, while Slack still refuses views.publish."""
    with Stack(policy=stack_policy) as stack:
        request_id, _ = ask(stack, "U0DEV1", "request lb-prod 30m under a home storm")
        ts = card_ts(stack, request_id)
        stack.slack.rate_limit("views.publish", LIMIT_SECONDS)
        client = stack.client()
        for round_ in range(3):
            for n in range(10):
                assert client.app_home_opened(f"U0HOME{n:02d}").status == 200, round_

        assert client.click("U0APPROVER1", "jit_approve", request_id, APPROVALS, ts).status == 200
        stack.wait_for(lambda: "grant.applied" in stack.events(request_id), timeout=30, what="the grant")

        assert stack.slack.rate_limited("views.publish")
        refused = [c for c in stack.slack.calls("views.publish") if not c.response.get("ok")]
        assert len(refused) == 1  # the first; the others wait for Retry-After instead of asking again


def test_a_dm_slack_rate_limits_in_the_web_is_sent_by_a_worker_after_retry_after() -> None:
    """chat.postMessage answers 429 (Retry-After 2 s) when the approval's DM is sent: the web does not wait for it,
    and the requester gets the DM once the limit is over."""
    with Stack(policy=stack_policy) as stack:
        request_id, _ = ask(stack, "U0DEV1", "request lb-prod 30m approved under a post limit")
        ts = card_ts(stack, request_id)
        stack.slack.rate_limit("chat.postMessage", 2)

        assert stack.client().click("U0APPROVER1", "jit_approve", request_id, APPROVALS, ts).status == 200

        stack.wait_for(lambda: "request.approved" in stack.events(request_id), timeout=10, what="the approval")
        stack.wait_for(lambda: "approved" in dm_text(stack, "U0DEV1").lower(), timeout=30, what="the DM")
