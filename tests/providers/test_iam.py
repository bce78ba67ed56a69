"""The IAM policy provider against moto: the policy document, extension, removal, listing, errors in words."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devtools.moto_server import MotoServer
from jit_lb.access.policy import IamPolicyGrant
from workers.providers.aws_iam import IamPolicyProvider, resources_for
from workers.providers.base import GrantOrder, Lease, ProviderError

END = datetime(2026, 11, 23, 21, 0, tzinfo=UTC)
LB = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/prod/50dc6c495c0c9188"
OTHER_LB = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/stage/73e2d6bc24d8a067"
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}
        ],
    }
)


@pytest.fixture(name="role")
def fixture_role(moto: MotoServer) -> str:
    """A fresh IAM role per test, named uniquely, so that tests sharing moto do not see each other's policies."""
    name = f"dev-{uuid.uuid4().hex[:12]}"
    moto.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)
    return name


def grant(**fields: Any) -> IamPolicyGrant:
    return IamPolicyGrant(kind="aws_iam_policy", **{"load_balancer_arn": LB, **fields})


def order(spec: IamPolicyGrant, role: str, request_id: str = "jit-ab12cd", ends_at: datetime = END) -> GrantOrder:
    return GrantOrder(request_id, "lb-prod-config", spec, ends_at, role_name=role)


def inline_policies(moto: MotoServer, role: str) -> dict[str, Any]:
    iam = moto.client("iam")
    return {
        name: iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
    }


def test_resources_are_the_load_balancer_and_what_hangs_off_it() -> None:
    """Listeners and rules nest under the load balancer's name and id; target groups only under the account."""
    assert resources_for(LB) == [
        LB,
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/prod/50dc6c495c0c9188/*",
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/prod/50dc6c495c0c9188/*",
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/*",
    ]


def test_apply_puts_one_policy_ending_at_the_grant_end(moto: MotoServer, role: str) -> None:
    """The inline policy allows the actions on the load balancer's resources until the end, marked with the request."""
    spec = grant(actions=["elasticloadbalancing:Describe*", "elasticloadbalancing:ModifyListener"])
    [obj] = IamPolicyProvider(spec).apply(order(spec, role))
    assert obj.scope == IamPolicyProvider(spec).scope(order(spec, role))
    assert inline_policies(moto, role) == {
        "jit-ab12cd": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "JitLbJitab12cdUntil20261123T210000Z",
                    "Effect": "Allow",
                    "Action": ["elasticloadbalancing:Describe*", "elasticloadbalancing:ModifyListener"],
                    "Resource": [
                        "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/prod/50dc6c495c0c9188",
                        "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/prod/50dc6c495c0c9188/*",
                        "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/prod/50dc6c495c0c9188/*",
                        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/*",
                    ],
                    "Condition": {"DateLessThan": {"aws:CurrentTime": "2026-11-23T21:00:00Z"}},
                }
            ],
        }
    }
    assert obj.ref == f"{role}/jit-ab12cd"
    assert obj.leases == (Lease("jit-ab12cd", END),)


def test_require_mfa_adds_the_mfa_condition(moto: MotoServer, role: str) -> None:
    """With require_mfa the statement also demands a session signed in with MFA."""
    spec = grant(require_mfa=True)
    IamPolicyProvider(spec).apply(order(spec, role))
    [document] = inline_policies(moto, role).values()
    assert document["Statement"][0]["Condition"] == {
        "DateLessThan": {"aws:CurrentTime": "2026-11-23T21:00:00Z"},
        "Bool": {"aws:MultiFactorAuthPresent": "true"},
    }
    assert document["Statement"][0]["Action"] == ["elasticloadbalancing:*"]


def test_extending_moves_the_end_in_place(moto: MotoServer, role: str) -> None:
    """Applying again with a later end replaces the same policy's date and statement id."""
    spec = grant()
    provider = IamPolicyProvider(spec)
    provider.apply(order(spec, role))
    later = END + timedelta(hours=1)
    [obj] = provider.apply(order(spec, role, ends_at=later))
    [(name, document)] = inline_policies(moto, role).items()
    assert name == "jit-ab12cd"
    assert document["Statement"][0]["Condition"]["DateLessThan"] == {"aws:CurrentTime": "2026-11-23T22:00:00Z"}
    assert document["Statement"][0]["Sid"] == "JitLbJitab12cdUntil20261123T220000Z"
    assert obj.ends_at == later


def test_drop_deletes_the_policy_and_again_is_harmless(moto: MotoServer, role: str) -> None:
    """Dropping the request's lease deletes its policy; dropping it once more still succeeds."""
    spec = grant()
    provider = IamPolicyProvider(spec, role_names=[role])
    [obj] = provider.apply(order(spec, role))
    assert provider.drop(obj, {"jit-ab12cd"}) is True
    assert inline_policies(moto, role) == {}
    assert provider.drop(obj, {"jit-ab12cd"}) is True


def test_drop_for_another_request_keeps_the_policy(moto: MotoServer, role: str) -> None:
    """A policy belongs to one request: dropping some other request's lease leaves it in place."""
    spec = grant()
    provider = IamPolicyProvider(spec)
    [obj] = provider.apply(order(spec, role))
    assert provider.drop(obj, {"jit-zzzzzz"}) is False
    assert list(inline_policies(moto, role)) == ["jit-ab12cd"]


def test_missing_role_is_a_sentence(moto: MotoServer) -> None:
    """A role that does not exist is named in the error, with the field to check."""
    spec = grant()
    with pytest.raises(ProviderError, match=r"^IAM role nobody-here not found; check the principal's aws_role_name"):
        IamPolicyProvider(spec).apply(order(spec, "nobody-here"))


def test_list_managed_finds_only_our_policies_for_this_load_balancer(moto: MotoServer, role: str) -> None:
    """Listing reads each lease from the policy itself, and skips other load balancers' grants and foreign policies."""
    spec = grant()
    IamPolicyProvider(spec).apply(order(spec, role, request_id="jit-ab12cd"))
    other = grant(load_balancer_arn=OTHER_LB)
    IamPolicyProvider(other).apply(order(other, role, request_id="jit-cd34ef"))
    foreign = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "elasticloadbalancing:*", "Resource": LB}],
    }
    moto.client("iam").put_role_policy(RoleName=role, PolicyName="jit-by-hand", PolicyDocument=json.dumps(foreign))

    [listed] = IamPolicyProvider(spec, role_names=[role, "role-that-does-not-exist"]).list_managed()
    assert listed.ref == f"{role}/jit-ab12cd"
    assert listed.leases == (Lease("jit-ab12cd", END),)
    assert "until 2026-11-23T21:00:00Z" in listed.description


def test_scope_names_the_role_and_the_request(role: str) -> None:
    """Each request's policy is its own object, so its scope is the role and the request id."""
    spec = grant()
    assert IamPolicyProvider(spec).scope(order(spec, role)) == f"aws_iam_policy:{role}:jit-ab12cd"
