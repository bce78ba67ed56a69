"""IAM grants: one inline policy per request on the principal's role, ended by AWS itself at its DateLessThan.

The policy gives each action only on what AWS lets that action be scoped to, as the Service
Authorization Reference for Elastic Load Balancing V2 lists it, each action named (the default
`elasticloadbalancing:*` is spelt out: jit_lb.access.policy.ELB_SCOPED_ACTIONS). The `Describe*` actions have no
resource-level permissions (they need `"Resource": "*"`), so they get a statement of their own;
every other action is allowed on the load balancer, its listeners, its listener rules, and the
target groups its listeners forward to when the grant is applied. Target group ARNs do not nest
under the load balancer's (`targetgroup/NAME/ID`), so they are read from the listeners and named
one by one, never as `targetgroup/*`. Every statement carries the grant's end as its
`DateLessThan aws:CurrentTime` condition and in its statement id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import IamPolicyGrant, iam_actions
from jit_lb.access.requests import Use
from workers.providers import aws, markers
from workers.providers.aws_alb import balancer_entries
from workers.providers.base import Entries, GrantOrder, Lease, ManagedObject, drop_side_by_side, in_parallel

if TYPE_CHECKING:
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client
    from mypy_boto3_elbv2.type_defs import ListenerTypeDef
    from mypy_boto3_iam import IAMClient

KIND = "aws_iam_policy"
POLICY_PREFIX = "jit-"
# Statement ids allow letters and digits only; this one marks a statement as ours.
SID_PREFIX = "JitLb"
# The statement of the Describe actions says so in its id, before the end.
DESCRIBE_SID = "Describe"
VERSION = "2012-10-17"
_DESCRIBE = "elasticloadbalancing:describe"
# The load balancer an ELB resource ARN belongs to: the load balancer's own, or a listener's or rule's,
# which repeat its type, name and id (`listener/app/NAME/ID/LISTENER`).
_BALANCER_OF = re.compile(
    r"^(?P<prefix>arn:[\w-]+:elasticloadbalancing:[\w-]*:\d*):(?:loadbalancer|listener|listener-rule)/"
    r"(?P<path>(?:app|net|gwy)/[^/]+/[^/]+)"
)
_KNOWN_KEYS = frozenset({"Sid", "Effect", "Action", "Resource", "Condition"})
# A snapshot reads at most this many inline policies' documents (one call each); the rest it names unread.
SNAPSHOT_DOCUMENTS = 20
# GetRolePolicy calls in flight at once in a listing, DeleteRolePolicy calls in drop_all: at a real region's ~50 ms a
# call, a lockdown's 100 policies take 5 s to read and 5 s to delete one after another. Fewer than ELBv2's 16: IAM's
# control plane takes fewer requests a second, and botocore's standard retries take a throttled call again.
CALL_THREADS = 8


def split_actions(actions: Iterable[str]) -> tuple[list[str], list[str]]:
    """(the Describe actions, every other action) among a spec's `actions`, `elasticloadbalancing:*` spelt out
    action by action (jit_lb.access.policy.iam_actions: nothing AWS scopes to `*` alone rides along)."""
    return iam_actions(list(actions))


def resources_for(load_balancer_arn: str, target_groups: Iterable[str] = ()) -> list[str]:
    """The load balancer, its listeners and listener rules, and `target_groups`, as IAM resource ARNs."""
    prefix, _, path = load_balancer_arn.partition(":loadbalancer/")
    resources = [load_balancer_arn, f"{prefix}:listener/{path}/*"]
    if not path.startswith("gwy/"):
        # There is no listener-rule/gwy resource type: a Gateway Load Balancer's listeners have no rules.
        resources.append(f"{prefix}:listener-rule/{path}/*")
    return [*resources, *sorted(set(target_groups))]


def policy_name(request_id: str) -> str:
    """The request id itself (ids start with `jit-`), as docs/policy.md names the policy: `jit-4k7m2q`."""
    return request_id if request_id.startswith(POLICY_PREFIX) else POLICY_PREFIX + request_id


def statement_id(request_id: str, ends_at: datetime) -> str:
    """`JitLb<request id>Until<end>`, letters and digits only, e.g. JitLbJitab12cdUntil20261123T210000Z."""
    return f"{_sid_marker(request_id)}Until{_compact(ends_at)}"


def describe_statement_id(request_id: str, ends_at: datetime) -> str:
    """`JitLb<request id>DescribeUntil<end>`: the id of the statement that allows the Describe actions on `*`."""
    return f"{_sid_marker(request_id)}{DESCRIBE_SID}Until{_compact(ends_at)}"


def policy_document(
    spec: IamPolicyGrant, request_id: str, ends_at: datetime, target_groups: Iterable[str] = ()
) -> dict[str, Any]:
    """The policy for one request: the Describe actions on `*`, the others on the load balancer's resources."""
    describe, scoped = split_actions(spec.actions)
    statements: list[dict[str, Any]] = []
    if scoped:
        statements.append(
            {
                "Sid": statement_id(request_id, ends_at),
                "Effect": "Allow",
                "Action": scoped,
                "Resource": resources_for(spec.load_balancer_arn, target_groups),
                "Condition": _condition(spec, ends_at),
            }
        )
    if describe:
        statements.append(
            {
                "Sid": describe_statement_id(request_id, ends_at),
                "Effect": "Allow",
                "Action": describe,
                "Resource": "*",
                "Condition": _condition(spec, ends_at),
            }
        )
    return {"Version": VERSION, "Statement": statements}


def _condition(spec: IamPolicyGrant, ends_at: datetime) -> dict[str, dict[str, str]]:
    condition: dict[str, dict[str, str]] = {"DateLessThan": {"aws:CurrentTime": markers.format_time(ends_at)}}
    if spec.require_mfa:
        condition["Bool"] = {"aws:MultiFactorAuthPresent": "true"}
    return condition


def _compact(moment: datetime) -> str:
    return markers.format_time(moment).replace("-", "").replace(":", "")


def _sid_marker(request_id: str) -> str:
    compact = re.sub(r"[^A-Za-z0-9]", "", request_id)
    return f"{SID_PREFIX}{compact[:1].upper()}{compact[1:]}"


class IamPolicyProvider:
    """Inline policies on the roles the policy file names, each allowing one load balancer until its end."""

    owns_unleased = False  # a `jit-` policy name can be someone else's

    def __init__(self, spec: IamPolicyGrant, role_names: Iterable[str] = ()) -> None:
        self.spec = spec
        self.role_names = tuple(sorted(set(role_names)))
        self.threads = CALL_THREADS  # calls in flight at once in a listing and in drop_all
        # IAM is global; the load balancer's region only picks the partition's endpoint.
        region = spec.load_balancer_arn.split(":")[3]
        self.iam: IAMClient = aws.client("iam", region)
        self.elbv2: ElasticLoadBalancingv2Client = aws.client("elbv2", region)
        self._balancer = spec.load_balancer_arn.partition(":loadbalancer/")[2]
        # Target groups of this account and region, named exactly (never a wildcard).
        self._target_group = re.compile(
            re.escape(spec.load_balancer_arn.partition(":loadbalancer/")[0]) + r":targetgroup/[\w-]+/[0-9a-f]+"
        )

    def scope(self, order: GrantOrder) -> str:
        return f"{KIND}:{_require_role(order)}:{order.request_id}"

    def document(self, request_id: str, ends_at: datetime, target_groups: Iterable[str] = ()) -> dict[str, Any]:
        """The policy for one request on this spec's load balancer, until `ends_at`."""
        return policy_document(self.spec, request_id, ends_at, target_groups)

    def target_groups(self) -> list[str]:
        """The target groups the load balancer's listeners forward to now: default actions and every rule's."""
        arn = self.spec.load_balancer_arn
        groups: list[str] = []
        listeners: list[ListenerTypeDef] = []
        with self._elb_errors("elasticloadbalancing:DescribeListeners"):
            for listed in self.elbv2.get_paginator("describe_listeners").paginate(LoadBalancerArn=arn):
                listeners.extend(listed["Listeners"])
        for listener in listeners:
            groups.extend(aws.forwarded_to(listener.get("DefaultActions", [])))
            if ":listener/app/" not in listener["ListenerArn"]:
                continue  # only an ALB's listeners have rules
            # A listener deleted meanwhile has no rules left to forward anywhere.
            with self._elb_errors("elasticloadbalancing:DescribeRules", passing={"ListenerNotFound"}):
                for page in self.elbv2.get_paginator("describe_rules").paginate(ListenerArn=listener["ListenerArn"]):
                    for rule in page["Rules"]:
                        groups.extend(aws.forwarded_to(rule.get("Actions", [])))
        return sorted(set(groups))

    def apply(self, order: GrantOrder) -> list[ManagedObject]:
        role = _require_role(order)
        name = policy_name(order.request_id)
        if not markers.REQUEST_ID.match(name):
            raise ProviderError(f"request id {order.request_id} cannot name an IAM policy")
        groups = self.target_groups()
        document = json.dumps(self.document(order.request_id, order.ends_at, groups), separators=(",", ":"))
        # Putting the same name again replaces the document: that is how an extension moves the end.
        with self._errors("iam:PutRolePolicy", role):
            self.iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=document)
        managed = self._read(role, name)
        if managed is None:
            raise ProviderError(f"policy {name} on IAM role {role} vanished right after the grant; retry the request")
        return [managed]

    def list_managed(self) -> list[ManagedObject]:
        """Each role's policies named like a request, read CALL_THREADS at a time (IAM reads one policy a call)."""
        named = [(role, name) for role in self.role_names for name in self._policy_names(role)]
        read = in_parallel(lambda policy: self._read(*policy), named, self.threads)
        return [managed for managed in read if managed is not None]

    def read(self, ref: str) -> ManagedObject | None:
        role, _, name = ref.partition("/")
        return self._read(role, name)

    def objects_for(self, request_id: str) -> list[ManagedObject] | None:
        """No query of its own: which role holds a request's policy is known only by listing them."""
        return None

    def restore(self, now: datetime) -> list[str]:
        """Nothing to restore: each lease lives in its policy's condition."""
        return []

    def snapshot(self, order: GrantOrder) -> Entries:
        """The load balancer the grant gives actions on, read as the ALB kind reads it (attributes, listeners,
        rules other than jit-lb's, target groups with their attributes and targets: aws_alb.balancer_entries);
        then the grant's role's other policies: inline ones with a digest of their document, and attached ones.

        jit-lb's own inline policies (a request id's name and jit-lb's statement id, whatever load balancer
        they name) are left out.
        """
        role = _require_role(order)
        entries: Entries = balancer_entries(self.elbv2, self.spec.load_balancer_arn, self._elb_errors)
        here = f"IAM role {role}"
        names: list[str] = []
        with self._errors("iam:ListRolePolicies", role):
            for page in self.iam.get_paginator("list_role_policies").paginate(RoleName=role):
                names.extend(page["PolicyNames"])
        for index, name in enumerate(sorted(names)):
            if index >= SNAPSHOT_DOCUMENTS:
                if not markers.REQUEST_ID.match(name):  # named like a request: most likely jit-lb's own, unread
                    entries[f"{here}: inline policy {name}"] = "present (document not read)"
                continue
            with self._errors("iam:GetRolePolicy", role, passing={"NoSuchEntity"}) as gone:
                document = _document(self.iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
            statements = _statements(document)
            if gone or (markers.REQUEST_ID.match(name) and statements and _marker(statements, name)):
                continue
            canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
            digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
            count = len(statements) if statements is not None else 0
            entries[f"{here}: inline policy {name}"] = f"{count} statement(s), document sha256 {digest}"
        with self._errors("iam:ListAttachedRolePolicies", role):
            for listed in self.iam.get_paginator("list_attached_role_policies").paginate(RoleName=role):
                for attached in listed["AttachedPolicies"]:
                    entries[f"{here}: attached policy {attached.get('PolicyName')}"] = str(attached.get("PolicyArn"))
        return entries

    def use_of(self, cidr: str) -> Use | None:
        """Not counted: an IAM grant has no source to count (CloudTrail records its calls; see docs/policy.md)."""
        return None

    def drop_all(self, objects: list[ManagedObject]) -> int:
        """Delete each policy (IAM deletes one a call), CALL_THREADS at a time."""
        return drop_side_by_side(self._delete, objects, self.threads)

    def drop(self, obj: ManagedObject, request_ids: set[str], fresh: bool = False) -> bool:
        if obj.request_ids() - request_ids:
            # One policy serves one request: another request's lease keeps it.
            return False
        self._delete(obj)
        return True

    def _delete(self, obj: ManagedObject) -> None:
        role, _, name = obj.ref.partition("/")
        with self._errors("iam:DeleteRolePolicy", role, passing={"NoSuchEntity"}):
            self.iam.delete_role_policy(RoleName=role, PolicyName=name)

    def judge(self, role: str, name: str, raw_document: object) -> ManagedObject | None:
        """One inline policy as this provider sees it; None when it is not a grant on this load balancer.

        A policy named like a request id is this load balancer's unless its document names only other
        load balancers, or names none and carries no statement id of ours (someone's own `jit-…`
        policy), or names none and allows Describe actions alone while this spec's grants name the
        load balancer. A document that names no load balancer yet allows more (one of ours whose
        resources were widened to `*`) is claimed, and reported, by every IAM target.

        Ours, it is listed with its lease and, when it is not the document `apply` writes (give or take
        which target groups the listeners used then), with the difference as its anomaly. Our
        statement id with an end that cannot be read is a lease that has ended, not an anomaly.
        """
        if not markers.REQUEST_ID.match(name):
            return None
        document = _document(raw_document)
        statements = _statements(document)
        if document is None or statements is None:
            return self._managed(role, name, markers.read_lease(name, ""), "its document is not a JSON IAM policy")
        named = {balancer for statement in statements for balancer in map(_balancer_of, _resources(statement))}
        named.discard(None)
        if named and self.spec.load_balancer_arn not in named:
            return None
        marker = _marker(statements, name)
        if marker is None:
            if not named:
                return None
            return self._managed(role, name, markers.read_lease(name, ""), "no statement carries jit-lb's statement id")
        if not named and _describe_only(statements) and split_actions(self.spec.actions)[1]:
            # Another target's grant of Describe actions alone: it names no load balancer, this spec's grants do.
            return None
        lease = markers.read_lease(name, _end_of(marker))
        if lease.ends_at == markers.UNREADABLE_END:
            # Our statement without a readable end has ended, as any lease whose end cannot be read: fail closed.
            return self._managed(role, name, lease, "")
        groups = [r for statement in statements for r in _resources(statement) if self._target_group.fullmatch(r)]
        expected = self.document(name, lease.ends_at, groups)
        return self._managed(role, name, lease, _difference(document, statements, expected))

    def _managed(self, role: str, name: str, lease: Lease, anomaly: str) -> ManagedObject:
        return ManagedObject(
            kind=KIND,
            ref=f"{role}/{name}",
            scope=f"{KIND}:{role}:{name}",
            description=f"policy {name} on IAM role {role}: {', '.join(self.spec.actions)} on "
            f"{self._balancer} until {markers.format_time(lease.ends_at)}",
            leases=(lease,),
            anomaly=anomaly,
        )

    def _policy_names(self, role: str) -> list[str]:
        """The role's inline policies named like a request; none when the role does not exist."""
        names: list[str] = []
        with self._errors("iam:ListRolePolicies", role, passing={"NoSuchEntity"}):
            for page in self.iam.get_paginator("list_role_policies").paginate(RoleName=role):
                names.extend(page["PolicyNames"])
        return [name for name in names if markers.REQUEST_ID.match(name)]

    def _read(self, role: str, name: str) -> ManagedObject | None:
        """The policy as a managed object, or None when it is gone or is not one of ours for this load balancer."""
        if not markers.REQUEST_ID.match(name):
            return None
        with self._errors("iam:GetRolePolicy", role, passing={"NoSuchEntity"}) as passed:
            response = self.iam.get_role_policy(RoleName=role, PolicyName=name)
        if passed:
            return None
        return self.judge(role, name, response["PolicyDocument"])

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

    def _elb_errors(self, action: str, passing: Iterable[str] = ()) -> AbstractContextManager[aws.Passed]:
        """Errors of reading the load balancer's listeners, in words."""
        arn = self.spec.load_balancer_arn

        def explain(code: str) -> ProviderError | None:
            if code == "LoadBalancerNotFound":
                return ProviderError(f"load balancer {arn} not found; check load_balancer_arn in the policy file")
            return None

        return aws.translated(action, f"load balancer {arn}", passing, explain)


def _require_role(order: GrantOrder) -> str:
    if not order.role_name:
        raise ProviderError(f"request {order.request_id} has no AWS role name for an IAM grant")
    return order.role_name


def _document(raw: object) -> dict[str, Any] | None:
    """A policy document as a dict, or None when it is not one (botocore decodes it; the API sends URL-encoded JSON)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(unquote(raw))
        except ValueError:
            return None
    return raw if isinstance(raw, dict) else None


def _statements(document: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The document's statements (IAM allows one statement without a list), or None when they are not statements."""
    if document is None:
        return None
    statements = document.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not all(isinstance(statement, dict) for statement in statements):
        return None
    return statements


def _resources(statement: dict[str, Any]) -> list[str]:
    resources = statement.get("Resource", [])
    if isinstance(resources, str):
        return [resources]
    return [str(resource) for resource in resources] if isinstance(resources, list) else []


def _describe_only(statements: list[dict[str, Any]]) -> bool:
    """Whether every action the statements allow is a Describe action."""
    return all(action.lower().startswith(_DESCRIBE) for s in statements for action in _items(s.get("Action", [])))


def _balancer_of(resource: str) -> str | None:
    """The ARN of the load balancer an ELB resource ARN belongs to, or None for anything else."""
    match = _BALANCER_OF.match(resource)
    return f"{match['prefix']}:loadbalancer/{match['path']}" if match else None


def _marker(statements: list[dict[str, Any]], request_id: str) -> dict[str, Any] | None:
    """The statement whose id marks the policy as ours: the scoped one, else the Describe one."""
    marker = re.escape(_sid_marker(request_id))
    for pattern in (rf"{marker}Until\d{{8}}T\d{{6}}Z", rf"{marker}{DESCRIBE_SID}Until\d{{8}}T\d{{6}}Z"):
        found = next((s for s in statements if re.fullmatch(pattern, str(s.get("Sid", "")))), None)
        if found is not None:
            return found
    return None


def _end_of(statement: dict[str, Any]) -> str:
    """The statement's DateLessThan on aws:CurrentTime: the end AWS enforces, so the lease's end."""
    condition = statement.get("Condition", {})
    date = condition.get("DateLessThan", {}) if isinstance(condition, dict) else {}
    return str(date.get("aws:CurrentTime") if isinstance(date, dict) else None)


def _difference(document: dict[str, Any], statements: list[dict[str, Any]], expected: dict[str, Any]) -> str:
    """How `document` differs from the `expected` one, in words; "" when it does not."""
    if document.get("Version") != VERSION:
        return f"its Version is {_quoted(document.get('Version'))}, not {VERSION}"
    if set(document) - {"Version", "Statement"}:
        return f"it has {', '.join(sorted(set(document) - {'Version', 'Statement'}))} besides its statements"
    have = {str(statement.get("Sid", "")): statement for statement in statements}
    want = {str(statement["Sid"]): statement for statement in expected["Statement"]}
    if len(have) != len(statements) or set(have) != set(want):
        return f"its statements are {', '.join(sorted(have)) or 'none'}, not {', '.join(sorted(want))}"
    for sid, wanted in want.items():
        statement = have[sid]
        if set(statement) != _KNOWN_KEYS:
            odd = sorted(set(statement) ^ _KNOWN_KEYS)
            return f"statement {sid} has {', '.join(odd)} where jit-lb writes {', '.join(sorted(_KNOWN_KEYS))}"
        for key in ("Action", "Resource"):
            have_items, want_items = _items(statement[key]), _items(wanted[key])
            if have_items != want_items:
                extra = ", ".join(map(markers.shown, sorted(have_items - want_items)))
                lacking = ", ".join(map(markers.shown, sorted(want_items - have_items)))
                parts = [f"{key} {extra} beyond jit-lb's" if extra else "", f"no {key} {lacking}" if lacking else ""]
                return f"statement {sid} has {' and '.join(part for part in parts if part)}"
        for key in ("Effect", "Condition"):
            if statement[key] != wanted[key]:
                return f"statement {sid} has {key} {_quoted(statement[key])}, not {_quoted(wanted[key])}"
    return ""


def _items(value: object) -> set[str]:
    """An Action or Resource element as a set: one string, or a list of them."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {item if isinstance(item, str) else json.dumps(item) for item in value}
    return {json.dumps(value)}


def _quoted(value: object) -> str:
    return markers.shown(json.dumps(value, sort_keys=True))
