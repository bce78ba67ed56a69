"""The IAM policy provider against moto: the policy document, extension, removal, listing, errors in words."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devtools.moto_server import Alb, MotoServer, seed_load_balancer
from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import ELB_DESCRIBE_ACTIONS, ELB_SCOPED_ACTIONS, IamPolicyGrant
from workers.providers.aws_iam import IamPolicyProvider, resources_for
from workers.providers.base import GrantOrder, Lease, PartialDropError
from workers.providers.markers import UNREADABLE_END

END = datetime(2026, 11, 23, 21, 0, tzinfo=UTC)
LB = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/prod/50dc6c495c0c9188"
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


@pytest.fixture(name="alb")
def fixture_alb(moto: MotoServer) -> Alb:
    """A load balancer in moto: a grant reads its listeners for the target groups they use."""
    return seed_load_balancer(moto)


def grant(alb: Alb | str, **fields: Any) -> IamPolicyGrant:
    arn = alb if isinstance(alb, str) else alb.load_balancer_arn
    return IamPolicyGrant(kind="aws_iam_policy", **{"load_balancer_arn": arn, **fields})


def arn_of(load_balancer_arn: str, kind: str) -> str:
    """The ARN pattern of a load balancer's listeners or rules (`listener`, `listener-rule`)."""
    prefix, _, path = load_balancer_arn.partition(":loadbalancer/")
    return f"{prefix}:{kind}/{path}/*"


def order(spec: IamPolicyGrant, role: str, request_id: str = "jit-ab12cd", ends_at: datetime = END) -> GrantOrder:
    return GrantOrder(request_id, "lb-prod-config", spec, ends_at, role_name=role)


def inline_policies(moto: MotoServer, role: str) -> dict[str, Any]:
    iam = moto.client("iam")
    return {
        name: iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
    }


def test_resources_are_the_load_balancer_and_what_hangs_off_it() -> None:
    """Listeners and rules nest under the load balancer's name and id; target groups are named one by one."""
    used = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/admin/73e2d6bc24d8a067"
    assert resources_for(LB, [used]) == [
        LB,
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/prod/50dc6c495c0c9188/*",
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/prod/50dc6c495c0c9188/*",
        used,
    ]


def test_apply_puts_one_policy_ending_at_the_grant_end(moto: MotoServer, alb: Alb, role: str) -> None:
    """The inline policy allows the actions on the load balancer's resources until the end, marked with the request.

    Describe* has no resource-level permissions, so it has a statement of its own on `*`.
    """
    spec = grant(alb, actions=["elasticloadbalancing:Describe*", "elasticloadbalancing:ModifyListener"])
    [obj] = IamPolicyProvider(spec).apply(order(spec, role))
    assert obj.scope == IamPolicyProvider(spec).scope(order(spec, role))
    lb = alb.load_balancer_arn
    assert inline_policies(moto, role) == {
        "jit-ab12cd": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "JitLbJitab12cdUntil20261123T210000Z",
                    "Effect": "Allow",
                    "Action": ["elasticloadbalancing:ModifyListener"],
                    "Resource": [lb, arn_of(lb, "listener"), arn_of(lb, "listener-rule")],
                    "Condition": {"DateLessThan": {"aws:CurrentTime": "2026-11-23T21:00:00Z"}},
                },
                {
                    "Sid": "JitLbJitab12cdDescribeUntil20261123T210000Z",
                    "Effect": "Allow",
                    "Action": list(ELB_DESCRIBE_ACTIONS),  # Describe* spelt out
                    "Resource": "*",
                    "Condition": {"DateLessThan": {"aws:CurrentTime": "2026-11-23T21:00:00Z"}},
                },
            ],
        }
    }
    assert obj.ref == f"{role}/jit-ab12cd"
    assert obj.leases == (Lease("jit-ab12cd", END),)
    assert obj.anomaly == ""


def test_require_mfa_adds_the_mfa_condition(moto: MotoServer, alb: Alb, role: str) -> None:
    """With require_mfa the statement also demands a session signed in with MFA."""
    spec = grant(alb, require_mfa=True)
    IamPolicyProvider(spec).apply(order(spec, role))
    [document] = inline_policies(moto, role).values()
    assert document["Statement"][0]["Condition"] == {
        "DateLessThan": {"aws:CurrentTime": "2026-11-23T21:00:00Z"},
        "Bool": {"aws:MultiFactorAuthPresent": "true"},
    }
    assert document["Statement"][0]["Action"] == list(ELB_SCOPED_ACTIONS)


def test_extending_moves_the_end_in_place(moto: MotoServer, alb: Alb, role: str) -> None:
    """Applying again with a later end replaces the same policy's date and statement id."""
    spec = grant(alb)
    provider = IamPolicyProvider(spec)
    provider.apply(order(spec, role))
    later = END + timedelta(hours=1)
    [obj] = provider.apply(order(spec, role, ends_at=later))
    [(name, document)] = inline_policies(moto, role).items()
    assert name == "jit-ab12cd"
    assert document["Statement"][0]["Condition"]["DateLessThan"] == {"aws:CurrentTime": "2026-11-23T22:00:00Z"}
    assert document["Statement"][0]["Sid"] == "JitLbJitab12cdUntil20261123T220000Z"
    assert obj.ends_at == later


def test_drop_deletes_the_policy_and_again_is_harmless(moto: MotoServer, alb: Alb, role: str) -> None:
    """Dropping the request's lease deletes its policy; dropping it once more still succeeds."""
    spec = grant(alb)
    provider = IamPolicyProvider(spec, role_names=[role])
    [obj] = provider.apply(order(spec, role))
    assert provider.drop(obj, {"jit-ab12cd"}) is True
    assert inline_policies(moto, role) == {}
    assert provider.drop(obj, {"jit-ab12cd"}) is True


def test_drop_for_another_request_keeps_the_policy(moto: MotoServer, alb: Alb, role: str) -> None:
    """A policy belongs to one request: dropping some other request's lease leaves it in place."""
    spec = grant(alb)
    provider = IamPolicyProvider(spec)
    [obj] = provider.apply(order(spec, role))
    assert provider.drop(obj, {"jit-zzzzzz"}) is False
    assert list(inline_policies(moto, role)) == ["jit-ab12cd"]


def test_missing_role_is_a_sentence(moto: MotoServer, alb: Alb) -> None:
    """A role that does not exist is named in the error, with the field to check."""
    spec = grant(alb)
    with pytest.raises(ProviderError, match=r"^IAM role nobody-here not found; check the principal's aws_role_name"):
        IamPolicyProvider(spec).apply(order(spec, "nobody-here"))


def test_list_managed_finds_only_our_policies_for_this_load_balancer(moto: MotoServer, alb: Alb, role: str) -> None:
    """Listing reads each lease from the policy itself, and skips other load balancers' grants and foreign policies."""
    spec = grant(alb)
    IamPolicyProvider(spec).apply(order(spec, role, request_id="jit-ab12cd"))
    other = grant(seed_load_balancer(moto))
    IamPolicyProvider(other).apply(order(other, role, request_id="jit-cd34ef"))
    foreign = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "elasticloadbalancing:*", "Resource": alb.load_balancer_arn}],
    }
    moto.client("iam").put_role_policy(RoleName=role, PolicyName="jit-by-hand", PolicyDocument=json.dumps(foreign))

    [listed] = IamPolicyProvider(spec, role_names=[role, "role-that-does-not-exist"]).list_managed()
    assert listed.ref == f"{role}/jit-ab12cd"
    assert listed.leases == (Lease("jit-ab12cd", END),)
    assert "until 2026-11-23T21:00:00Z" in listed.description


def test_scope_names_the_role_and_the_request(role: str) -> None:
    """Each request's policy is its own object, so its scope is the role and the request id."""
    spec = grant(LB)
    assert IamPolicyProvider(spec).scope(order(spec, role)) == f"aws_iam_policy:{role}:jit-ab12cd"


def target_group(moto: MotoServer, alb: Alb, name: str) -> str:
    """Another target group in the ALB's VPC, named uniquely."""
    elbv2 = moto.client("elbv2")
    vpc = elbv2.describe_target_groups(TargetGroupArns=[alb.target_group_arn])["TargetGroups"][0]["VpcId"]
    created = elbv2.create_target_group(Name=f"{name}-{uuid.uuid4().hex[:8]}", Protocol="HTTP", Port=80, VpcId=vpc)
    return str(created["TargetGroups"][0]["TargetGroupArn"])


def statements_by_sid(moto: MotoServer, role: str, name: str = "jit-ab12cd") -> dict[str, dict[str, Any]]:
    document = inline_policies(moto, role)[name]
    return {statement["Sid"]: statement for statement in document["Statement"]}


def test_the_rest_is_allowed_only_on_the_load_balancer_and_the_target_groups_its_listeners_use(
    moto: MotoServer, alb: Alb, role: str
) -> None:
    """Describe* is on `*`; every other action on the load balancer, its listeners and rules, and exactly the
    target groups a listener forwards to (default action, a rule, a weighted forward), not another in the region."""
    elbv2 = moto.client("elbv2")
    by_rule, weighted_a, weighted_b, by_default, unrelated = (
        target_group(moto, alb, name) for name in ("rule", "wa", "wb", "default", "unrelated")
    )
    source = [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/a"]}}]
    elbv2.create_rule(
        ListenerArn=alb.listener_arn,
        Priority=10,
        Conditions=source,
        Actions=[{"Type": "forward", "TargetGroupArn": by_rule}],
    )
    weights = [{"TargetGroupArn": weighted_a, "Weight": 1}, {"TargetGroupArn": weighted_b, "Weight": 3}]
    elbv2.create_rule(
        ListenerArn=alb.listener_arn,
        Priority=11,
        Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/b"]}}],
        Actions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": weights}}],
    )
    elbv2.create_listener(
        LoadBalancerArn=alb.load_balancer_arn,
        Protocol="HTTP",
        Port=8080,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": by_default}],
    )
    spec = grant(alb)

    IamPolicyProvider(spec).apply(order(spec, role))

    lb = alb.load_balancer_arn
    statements = statements_by_sid(moto, role)
    assert statements["JitLbJitab12cdDescribeUntil20261123T210000Z"]["Action"] == list(ELB_DESCRIBE_ACTIONS)
    assert statements["JitLbJitab12cdDescribeUntil20261123T210000Z"]["Resource"] == "*"
    scoped = statements["JitLbJitab12cdUntil20261123T210000Z"]
    # The default `elasticloadbalancing:*` spelt out: each action AWS lets be scoped, and none it scopes to `*` alone.
    assert scoped["Action"] == list(ELB_SCOPED_ACTIONS)
    assert not {"elasticloadbalancing:*", "elasticloadbalancing:SetWebAcl"} & set(scoped["Action"])
    assert scoped["Resource"] == [
        lb,
        arn_of(lb, "listener"),
        arn_of(lb, "listener-rule"),
        *sorted([by_rule, weighted_a, weighted_b, by_default]),
    ]
    everything = [
        r
        for statement in statements.values()
        for r in ([statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"])
    ]
    assert unrelated not in everything
    assert not [resource for resource in everything if resource.endswith(":targetgroup/*")]


@pytest.mark.parametrize(
    ("require_mfa", "condition"),
    [
        (False, {"DateLessThan": {"aws:CurrentTime": "2026-11-23T21:00:00Z"}}),
        (
            True,
            {
                "DateLessThan": {"aws:CurrentTime": "2026-11-23T21:00:00Z"},
                "Bool": {"aws:MultiFactorAuthPresent": "true"},
            },
        ),
    ],
    ids=["plain", "require_mfa"],
)
def test_every_statement_ends_at_the_grant_end(
    moto: MotoServer, alb: Alb, role: str, require_mfa: bool, condition: dict[str, Any]
) -> None:
    """Both statements carry the DateLessThan of the grant's end, and the MFA condition when the spec asks for it."""
    spec = grant(alb, require_mfa=require_mfa)
    IamPolicyProvider(spec).apply(order(spec, role))
    statements = statements_by_sid(moto, role)
    assert len(statements) == 2
    assert [condition, condition] == [statement["Condition"] for statement in statements.values()]


def test_describe_only_actions_make_one_statement_on_everything(moto: MotoServer, alb: Alb, role: str) -> None:
    """A spec of Describe actions alone is one statement on `*`, listed back as this load balancer's grant."""
    spec = grant(alb, actions=["elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeRules"])
    provider = IamPolicyProvider(spec, role_names=[role])
    provider.apply(order(spec, role))
    assert statements_by_sid(moto, role) == {
        "JitLbJitab12cdDescribeUntil20261123T210000Z": {
            "Sid": "JitLbJitab12cdDescribeUntil20261123T210000Z",
            "Effect": "Allow",
            "Action": ["elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeRules"],
            "Resource": "*",
            "Condition": {"DateLessThan": {"aws:CurrentTime": "2026-11-23T21:00:00Z"}},
        }
    }
    [listed] = provider.list_managed()
    assert (listed.leases, listed.anomaly) == ((Lease("jit-ab12cd", END),), "")


def test_missing_load_balancer_is_a_sentence(moto: MotoServer, role: str) -> None:
    """A load balancer that does not exist is named in the error, and no policy is put."""
    spec = grant(LB)
    with pytest.raises(
        ProviderError, match=r"^load balancer .+/prod/50dc6c495c0c9188 not found; check load_balancer_arn"
    ):
        IamPolicyProvider(spec).apply(order(spec, role))
    assert inline_policies(moto, role) == {}


def test_a_policy_widened_by_hand_is_listed_with_an_anomaly(moto: MotoServer, alb: Alb, role: str) -> None:
    """Our policy edited to allow every target group is listed with the difference; an untouched one is not."""
    spec = grant(alb)
    provider = IamPolicyProvider(spec, role_names=[role])
    provider.apply(order(spec, role, request_id="jit-ab12cd"))
    provider.apply(order(spec, role, request_id="jit-cd34ef"))
    document = inline_policies(moto, role)["jit-ab12cd"]
    prefix = alb.load_balancer_arn.partition(":loadbalancer/")[0]
    document["Statement"][0]["Resource"].append(f"{prefix}:targetgroup/*")
    moto.client("iam").put_role_policy(RoleName=role, PolicyName="jit-ab12cd", PolicyDocument=json.dumps(document))

    listed = {obj.ref: obj for obj in provider.list_managed()}

    assert listed[f"{role}/jit-cd34ef"].anomaly == ""
    widened = listed[f"{role}/jit-ab12cd"]
    assert "statement JitLbJitab12cdUntil20261123T210000Z has Resource" in widened.anomaly
    assert "targetgroup/*" in widened.anomaly
    assert widened.leases == (Lease("jit-ab12cd", END),)


def test_a_policy_named_like_a_request_without_our_statement_id_is_an_anomaly(
    moto: MotoServer, alb: Alb, role: str
) -> None:
    """A `jit-<id>` policy on this load balancer that jit-lb did not write is listed, left for a person to judge."""
    by_hand = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "elasticloadbalancing:*", "Resource": alb.load_balancer_arn}],
    }
    moto.client("iam").put_role_policy(RoleName=role, PolicyName="jit-abcdef", PolicyDocument=json.dumps(by_hand))

    [listed] = IamPolicyProvider(grant(alb), role_names=[role]).list_managed()

    assert listed.ref == f"{role}/jit-abcdef"
    assert listed.anomaly == "no statement carries jit-lb's statement id"


def test_our_statement_without_an_end_has_ended(moto: MotoServer, alb: Alb, role: str) -> None:
    """A statement of ours whose DateLessThan was taken off is a lease that has ended (fail closed), not kept."""
    spec = grant(alb)
    provider = IamPolicyProvider(spec, role_names=[role])
    provider.apply(order(spec, role))
    document = inline_policies(moto, role)["jit-ab12cd"]
    for statement in document["Statement"]:
        del statement["Condition"]
    moto.client("iam").put_role_policy(RoleName=role, PolicyName="jit-ab12cd", PolicyDocument=json.dumps(document))

    [listed] = provider.list_managed()

    assert listed.leases == (Lease("jit-ab12cd", UNREADABLE_END),)
    assert listed.expired_leases(END) == {"jit-ab12cd"}


@pytest.mark.parametrize(
    "document",
    ["{not json", '"a string"', {"Version": "2012-10-17", "Statement": "everything"}, {"Statement": [1, 2]}],
    ids=["not-json", "json-not-an-object", "statement-not-a-list", "statements-not-objects"],
)
def test_a_document_that_is_not_a_policy_is_an_anomaly_not_an_error(alb: Alb, document: object) -> None:
    """A policy named like a request whose document cannot be read is returned with its anomaly; nothing raises.

    AWS (and moto) refuse such documents, so this judges the document as `list_managed` would read it.
    """
    judged = IamPolicyProvider(grant(alb)).judge("dev1", "jit-abcdef", document)
    assert judged is not None
    assert judged.anomaly == "its document is not a JSON IAM policy"
    assert judged.leases == (Lease("jit-abcdef", UNREADABLE_END),)


def test_our_policy_opened_to_every_resource_is_an_anomaly(moto: MotoServer, alb: Alb, role: str) -> None:
    """Our statement edited to allow its actions on `*` names no load balancer any more, yet is listed, with why."""
    spec = grant(alb)
    provider = IamPolicyProvider(spec, role_names=[role])
    provider.apply(order(spec, role))
    document = inline_policies(moto, role)["jit-ab12cd"]
    document["Statement"][0]["Resource"] = "*"
    moto.client("iam").put_role_policy(RoleName=role, PolicyName="jit-ab12cd", PolicyDocument=json.dumps(document))

    [listed] = provider.list_managed()

    assert listed.anomaly.startswith("statement JitLbJitab12cdUntil20261123T210000Z has Resource * beyond jit-lb's")


def test_a_describe_only_grant_is_not_listed_by_a_target_whose_grants_name_a_load_balancer(
    moto: MotoServer, alb: Alb, role: str
) -> None:
    """A grant of Describe actions alone names no load balancer; an IAM target with other actions leaves it out."""
    looking = grant(alb, actions=["elasticloadbalancing:DescribeLoadBalancers"])
    IamPolicyProvider(looking).apply(order(looking, role))
    changing = grant(seed_load_balancer(moto), actions=["elasticloadbalancing:ModifyListener"])
    assert IamPolicyProvider(changing, role_names=[role]).list_managed() == []
    assert [obj.anomaly for obj in IamPolicyProvider(looking, role_names=[role]).list_managed()] == [""]


def test_drop_all_deletes_every_listed_policy(moto: MotoServer, alb: Alb, role: str) -> None:
    """A lockdown's delete removes every policy listed, on each role; one deleted meanwhile is no error."""
    other = f"dev-{uuid.uuid4().hex[:12]}"
    moto.client("iam").create_role(RoleName=other, AssumeRolePolicyDocument=TRUST)
    spec = grant(alb)
    provider = IamPolicyProvider(spec, role_names=[role, other])
    for index in range(12):
        provider.apply(order(spec, (role, other)[index % 2], request_id=f"jit-aaaa{index:02d}"))
    objects = provider.list_managed()
    assert len(objects) == 12
    moto.client("iam").delete_role_policy(RoleName=role, PolicyName="jit-aaaa00")
    assert provider.drop_all(objects) == 12
    assert provider.list_managed() == []
    assert inline_policies(moto, role) == inline_policies(moto, other) == {}


def test_drop_all_deletes_side_by_side(moto: MotoServer, alb: Alb, role: str) -> None:
    """At a real region's ~50 ms a call, a lockdown's policies cannot go one call after another: four
    DeleteRolePolicy calls are in flight at once (each waits, in botocore's own hook, for the other three)."""
    spec = grant(alb)
    provider = IamPolicyProvider(spec, role_names=[role])
    for index in range(4):
        provider.apply(order(spec, role, request_id=f"jit-bbbb{index:02d}"))
    together = threading.Barrier(4, timeout=5)

    def wait_for_the_others(**_: Any) -> None:  # a hook that returned a value would stand for AWS's answer
        together.wait()

    provider.iam = moto.client("iam")  # a client of this test's own: the provider's is shared by the process
    provider.iam.meta.events.register("before-call.iam.DeleteRolePolicy", wait_for_the_others)
    assert provider.drop_all(provider.list_managed()) == 4
    assert inline_policies(moto, role) == {}


def test_drop_all_removes_the_others_when_one_delete_is_refused(moto: MotoServer, alb: Alb, role: str) -> None:
    """One DeleteRolePolicy refused names its policy; the others are gone, and listed as removed."""
    spec = grant(alb)
    provider = IamPolicyProvider(spec, role_names=[role])
    for index in range(10):
        provider.apply(order(spec, role, request_id=f"jit-cccc{index:02d}"))

    def refuse_one(params: dict[str, Any], **_: Any) -> None:
        if params["PolicyName"] == "jit-cccc04":
            raise ClientError({"Error": {"Code": "ServiceFailure", "Message": "try again"}}, "DeleteRolePolicy")

    provider.iam = moto.client("iam")  # a client of this test's own: the provider's is shared by the process
    provider.iam.meta.events.register("before-parameter-build.iam.DeleteRolePolicy", refuse_one)
    with pytest.raises(PartialDropError, match="1 of 10 objects not removed; the first: ServiceFailure") as err:
        provider.drop_all(provider.list_managed())
    assert list(inline_policies(moto, role)) == ["jit-cccc04"]
    assert [obj.ref for obj, _ in err.value.failed] == [f"{role}/jit-cccc04"]
    assert len(err.value.removed) == 9
