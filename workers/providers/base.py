"""What every load balancer provider does: apply a grant, list what it manages, drop leases.

An object a provider creates (a rule, a policy, an ACL entry) carries one *lease* per request
that needs it: the request id and that request's end time. Overlapping grants that come down to
the same object add leases to it; dropping the last lease deletes the object. Where the load
balancer can hold them (AWS tags, an IAM condition), the leases live on the object itself, so
that the sweep can judge it without Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import GrantSpec
from jit_lb.access.requests import Use

_T = TypeVar("_T")
_R = TypeVar("_R")

# What a provider reads around a target (docs/policy.md): what (a rule, an attribute, a server), in words, to its
# state, in words. Bounded by the provider in how much it reads, and by workers/activity.py in what is kept.
Entries = dict[str, str]


@dataclass(frozen=True)
class GrantOrder:
    """What one request asks of a load balancer."""

    request_id: str
    target: str
    spec: GrantSpec
    ends_at: datetime
    cidr: str | None = None
    role_name: str | None = None


@dataclass(frozen=True)
class Lease:
    """One request's claim on an object, until its end."""

    request_id: str
    ends_at: datetime


@dataclass(frozen=True)
class ManagedObject:
    """An object at the load balancer that carries jit-lb's marker, with the leases it holds.

    `anomaly` is empty for an object this provider could have made for its spec. Otherwise it says,
    in words, how the object differs (a port or target group the spec does not name, a CIDR as wide
    as the internet, a lease whose request id is unreadable, a policy not of jit-lb's shape): such an
    object is left alone by the sweep and reported (docs/operating.md). An object with no lease at all has
    empty `leases` and, on that count alone, no anomaly; nor is a lease whose end cannot be read one:
    that lease has ended (`leases.UNREADABLE_END`, fail closed).
    """

    kind: str
    ref: str
    description: str
    leases: tuple[Lease, ...] = field(default_factory=tuple)
    # The same key as Provider.scope() of the orders it serves, so that the sweep and grants lock alike.
    scope: str = ""
    anomaly: str = ""

    @property
    def conforms(self) -> bool:
        """Whether the object is what this provider would have made for its spec (no anomaly)."""
        return not self.anomaly

    @property
    def ends_at(self) -> datetime | None:
        return max((lease.ends_at for lease in self.leases), default=None)

    def request_ids(self) -> set[str]:
        return {lease.request_id for lease in self.leases}

    def expired_leases(self, now: datetime) -> set[str]:
        return {lease.request_id for lease in self.leases if lease.ends_at <= now}


class Provider(Protocol):
    """A load balancer seen through one target's grant spec."""

    # True where everything the provider lists is jit-lb's alone (HAProxy: an ACL only jit-lb writes, whose
    # leases live in Redis), so an object no lease backs is access nobody granted, and the sweep removes it.
    # False where a marker could sit on someone else's object by mistake (an AWS tag): left alone, reported.
    owns_unleased: bool

    def scope(self, order: GrantOrder) -> str:
        """A key naming the object(s) `order` comes down to; grants sharing it are serialised."""
        ...

    def apply(self, order: GrantOrder) -> list[ManagedObject]:
        """Make the order's objects exist with its lease; idempotent; return them as read back."""
        ...

    def list_managed(self) -> list[ManagedObject]:
        """Every object carrying this provider's marker, as the load balancer has it now.

        Objects that do not match the spec are listed with their `anomaly`; one malformed object
        never makes the listing raise.
        """
        ...

    def drop(self, obj: ManagedObject, request_ids: set[str], fresh: bool = False) -> bool:
        """Remove those leases from `obj`; delete it when none is left. True when it was deleted.

        `fresh`: the caller read `obj` under its scope lock just now, so a provider may act on its
        leases without reading it again; otherwise (the sweep lists before it locks) it reads first.
        """
        ...

    def read(self, ref: str) -> ManagedObject | None:
        """One managed object as the load balancer has it now, by its ref; None when it is gone or not ours."""
        ...

    def drop_all(self, objects: list[ManagedObject]) -> int:
        """Remove these objects outright, every lease on them (a lockdown), as few calls as the load balancer
        allows; returns how many are gone."""
        ...

    def objects_for(self, request_id: str) -> list[ManagedObject] | None:
        """The objects holding a lease for that request by a query of the provider's own, or None without one."""
        ...

    def restore(self, now: datetime) -> list[str]:
        """Bring the load balancer back in line with what the provider's own book says; return the refs it put back.

        A no-op (nothing put back) for providers whose markers live on the objects.
        """
        ...

    def snapshot(self, order: GrantOrder) -> Entries | None:
        """An optional ability: the target's surroundings now, less jit-lb's own objects; None where not observed.

        Each entry names one thing another person could change (a rule, an attribute, a server) and
        its state, both in words, so that two snapshots compare key by key. Raises ProviderError when
        the load balancer cannot be read: a snapshot is read or said to be unreadable, never guessed.
        """
        ...

    def use_of(self, cidr: str) -> Use | None:
        """An optional ability: the source's use as the load balancer counts it now; None where it is not counted.

        Raises ProviderError when the counts exist but cannot be read (or not for this source).
        """
        ...


def objects_of(provider: Provider, request_id: str) -> list[ManagedObject]:
    """The objects that hold a lease for `request_id`.

    A provider with a query of its own (`objects_for`) asks the load balancer for just those; when
    it has none or that finds nothing, the full listing decides, so a query the load balancer reads
    differently can cost a listing but never hide an object from a revoke.
    """
    queried = provider.objects_for(request_id)
    found = [obj for obj in queried or () if request_id in obj.request_ids()]
    if found:
        return found
    return [obj for obj in provider.list_managed() if request_id in obj.request_ids()]


@dataclass(frozen=True)
class Outcome(Generic[_T, _R]):
    """What one call of `each_of` came to: its value, or the ProviderError it raised."""

    item: _T
    value: _R | None = None
    error: ProviderError | None = None


def each_of(call: Callable[[_T], _R], items: Sequence[_T], threads: int) -> list[Outcome[_T, _R]]:
    """`call` on every item, at most `threads` at once, each outcome in the order given: a ProviderError is its item's
    outcome and the others go on. Any other exception (a bug; RQ's job timeout, raised in this thread) raises as it
    is, and the calls not yet started are cancelled. At a real region's ~50 ms a call, 100 calls one after another
    take 5 s, and 16 at a time 0.35 s."""
    if threads <= 1 or len(items) <= 1:
        return [_outcome(call, item) for item in items]
    pool = ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="jit-provider")
    try:
        # Not pool.map: its first failure cancels the calls not yet started, a refusal included.
        futures = [pool.submit(_outcome, call, item) for item in items]
        outcomes = [future.result() for future in futures]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return outcomes


def _outcome(call: Callable[[_T], _R], item: _T) -> Outcome[_T, _R]:
    try:
        return Outcome(item, call(item))
    except ProviderError as err:
        return Outcome(item, error=err)


def in_parallel(call: Callable[[_T], _R], items: Sequence[_T], threads: int) -> list[_R]:
    """`each_of`'s values; the first ProviderError (in the order given) raises once every item has been tried."""
    outcomes = each_of(call, items, threads)
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error
    return [outcome.value for outcome in outcomes]  # type: ignore[misc]  # no error: each call returned its value


class PartialDropError(ProviderError):
    """Some of a `drop_all`'s objects could not be removed; the others are gone (`removed`), and each failure is in
    `failed` with its error. The message names how many and the first error."""

    def __init__(self, removed: list[ManagedObject], failed: list[tuple[ManagedObject, ProviderError]]) -> None:
        first = failed[0][1]
        super().__init__(f"{len(failed)} of {len(removed) + len(failed)} objects not removed; the first: {first}")
        self.removed = removed
        self.failed = failed


def drop_in_batches(
    delete: Callable[[Sequence[ManagedObject]], object], batches: Sequence[Sequence[ManagedObject]], threads: int
) -> int:
    """`drop_all` for a load balancer that removes objects a batch a call: `delete` each batch, `threads` at a time,
    every batch tried; how many are gone, or PartialDropError naming the ones that are and the ones that are not."""
    outcomes = each_of(delete, batches, threads)
    failed = [(obj, outcome.error) for outcome in outcomes if outcome.error is not None for obj in outcome.item]
    if failed:
        raise PartialDropError([obj for outcome in outcomes if outcome.error is None for obj in outcome.item], failed)
    return sum(len(batch) for batch in batches)


def drop_side_by_side(delete: Callable[[ManagedObject], object], objects: Sequence[ManagedObject], threads: int) -> int:
    """`drop_in_batches` for a load balancer that removes one object a call."""
    return drop_in_batches(lambda batch: delete(batch[0]), [[obj] for obj in objects], threads)
