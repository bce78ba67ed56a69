"""The provider for a grant spec, made once per distinct spec and process."""

from __future__ import annotations

import threading

import redis

from jit_lb.access.policy import GrantSpec, Policy
from workers.providers.base import Provider

_cache: dict[str, Provider] = {}
_specs: dict[str, GrantSpec] = {}
_lock = threading.Lock()


def provider_for(spec: GrantSpec, client: redis.Redis, policy: Policy) -> Provider:
    key = spec.model_dump_json()
    with _lock:
        provider = _cache.get(key)
        if provider is None:
            provider = _cache[key] = _make(spec, client, policy)
            _specs[key] = spec
        return provider


def _make(spec: GrantSpec, client: redis.Redis, policy: Policy) -> Provider:
    # Imported here so that a process only loads the SDKs of the kinds its policy uses.
    if spec.kind == "aws_security_group":
        from workers.providers.aws_sg import SecurityGroupProvider

        return SecurityGroupProvider(spec)
    if spec.kind == "aws_alb_listener_rule":
        from workers.providers.aws_alb import ListenerRuleProvider

        return ListenerRuleProvider(spec)
    if spec.kind == "aws_iam_policy":
        from workers.providers.aws_iam import IamPolicyProvider

        roles = sorted({p.aws_role_name for p in policy.principals.values() if p.aws_role_name})
        return IamPolicyProvider(spec, role_names=roles)
    if spec.kind == "nginx_allowlist":
        from workers.providers.nginx import NginxAllowlistProvider

        return NginxAllowlistProvider(spec)
    from workers.providers.haproxy import HaproxyAclProvider

    return HaproxyAclProvider(spec, client)


def known_specs(policy: Policy) -> list[GrantSpec]:
    """Each spec of the policy, and each other spec this process has worked on (a grant recorded under a spec the
    policy has left): what a sweep without Redis, which cannot read the open grants' specs, looks at."""
    specs = {spec.model_dump_json(): spec for spec in specs_of(policy)}
    with _lock:
        specs.update(_specs)
    return list(specs.values())


def specs_of(policy: Policy) -> list[GrantSpec]:
    """Each distinct grant spec the policy names, once."""
    seen: dict[str, GrantSpec] = {}
    for target in policy.targets.values():
        seen.setdefault(target.grant.model_dump_json(), target.grant)
    return list(seen.values())
