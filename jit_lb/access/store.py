"""Requests in Redis, changed only by atomic compare-and-set transitions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import redis
import redis.asyncio
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from jit_lb.access.errors import NotFoundError, StoreUnavailableError, TransitionError
from jit_lb.access.requests import AccessRequest, Status, new_request_id

PREFIX = "jit:"
_REQUEST = PREFIX + "req:"
_INDEX = PREFIX + "index"  # every request id, scored by creation time
_OPEN = PREFIX + "open"  # pending, approved and granted ids
_PENDING = PREFIX + "pending"  # pending ids, scored by when they expire
_GRANTED = PREFIX + "granted"  # granted ids, scored by when they end
_OUTBOX = PREFIX + "outbox"  # new request ids whose approval card a worker is to post
_LOCK = PREFIX + "lock:"  # one lock per scope at the load balancer
_CLAIM = PREFIX + "enqueued:"  # a job's id, held while that job counts as queued
_HISTORY_SECONDS = 90 * 86400  # closed requests stay readable this long; the audit log keeps them for good

Transition = Callable[[AccessRequest], AccessRequest]

# A new request, its indexes (what _index writes for a pending one) and its place in the card outbox,
# in one round trip, only if the id is free.
_CREATE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
redis.call('LPUSH', KEYS[5], ARGV[2])
return 1
"""
_CREATE_KEYS = (_INDEX, _OPEN, _PENDING, _OUTBOX)
_ID_ATTEMPTS = 20


def haproxy_book_key(runtime_api: str, acl: str) -> str:
    """The prefix of the HAProxy provider's lease book for one ACL (its entries, leases and locks)."""
    return f"{PREFIX}haproxy:{runtime_api}:{acl}"


def connect(url: str) -> redis.Redis:
    """A client that fails fast when Redis is away, instead of hanging a Slack request."""
    return redis.Redis.from_url(
        url, socket_timeout=3, socket_connect_timeout=2, health_check_interval=30, retry_on_timeout=True
    )


def connect_async(url: str) -> redis.asyncio.Redis:
    """`connect`'s asyncio twin, for the web process's event loop."""
    return redis.asyncio.Redis.from_url(
        url, socket_timeout=3, socket_connect_timeout=2, health_check_interval=30, retry_on_timeout=True
    )


def _create_call(request: AccessRequest) -> tuple[list[str], list[str | float]]:
    """KEYS and ARGV of the _CREATE script for a new (pending) request."""
    assert request.status is Status.PENDING, "only a pending request is created"
    keys = [_REQUEST + request.id, *_CREATE_KEYS]
    args: list[str | float] = [
        request.model_dump_json(),
        request.id,
        request.created_at.timestamp(),
        request.pending_until.timestamp(),
    ]
    return keys, args


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as err:
        raise StoreUnavailableError(f"Redis could not be reached ({err})") from err


class RequestStore:
    """Persistence of AccessRequests; every status change goes through `transition`."""

    def __init__(self, client: redis.Redis, url: str | None = None) -> None:
        self.redis = client
        self._create = client.register_script(_CREATE)
        # The web process's event loop stores new requests through an asyncio client, made in that loop on first use.
        self._url = url
        self._async_create: AsyncScript | None = None

    def create(self, build: Callable[[str], AccessRequest]) -> AccessRequest:
        """Store a new request under a fresh id that no other request has."""
        with _reachable():
            for _ in range(_ID_ATTEMPTS):
                request = build(new_request_id())
                if self._create(*_create_call(request)):
                    return request
        raise StoreUnavailableError("could not find a free request id")

    async def create_async(self, build: Callable[[str], AccessRequest]) -> AccessRequest:
        """`create` for an event loop: the same script, through an asyncio client, so the loop never blocks."""
        if self._url is None:
            return self.create(build)  # a store made from a client alone has no asyncio twin
        if self._async_create is None:
            self._async_create = connect_async(self._url).register_script(_CREATE)
        script = self._async_create
        with _reachable():
            for _ in range(_ID_ATTEMPTS):
                request = build(new_request_id())
                if await script(*_create_call(request)):
                    return request
        raise StoreUnavailableError("could not find a free request id")

    def next_to_announce(self, timeout: float) -> str | None:
        """The oldest new request whose card is still to be posted, waiting up to `timeout` seconds for one."""
        with _reachable():
            item = self.redis.brpop([_OUTBOX], timeout=timeout)
        return _text(item[1]) if item else None

    def announce_later(self, request_id: str) -> None:
        """Queue a request whose card (an extension's, say) a worker is to post, as `create` does for a new one."""
        with _reachable():
            self.redis.lpush(_OUTBOX, request_id)

    def claim(self, name: str, seconds: int) -> bool:
        """True for the first caller to claim `name` within `seconds`: one job queued however many loops look."""
        with _reachable():
            return bool(self.redis.set(_CLAIM + name, 1, nx=True, ex=seconds))

    def claim_many(self, names: list[str], seconds: int) -> list[bool]:
        """`claim` for many names in one round trip, each answer in the order of `names`."""
        with _reachable(), self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.set(_CLAIM + name, 1, nx=True, ex=seconds)
            return [bool(won) for won in pipe.execute()]

    def take_turn(self, name: str, holder: str, seconds: float) -> bool:
        """True when `holder` takes the turn `name` for `seconds` (the sweep's: one worker a period)."""
        with _reachable():
            return bool(self.redis.set(PREFIX + "turn:" + name, holder, nx=True, px=int(seconds * 1000)))

    def get(self, request_id: str) -> AccessRequest:
        with _reachable():
            raw = self.redis.get(_REQUEST + request_id)
        if raw is None:
            raise NotFoundError(f"there is no request {request_id}")
        return AccessRequest.model_validate_json(raw)

    def find(self, request_id: str) -> AccessRequest | None:
        try:
            return self.get(request_id)
        except NotFoundError:
            return None

    def find_many(self, request_ids: set[str]) -> dict[str, AccessRequest]:
        """The requests Redis knows among `request_ids`, in one round trip."""
        ordered = sorted(request_ids)
        if not ordered:
            return {}
        with _reachable():
            raws = self.redis.mget([_REQUEST + request_id for request_id in ordered])
        return {rid: AccessRequest.model_validate_json(raw) for rid, raw in zip(ordered, raws, strict=True) if raw}

    def transition(self, request_id: str, change: Transition) -> tuple[AccessRequest, AccessRequest]:
        """Apply `change` atomically: it sees the current request and its result replaces it.

        Returns (before, after). If another process changed the request meanwhile, `change` runs
        again on the new state, so two clicks at once are judged one after the other.
        """
        key = _REQUEST + request_id
        with _reachable(), self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    if raw is None:
                        raise NotFoundError(f"there is no request {request_id}")
                    before = AccessRequest.model_validate_json(raw)
                    after = change(before)
                    if after.id != before.id:
                        raise TransitionError("a transition cannot change a request's id")
                    pipe.multi()
                    pipe.set(key, after.model_dump_json())
                    self._index(pipe, after)
                    pipe.execute()
                    return before, after
                except WatchError:
                    continue

    def update(self, request_id: str, **fields: Any) -> AccessRequest:
        """Change fields that are not the status (where the card is, say)."""
        return self.transition(request_id, lambda request: request.model_copy(update=fields))[1]

    def open_requests(self) -> list[AccessRequest]:
        with _reachable():
            ids = sorted(_text(member) for member in self.redis.smembers(_OPEN))
        return [request for request in map(self.find, ids) if request is not None]

    def granted_until(self, moment: datetime) -> list[str]:
        """Ids of granted requests whose end is at or before `moment`."""
        with _reachable():
            return [_text(m) for m in self.redis.zrangebyscore(_GRANTED, "-inf", moment.timestamp())]

    def grants_ended(self, moment: datetime) -> dict[str, int]:
        """Granted requests whose end is at or before `moment`, each with its end (whole epoch seconds)."""
        with _reachable():
            pairs: list[tuple[bytes, float]] = self.redis.zrangebyscore(  # type: ignore[assignment]
                _GRANTED, "-inf", moment.timestamp(), withscores=True
            )
        return {_text(member): int(score) for member, score in pairs}

    def pending_until(self, moment: datetime) -> list[str]:
        """Ids of pending requests whose approval window closed at or before `moment`."""
        with _reachable():
            return [_text(m) for m in self.redis.zrangebyscore(_PENDING, "-inf", moment.timestamp())]

    @contextlib.contextmanager
    def lock(self, scope: str, timeout: float = 120.0) -> Iterator[None]:
        """Serialise work on one object at the load balancer across every worker."""
        with _reachable(), self.redis.lock(_LOCK + scope, timeout=timeout, blocking_timeout=timeout):
            yield

    @staticmethod
    def _index(pipe: Any, request: AccessRequest) -> None:
        pipe.zadd(_INDEX, {request.id: request.created_at.timestamp()})
        if request.status.is_open:
            pipe.sadd(_OPEN, request.id)
        else:
            pipe.srem(_OPEN, request.id)
            pipe.expire(_REQUEST + request.id, _HISTORY_SECONDS)
        if request.status is Status.PENDING:
            pipe.zadd(_PENDING, {request.id: request.pending_until.timestamp()})
        else:
            pipe.zrem(_PENDING, request.id)
        if request.status is Status.GRANTED and request.ends_at is not None:
            pipe.zadd(_GRANTED, {request.id: request.ends_at.timestamp()})
        else:
            pipe.zrem(_GRANTED, request.id)
