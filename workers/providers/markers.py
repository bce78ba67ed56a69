"""The markers jit-lb leaves at a load balancer: lease times, the managed and lease tags, and a grant's source CIDR."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import MIN_IPV4_PREFIX, MIN_IPV6_PREFIX
from workers.providers.base import GrantOrder, Lease

MARKER_PREFIX = "jit-lb"
# On AWS objects: `jit-lb:managed` = `true` marks the object as ours, `jit-lb:lease:<request id>` = its end.
MANAGED_TAG = f"{MARKER_PREFIX}:managed"
MANAGED_VALUE = "true"
LEASE_TAG = f"{MARKER_PREFIX}:lease:"
# A lease whose end cannot be read has ended: fail closed.
UNREADABLE_END = datetime(1970, 1, 1, tzinfo=UTC)

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# A request id as a marker can carry it: `jit-` and lower-case letters and digits. Looser than the
# alphabet new ids are drawn from (requests.ID_PATTERN), so that changing it never strands old markers.
# A part of a request of several targets carries its own id, the request's and `-<n>`.
REQUEST_ID = re.compile(r"^jit-[a-z0-9]{1,32}(?:-[0-9]{1,2})?$")
# How much of an odd value an anomaly or an error quotes.
_SHOWN = 160


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


def shown(text: str) -> str:
    """An odd value as an anomaly or an error quotes it: control characters escaped, cut short when long."""
    escaped = text.encode("unicode_escape").decode("ascii")
    return escaped if len(escaped) <= _SHOWN else escaped[: _SHOWN - 1] + "…"


def lease_anomaly(held: Iterable[Lease]) -> str:
    """Why some of these leases cannot be jit-lb's (a request id it never writes), or "" when all can."""
    bad = [f"`{shown(lease.request_id)}`" for lease in held if not REQUEST_ID.match(lease.request_id)]
    if not bad:
        return ""
    if len(bad) == 1:
        return f"a lease names {bad[0]}, not a request id"
    return f"leases name {', '.join(bad)}, not request ids"


def cidr_anomaly(text: str | None) -> str:
    """Why `text` is not a source a grant could have opened to, or "" when it is one."""
    if not text:
        return "it has no source CIDR"
    if "%" in text:
        return f"its source `{shown(text)}` carries a zone id"
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"its source `{shown(text)}` is not a network in CIDR form"
    floor = MIN_IPV4_PREFIX if network.version == 4 else MIN_IPV6_PREFIX
    if network.prefixlen < floor:
        return f"its source {network} is wider than any grant opens (/{floor} or narrower)"
    return ""


def join_anomalies(*reasons: str) -> str:
    """Several reasons an object is not of its spec's shape, as one sentence; "" when there are none."""
    return "; ".join(reason for reason in reasons if reason)


def require_cidr(order: GrantOrder) -> str:
    """The order's source network in normal form; a ProviderError naming the request when it has none or a bad one.

    A zone id (`fe80::1%eth0`) is refused by name: Python's ipaddress accepts one, and everything
    after the `%` would reach the load balancer verbatim.
    """
    if not order.cidr:
        raise ProviderError(f"request {order.request_id} has no source CIDR for its {order.spec.kind} grant")
    if "%" in order.cidr:
        raise ProviderError(
            f"request {order.request_id} has `{shown(order.cidr)}` as its source: a zone id (`%…`) names a "
            "local interface, not a source a load balancer sees"
        )
    try:
        network = ipaddress.ip_network(order.cidr, strict=True)
    except ValueError as err:
        raise ProviderError(
            f"request {order.request_id} has `{shown(order.cidr)}` as its source, "
            f"not a network in CIDR form ({shown(str(err))})"
        ) from None
    floor = MIN_IPV4_PREFIX if network.version == 4 else MIN_IPV6_PREFIX
    if network.prefixlen < floor:
        raise ProviderError(
            f"request {order.request_id} has {network} as its source, wider than any grant opens (/{floor} or narrower)"
        )
    return str(network)
