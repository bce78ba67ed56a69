"""What each audit record counts in jit_requests_total, and which target names may be label values."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jit_lb.access.policy import Policy, load_policy
from jit_lb.metrics import Metrics
from tests.helpers import ROOT


def requests_counted(metrics: Metrics) -> dict[tuple[str, str], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.labels["target"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "jit_requests"
        for sample in family.samples
        if sample.value
    }


def test_each_outcome_record_counts_once_and_others_not_at_all() -> None:
    """An approval that leaves the request pending counts nothing; on-call approval counts auto_approved."""
    policy = load_policy(ROOT / "policy.example.yml")
    metrics = Metrics(lambda: policy, 60.0)
    metrics.recorded("request.created", {"target": "lb-prod"})
    metrics.recorded("request.approved", {"target": "lb-prod-admin-path", "status": "pending"})
    metrics.recorded("request.approved", {"target": "lb-prod-admin-path", "status": "approved"})
    metrics.recorded(
        "request.approved", {"target": "lb-prod", "status": "approved", "auto_approve": {"schedule": "P1"}}
    )
    metrics.recorded("grant.applied", {"target": "lb-prod", "status": "granted"})
    metrics.recorded("request.refused", {"target": "lb-prod", "summary": True, "refused": 7})
    assert requests_counted(metrics) == {
        ("lb-prod", "created"): 1,
        ("lb-prod-admin-path", "approved"): 1,
        ("lb-prod", "auto_approved"): 1,
        ("lb-prod", "refused"): 7,
    }


def test_a_target_becomes_a_label_only_while_it_is_in_the_policy() -> None:
    """A name typed, or a target since removed, counts as `other`; a target added by a reload is its own label."""
    policy: list[Policy] = [load_policy(ROOT / "policy.example.yml")]
    metrics = Metrics(lambda: policy[0], 60.0)
    metrics.recorded("request.refused", {"target": "lb-prod<script>"})
    metrics.recorded("request.refused", {"target": None})
    edited = policy[0].model_copy(update={"targets": {**policy[0].targets, "lb-new": policy[0].targets["lb-prod"]}})
    policy[0] = edited
    metrics.recorded("request.created", {"target": "lb-new"})
    assert requests_counted(metrics) == {("other", "refused"): 2, ("lb-new", "created"): 1}
