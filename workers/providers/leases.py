"""The markers jit-lb leaves at a load balancer: lease times, the managed and lease tags, and a grant's source CIDR."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import UTC, datetime

from workers.providers.base import GrantOrder, Lease, ProviderError

MARKER_PREFIX = "jit-lb"
# On AWS objects: `jit-lb:managed` = `true` marks the object as ours, `jit-lb:lease:<request id>` = its end.
MANAGED_TAG = f"{MARKER_PREFIX}:managed"
MANAGED_VALUE = "true"
LEASE_TAG = f"{MARKER_PREFIX}:lease:"
# A lease whose end cannot be read has ended: fail closed.
UNREADABLE_END = datetime(1970, 1, 1, tzinfo=UTC)

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(moment: datetime) -> str:
    """The marker form of a time: ISO 8601, UTC, whole seconds, `Z`."""
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """Read a marker time back; raise ValueError when it is not one."""
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def read_lease(request_id: str, end: str) -> Lease:
    """One request's lease from the marker form of its end; an end that cannot be read has passed."""
    try:
        return Lease(request_id=request_id, ends_at=parse_time(end))
    except ValueError:
        return Lease(request_id=request_id, ends_at=UNREADABLE_END)


def lease_key(request_id: str) -> str:
    """The tag key that holds one request's lease; the tag's value is the lease's end."""
    return LEASE_TAG + request_id


def is_managed(tags: Mapping[str, str]) -> bool:
    """Whether an object's tags (key -> value) mark it as jit-lb's."""
    return tags.get(MANAGED_TAG) == MANAGED_VALUE


def read_leases(tags: Mapping[str, str]) -> list[Lease]:
    """The leases an object's tags (key -> value) hold, in the tags' order."""
    return [read_lease(key.removeprefix(LEASE_TAG), value) for key, value in tags.items() if key.startswith(LEASE_TAG)]


def require_cidr(order: GrantOrder) -> str:
    """The order's source network in normal form; a ProviderError naming the request when it has none or a bad one."""
    if not order.cidr:
        raise ProviderError(f"request {order.request_id} has no source CIDR for its {order.spec.kind} grant")
    try:
        return str(ipaddress.ip_network(order.cidr, strict=True))
    except ValueError as err:
        raise ProviderError(
            f"request {order.request_id} has `{order.cidr}` as its source, not a network in CIDR form ({err})"
        ) from None
