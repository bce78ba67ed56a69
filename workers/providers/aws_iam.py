"""IAM grants: one inline policy per request on the principal's role, ended by AWS itself at its DateLessThan."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from jit_lb.access.policy import IamPolicyGrant
from workers.providers import aws, leases
from workers.providers.base import GrantOrder, ManagedObject, ProviderError

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient

KIND = "aws_iam_policy"
POLICY_PREFIX = "jit-"
# Statement ids allow letters and digits only; this one marks a statement as ours.
SID_PREFIX = "JitLb"
POLICY_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")


def resources_for(load_balancer_arn: str) -> list[str]:
    """The load balancer and its listeners, listener rules and target groups, as IAM resource ARNs."""
    prefix, _, path = load_balancer_arn.partition(":loadbalancer/")
    return [
        load_balancer_arn,
        f"{prefix}:listener/{path}/*",
        f"{prefix}:listener-rule/{path}/*",
        # Target group ARNs are not nested under the load balancer's (targetgroup/NAME/ID), so no
        # ARN pattern narrows them to this one; the account and region are as narrow as IAM allows.
        f"{prefix}:targetgroup/*",
    ]


def policy_name(request_id: str) -> str:
    """The request id itself: ids start with `jit-`, as the contract asks of the policy's name."""
    return request_id if request_id.startswith(POLICY_PREFIX) else POLICY_PREFIX + request_id


def statement_id(request_id: str, ends_at: datetime) -> str:
    """`JitLb<request id>Until<end>`, letters and digits only, e.g. JitLbJitab12cdUntil20261123T210000Z."""
    return f"{_sid_marker(request_id)}Until{leases.format_time(ends_at).replace('-', '').replace(':', '')}"


def _sid_marker(request_id: str) -> str:
    compact = re.sub(r"[^A-Za-z0-9]", "", request_id)
    return f"{SID_PREFIX}{compact[:1].upper()}{compact[1:]}"


class IamPolicyProvider:
    """Inline policies on the roles the policy file names, each allowing one load balancer until its end."""

    def __init__(self, spec: IamPolicyGrant, role_names: Iterable[str] = ()) -> None:
        self.spec = spec
        self.role_names = tuple(sorted(set(role_names)))
        # IAM is global; the load balancer's region only picks the partition's endpoint.
        region = spec.load_balancer_arn.split(":")[3]
        self.iam: IAMClient = aws.client("iam", region)
        self.resources = resources_for(spec.load_balancer_arn)

    def scope(self, order: GrantOrder) -> str:
        return f"{KIND}:{_require_role(order)}:{order.request_id}"

    def document(self, request_id: str, ends_at: datetime) -> dict[str, Any]:
        """The policy for one request: the spec's actions on the load balancer, until `ends_at`."""
        condition: dict[str, dict[str, str]] = {"DateLessThan": {"aws:CurrentTime": leases.format_time(ends_at)}}
        if self.spec.require_mfa:
            condition["Bool"] = {"aws:MultiFactorAuthPresent": "true"}
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": statement_id(request_id, ends_at),
                    "Effect": "Allow",
                    "Action": list(self.spec.actions),
                    "Resource": list(self.resources),
                    "Condition": condition,
                }
            ],
        }

    def apply(self, order: GrantOrder) -> list[ManagedObject]:
        role = _require_role(order)
        name = policy_name(order.request_id)
        if not POLICY_NAME.match(name):
            raise ProviderError(f"request id {order.request_id} cannot name an IAM policy")
        document = json.dumps(self.document(order.request_id, order.ends_at), separators=(",", ":"))
        # Putting the same name again replaces the document: that is how an extension moves the end.
        with self._errors("iam:PutRolePolicy", role):
            self.iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=document)
        managed = self._read(role, name)
        if managed is None:
            raise ProviderError(f"policy {name} on IAM role {role} vanished right after the grant; retry the request")
        return [managed]

    def list_managed(self) -> list[ManagedObject]:
        found: list[ManagedObject] = []
        for role in self.role_names:
            for name in self._policy_names(role):
                managed = self._read(role, name)
                if managed is not None:
                    found.append(managed)
        return found

    def read(self, ref: str) -> ManagedObject | None:
        role, _, name = ref.partition("/")
        return self._read(role, name)

    def objects_for(self, request_id: str) -> list[ManagedObject] | None:
        """No query of its own: which role holds a request's policy is known only by listing them."""
        return None

    def restore(self, now: datetime) -> list[str]:
        """Nothing to restore: each lease lives in its policy's condition."""
        return []

    def drop(self, obj: ManagedObject, request_ids: set[str], fresh: bool = False) -> bool:
        if obj.request_ids() - request_ids:
            # One policy serves one request: another request's lease keeps it.
            return False
        role, _, name = obj.ref.partition("/")
        with self._errors("iam:DeleteRolePolicy", role, passing={"NoSuchEntity"}):
            self.iam.delete_role_policy(RoleName=role, PolicyName=name)
        return True

    def _policy_names(self, role: str) -> list[str]:
        """The role's inline policies named like ours; none when the role does not exist."""
        names: list[str] = []
        with self._errors("iam:ListRolePolicies", role, passing={"NoSuchEntity"}):
            for page in self.iam.get_paginator("list_role_policies").paginate(RoleName=role):
                names.extend(page["PolicyNames"])
        return [name for name in names if name.startswith(POLICY_PREFIX)]

    def _read(self, role: str, name: str) -> ManagedObject | None:
        """The policy as a managed object, or None when it is gone or is not one of ours for this load balancer."""
        with self._errors("iam:GetRolePolicy", role, passing={"NoSuchEntity"}) as passed:
            response = self.iam.get_role_policy(RoleName=role, PolicyName=name)
        if passed:
            return None
        request_id = name
        statement = self._our_statement(_document(response["PolicyDocument"]), request_id)
        if statement is None:
            return None
        lease = leases.read_lease(request_id, _end_of(statement))
        return ManagedObject(
            kind=KIND,
            ref=f"{role}/{name}",
            scope=f"{KIND}:{role}:{request_id}",
            description=f"policy {name} on IAM role {role}: {', '.join(self.spec.actions)} on "
            f"{self.spec.load_balancer_arn.partition(':loadbalancer/')[2]} until {leases.format_time(lease.ends_at)}",
            leases=(lease,),
        )

    def _our_statement(self, document: dict[str, Any], request_id: str) -> dict[str, Any] | None:
        """The statement that marks the policy as ours for this request and this load balancer."""
        statements = document.get("Statement", [])
        for statement in statements if isinstance(statements, list) else [statements]:
            if not isinstance(statement, dict):
                continue
            sid = str(statement.get("Sid", ""))
            resources = statement.get("Resource", [])
            resources = [resources] if isinstance(resources, str) else resources
            if sid.startswith(_sid_marker(request_id) + "Until") and self.spec.load_balancer_arn in resources:
                return statement
        return None

    def _errors(self, action: str, role: str, passing: Iterable[str] = ()) -> AbstractContextManager[aws.Passed]:
        """Turn botocore errors into sentences; codes in `passing` are expected and recorded instead."""

        def explain(code: str) -> ProviderError | None:
            if code == "NoSuchEntity":
                return ProviderError(
                    f"IAM role {role} not found; check the principal's aws_role_name in the policy file"
                )
            if code == "LimitExceeded":
                return ProviderError(
                    f"IAM role {role} has no room for another inline policy (LimitExceeded); "
                    "wait for a grant to end or remove unused inline policies"
                )
            return None

        return aws.translated(action, f"IAM role {role}", passing, explain)


def _require_role(order: GrantOrder) -> str:
    if not order.role_name:
        raise ProviderError(f"request {order.request_id} has no AWS role name for an IAM grant")
    return order.role_name


def _document(raw: object) -> dict[str, Any]:
    """A policy document as a dict: botocore decodes it, but the API's own form is URL-encoded JSON."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            decoded = json.loads(unquote(raw))
        except ValueError:
            return {}
        return decoded if isinstance(decoded, dict) else {}
    return {}


def _end_of(statement: dict[str, Any]) -> str:
    """The statement's DateLessThan on aws:CurrentTime: the end AWS enforces, so the lease's end."""
    condition = statement.get("Condition", {})
    date = condition.get("DateLessThan", {}) if isinstance(condition, dict) else {}
    return str(date.get("aws:CurrentTime") if isinstance(date, dict) else None)
