"""Reading moto's state in this process, and two fixes that make moto's cost per call grow like AWS's."""

from __future__ import annotations

import copy
import functools
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core import responses as moto_responses
from moto.core.base_backend import BackendDict
from moto.core.responses import BaseResponse
from moto.core.utils import method_names_from_class
from moto.ec2.exceptions import InvalidGroupIdMalformedError, InvalidSecurityGroupRuleIdNotFoundError
from moto.ec2.models import ec2_backends
from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.models.security_groups import SecurityGroupBackend
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix, is_valid_security_group_id
from moto.elbv2.models import elbv2_backends

from workers.providers.markers import parse_time

LEASE_PREFIX = "jit-lb:lease:"
REGION = "us-east-1"


def _get_tags(self: Any) -> list[dict[str, str]]:
    resource_id = self.id
    if not resource_id:
        return []
    kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
    tags = dict(self.ec2_backend.tags.get(resource_id, {}))
    return [{"resource_id": resource_id, "key": k, "value": v, "resource_type": kind} for k, v in tags.items()]


_stock_describe_rules = SecurityGroupBackend.describe_security_group_rules


def _describe_security_group_rules(self: Any, sg_rule_ids: list[str], filters: dict[str, list[str]]) -> list[Any]:
    wanted = set(filters.get("group-id", []))
    if sg_rule_ids:
        return _rules_by_id(self, sg_rule_ids, filters)
    if not wanted:
        return _stock_describe_rules(self, sg_rule_ids, filters)  # type: ignore[no-any-return]
    for group_id in wanted:
        if not is_valid_security_group_id(group_id):
            raise InvalidGroupIdMalformedError(group_id)
    return _described([rule for group_id, rule in _region_rules(self) if group_id in wanted], filters)


def _rules_by_id(self: Any, sg_rule_ids: list[str], filters: dict[str, list[str]]) -> list[Any]:
    """Stock moto's answer for rules named by id, copying only those rules instead of every rule in the region."""
    ids = set(sg_rule_ids)
    found = {rule.id: rule for _, rule in _region_rules(self) if rule.id in ids}
    for rule_id in sg_rule_ids:
        if rule_id not in found:
            raise InvalidSecurityGroupRuleIdNotFoundError(rule_id)
    return _described(list(found.values()), filters)


def _region_rules(self: Any) -> Iterator[tuple[str, Any]]:
    """(group id, rule) for every rule of every group in the region, as moto holds them."""
    for vpc_groups in list(self.groups.values()):
        for group_id, group in list(vpc_groups.items()):
            for rule in list(itertools.chain(group.egress_rules, group.ingress_rules)):
                yield group_id, rule


def _described(rules: list[Any], filters: dict[str, list[str]]) -> list[Any]:
    """Copies of `rules` as stock moto describes them (no port is -1), those that match `filters`."""
    copies = [copy.copy(rule) for rule in rules]
    for rule in copies:
        if rule.from_port is None:
            rule.from_port = -1
        if rule.to_port is None:
            rule.to_port = -1
    return [rule for rule in copies if rule.matches_filters(filters)]


def install_speedups() -> None:
    """Replace three of moto's costs, none of which AWS puts on a caller, with lookups that give the same answers.

    Two grow with every rule in the region, not with the answer: `get_tags` scans every tag of
    every resource for each rule it renders, and `describe_security_group_rules` copies every
    rule of every group before filtering by group or by rule id. The third is per call: moto
    lists its handler class's methods with `inspect.getmembers` on every request. At 5,000
    tagged rules one describe of a 50-rule group takes ~470 ms (~105 ms with these fixes), so
    without them the figures would measure moto. `python -m bench --stock-moto` leaves moto as
    it is.
    """
    TaggedEC2Resource.get_tags = _get_tags  # type: ignore[method-assign]
    # Every call lists its handler class's methods with inspect.getmembers; the answer never changes.
    moto_responses.method_names_from_class = functools.cache(method_names_from_class)
    SecurityGroupBackend.describe_security_group_rules = _describe_security_group_rules  # type: ignore[method-assign]


class MotoMeter:
    """CPU seconds moto's threads spend in each API action (handling and rendering), counted while installed."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stock: Callable[..., Any] | None = None

    def __enter__(self) -> MotoMeter:
        self._stock = stock = BaseResponse.call_action
        meter = self

        def call_action(response: Any) -> Any:
            started = time.thread_time()
            try:
                return stock(response)
            finally:
                with meter._lock:
                    meter.seconds[response._get_action()] += time.thread_time() - started
                    meter.calls[response._get_action()] += 1

        BaseResponse.call_action = call_action  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        BaseResponse.call_action = self._stock  # type: ignore[method-assign]

    def text(self, per: int, what: str) -> str:
        """Per `what` (a grant, a revoke): moto's CPU ms, and the calls, by action."""
        total = sum(self.seconds.values())
        parts = ", ".join(
            f"{action} {self.calls[action] / per:.1f}x {self.seconds[action] / per * 1000:.0f} ms"
            for action, _ in self.seconds.most_common(4)
        )
        return f"moto CPU per {what}: {total / per * 1000:.0f} ms ({parts})"


def reset_moto() -> None:
    """Forget every resource moto holds (its state is global to this process, across Stacks)."""
    BackendDict.reset()


@dataclass(frozen=True)
class LeaseRule:
    """An ingress rule at moto holding a request's lease."""

    rule_id: str
    group_id: str
    cidr: str
    ends_at: datetime


class MotoView:
    """Ingress rules with jit-lb leases, read straight from moto's memory.

    moto serves from this process (ThreadedMotoServer), so its state can be read without HTTP:
    cheap enough to poll every 10 ms, where one DescribeSecurityGroupRules costs moto tens of
    milliseconds of this process's GIL, which the workers' own calls to moto need.
    """

    def __init__(self, group_ids: set[str], region: str = REGION) -> None:
        self.group_ids = group_ids
        self.region = region

    def leases(self) -> dict[str, LeaseRule]:
        """Each request id with a lease on a rule of the watched groups, and that rule."""
        backend = ec2_backends[DEFAULT_ACCOUNT_ID][self.region]
        found: dict[str, LeaseRule] = {}
        for vpc_groups in list(backend.groups.values()):
            for group_id, group in list(vpc_groups.items()):
                if group_id not in self.group_ids:
                    continue
                for rule in list(group.ingress_rules):
                    for key, value in dict(backend.tags.get(rule.id, {})).items():
                        if key.startswith(LEASE_PREFIX):
                            found[key.removeprefix(LEASE_PREFIX)] = LeaseRule(
                                rule.id, group_id, str(rule.ip_range.get("CidrIp", "")), parse_time(value)
                            )
        return found

    def rule_ids(self) -> set[str]:
        """The ids of every ingress rule in the watched groups: a cheaper poll than `leases` once the ids are known."""
        backend = ec2_backends[DEFAULT_ACCOUNT_ID][self.region]
        return {
            rule.id
            for vpc_groups in list(backend.groups.values())
            for group_id, group in list(vpc_groups.items())
            if group_id in self.group_ids
            for rule in list(group.ingress_rules)
        }


def listener_rule_arns(listener_arns: set[str], region: str = REGION) -> set[str]:
    """The ARNs of the non-default rules on those ALB listeners, read straight from moto's memory."""
    backend = elbv2_backends[DEFAULT_ACCOUNT_ID][region]
    return {
        arn
        for balancer in list(backend.load_balancers.values())
        for listener_arn, listener in list(balancer.listeners.items())
        if listener_arn in listener_arns
        for arn in list(listener._non_default_rules)  # moto keeps no public view of them without copying
    }
