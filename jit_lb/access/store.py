"""Requests in Redis, changed only by atomic compare-and-set transitions."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
import redis.asyncio
import structlog
from pydantic import ValidationError
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, OutOfMemoryError, ReadOnlyError, RedisError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jit_lb.access.connections import RedisAddress, connect_async
from jit_lb.access.errors import (
    LOCKED,
    LimitError,
    LockdownError,
    NotFoundError,
    StoreUnavailableError,
    TransitionError,
)
from jit_lb.access.requests import AccessRequest, Status, new_request_id
from jit_lb.access.turns import OneTurn, TurnScripts

log = structlog.get_logger("jit_lb.store")

PREFIX = "jit:"
_REQUEST = PREFIX + "req:"
_INDEX = PREFIX + "index"  # every request id, scored by creation time
_OPEN = PREFIX + "open"  # pending, approved and granted ids
_PENDING = PREFIX + "pending"  # pending ids, scored by when they expire
_GRANTED = PREFIX + "granted"  # granted ids, scored by when they end
_OUTBOX = PREFIX + "outbox"  # request ids whose approval card (a new request's, an extension's) a worker is to post
_USER_PENDING = PREFIX + "user-pending:"  # one set a user: their pending request ids
# One hash a user: each id people see (a lone request's, a group's) with how many of its requests are pending; its
# length is how many pending requests the user has, a request of several targets counting once.
_USER_VISIBLE = PREFIX + "user-visible:"
_GROUP = PREFIX + "group:"  # a request of several targets: its parts' ids, comma-separated (docs/approvals.md)
_RATE = PREFIX + "rate:"  # one counter a user and minute: the commands they sent in it
_LOCKDOWN = PREFIX + "lockdown"  # a hash while a lockdown is on: by, at, reason (it outlives every process)
_REVIEWS = PREFIX + "reviews"  # break-glass grants whose review is due, scored by when to announce them again
_USE = PREFIX + "use:"  # a grant's last seen use count and when it last changed (idle expiry)
_HOME_USERS = PREFIX + "home-users"  # who opened the App Home: only their homes are published on changes
# The ids people see (a lone request's, a group's) of new requests whose `request.created` is not yet written, scored
# by creation time: written with the request, removed once the web has recorded it (when it queues the card), set to
# minus the moment a worker claimed it for closing as never recorded (another worker may take over a claim as old as
# a mark: its worker died). Such a request is never approved (docs/auditors.md).
_UNRECORDED = PREFIX + "unrecorded"
UNRECORDED_SECONDS = 30.0  # a new request still unrecorded this long after it was stored is closed by a worker
# The ids people see of requests closed as never recorded whose person is being told so, scored by when: the web
# that records one late tells its person itself (CLOSED_UNRECORDED) and adds it, so a worker's DM then is not sent.
_CLOSED_TOLD = PREFIX + "closed-told"
CLOSED_TOLD_SECONDS = 86400  # how long an entry of _CLOSED_TOLD is kept: far longer than a notice waits in its queue
_ANNOUNCED = PREFIX + "announced:"  # one card queuing's answer, kept a minute for the same call tried again
_REFUSED = PREFIX + "refused:"  # one counted create's refusal, kept a minute for the same call tried again
_HEALTH = PREFIX + "health"  # written by the web's /healthz: a Redis that answers PING may take no write
_HOME_QUEUED = PREFIX + "home-queued:"  # a person whose opened home's publish is queued, not yet taken by a worker
HOME_QUEUED_SECONDS = 60  # a queued publish lost with its worker holds that person's next ones back this long at most
_EVENTS = PREFIX + "event:"  # Events API ids already handled (Slack retries an event not acked in 3 s)
_DELIVERIES = PREFIX + "signed:"  # signed HTTP requests already taken (timestamp and signature), for their window
_REFUSALS = PREFIX + "refusals"  # hash: refusals past a limit, counted per user and minute
_REFUSALS_DUE = PREFIX + "refusals:due"  # the same keys, scored by when their minute is over
_LOCK = PREFIX + "lock:"  # one lock per scope at the load balancer
_ENDING = PREFIX + "ending:"  # grants whose revoke has begun: an extension waiting for the lock then stands down
_ENDING_SECONDS = 86400
_CLAIM = PREFIX + "enqueued:"  # a job's id, held while that job counts as queued
_FORMS = PREFIX + "form:"  # one key a modal jit-lb opened: its callback_id, its user and its metadata's hash
_CONFIRM = PREFIX + "confirm"  # written just before a WAIT: its connection's WAIT then covers every earlier write
# Revoke jobs' spans (RevokeSpan), scored by when the job ended.
_REVOKE_WORK = PREFIX + "revoke-spans"
_REVOKE_COSTS = PREFIX + "revoke-costs"  # the last RevokeCosts measured, kept when the minute is quiet
_REVOKE_JOB = PREFIX + "revoke-job:"  # one a granted request: the id of the job that revokes it at its end
FORM_SECONDS = 86400  # a modal left open longer than this must be opened again
_HISTORY_SECONDS = 90 * 86400  # closed requests stay readable this long; the audit log keeps them for good

Transition = Callable[[AccessRequest], AccessRequest]


@dataclass(frozen=True)
class RevokeSpan:
    """One revoke job, as it went (epoch seconds): how long it waited in the queue, when it started, when access was
    gone, when its first grant's record was written (the surroundings read for the batch with it), when it ended;
    and its grants."""

    waited: float
    started: float
    gone: float
    first_record: float
    ended: float
    grants: float

    def fields(self) -> tuple[float, ...]:
        return (self.waited, self.started, self.gone, self.first_record, self.ended, self.grants)


@dataclass(frozen=True)
class MeasuredRevokeCosts:
    """What revoke jobs cost over a minute, on average, in seconds: the wait in the queue; from a job's start until
    access is gone; its first record (with the surroundings read once for the batch); each further record (None
    when no job had more than one grant)."""

    wait: float
    job: float
    first_record: float
    record: float | None

    def text(self) -> str:
        return ":".join(str(value) for value in (self.wait, self.job, self.first_record, self.record))

    @classmethod
    def parse(cls, text: str) -> MeasuredRevokeCosts:
        wait, job, first_record, record = text.split(":")
        return cls(float(wait), float(job), float(first_record), None if record == "None" else float(record))


Record = Callable[[AccessRequest, AccessRequest], None]

# How many pending requests a user has, in constant time: the length of their hash of visible ids (a request of
# several targets counts once: its parts share the id before the last '-'). A user whose pending set was written
# before the hash existed (an older jit-lb) has a set and no hash: the hash is built from the set on first use, once.
# Every script that changes the set keeps the hash in step (`seen` for a pending id, `unseen` for one leaving).
_VISIBLE = """
local function visible(id)
  return string.match(id, '^(jit%-[^-]+)') or id
end
local function counted(set, hash)
  if redis.call('EXISTS', hash) == 0 and redis.call('SCARD', set) > 0 then
    for _, id in ipairs(redis.call('SMEMBERS', set)) do redis.call('HINCRBY', hash, visible(id), 1) end
  end
  return redis.call('HLEN', hash)
end
local function seen(set, hash, id)
  counted(set, hash)
  if redis.call('SADD', set, id) == 1 then redis.call('HINCRBY', hash, visible(id), 1) end
end
local function unseen(set, hash, id)
  counted(set, hash)
  if redis.call('SREM', set, id) == 1 and redis.call('HINCRBY', hash, visible(id), -1) <= 0 then
    redis.call('HDEL', hash, visible(id))
  end
end
"""

# A request goes into or out of pending (KEYS its requester's pending set and hash; ARGV its id, 1 when pending).
_PENDING_INDEX = (
    _VISIBLE
    + """
if ARGV[2] == '1' then seen(KEYS[1], KEYS[2], ARGV[1]) else unseen(KEYS[1], KEYS[2], ARGV[1]) end
return 1
"""
)

# A new request and its indexes (what _index writes for a pending one), in one round trip, only if no lockdown is
# on, the id is free (no request, nor a group, has it) and its requester has fewer than ARGV[5] pending requests;
# the index forgets what history has; KEYS[9] marks it unrecorded. With KEYS[11] (the requester's minute, see _COUNT)
# the command that asks is counted first, in the same round trip, and refused past ARGV[7] commands that minute.
# The same create run again (the client tried again a connection cut as Redis answered) is told what its first run
# did, and does nothing more: a request already stored as ARGV[1] says is told stored, neither counted again nor
# stored a second time under another id (nobody else's json is the same); a counted command's refusal is kept a
# minute under KEYS[10], a key of this call's own, and told again, not counted again (an uncounted refusal writes
# nothing, so that a Redis that takes no writes still says why a request is refused).
_CREATE = (
    _VISIBLE
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
local told = redis.call('GET', KEYS[10])
if told then return tonumber(told) end
local function refuse(answer)
  if KEYS[11] then redis.call('SET', KEYS[10], answer, 'EX', 60) end
  return answer
end
if KEYS[11] then
  local sent = redis.call('INCR', KEYS[11])
  redis.call('EXPIRE', KEYS[11], ARGV[8])
  if sent > tonumber(ARGV[7]) then return refuse(-3) end
end
if redis.call('EXISTS', KEYS[6]) == 1 then return refuse(-2) end
if counted(KEYS[5], KEYS[8]) >= tonumber(ARGV[5]) then return refuse(-1) end
if redis.call('EXISTS', KEYS[7]) == 1 then return refuse(0) end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return refuse(0) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
seen(KEYS[5], KEYS[8], ARGV[2])
redis.call('ZADD', KEYS[9], ARGV[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[6])
return 1
"""
)

# Every part of a request of several targets, or none: KEYS the index, open, pending, the requester's pending set,
# the lockdown, the group's key, the key a lone request of the group's id would have, the requester's hash of
# visible ids, the unrecorded marks, then one key a part. ARGV: the requester's limit, the index's horizon, the group
# key's lifetime, the parts' ids joined, then json, id, created and pending_until a part, and last the group's id
# (marked unrecorded). A first part already stored as ARGV[5] says is this very create run again (see _CREATE): told
# stored, not stored again.
_CREATE_GROUP = (
    _VISIBLE
    + """
if redis.call('GET', KEYS[10]) == ARGV[5] then return 1 end
if redis.call('EXISTS', KEYS[5]) == 1 then return -2 end
if counted(KEYS[4], KEYS[8]) >= tonumber(ARGV[1]) then return -1 end
if redis.call('EXISTS', KEYS[6]) == 1 or redis.call('EXISTS', KEYS[7]) == 1 then return 0 end
for i = 10, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
redis.call('SET', KEYS[6], ARGV[4], 'EX', ARGV[3])
for i = 10, #KEYS do
  local a = 5 + (i - 10) * 4
  redis.call('SET', KEYS[i], ARGV[a])
  redis.call('ZADD', KEYS[1], ARGV[a + 2], ARGV[a + 1])
  redis.call('SADD', KEYS[2], ARGV[a + 1])
  redis.call('ZADD', KEYS[3], ARGV[a + 3], ARGV[a + 1])
  seen(KEYS[4], KEYS[8], ARGV[a + 1])
end
redis.call('ZADD', KEYS[9], ARGV[7], ARGV[#ARGV])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
return 1
"""
)
_CREATE_KEYS = (_INDEX, _OPEN, _PENDING)
# New requests recorded by the web, their cards queued (KEYS the outbox, the unrecorded marks, this call's answer,
# the closed requests whose person is told; ARGV their ids people see, in order): each still marked is unmarked and
# queued; the ids no longer marked (a worker closed them as never recorded, or they were taken back) are returned, not
# queued, and noted in KEYS[4] (this web tells their person to try again, so a worker's DM is not sent too). The
# answer is kept a minute under KEYS[3], a key of this call's own: the same call run again (the client tried again a
# connection cut as Redis answered) is told what the first run did, rather than finding its own unmarking and calling
# the requests closed.
_ANNOUNCE = """
local done = redis.call('GET', KEYS[3])
if done then return cjson.decode(done) end
local closed, queued = {}, {}
for _, id in ipairs(ARGV) do
  local score = redis.call('ZSCORE', KEYS[2], id)
  if score and tonumber(score) >= 0 then
    table.insert(queued, id)
  else
    table.insert(closed, id)
    redis.call('ZADD', KEYS[4], 'NX', redis.call('TIME')[1], id)
  end
end
for i = 1, #queued, 1000 do
  local chunk = {unpack(queued, i, math.min(i + 999, #queued))}
  redis.call('ZREM', KEYS[2], unpack(chunk))
  redis.call('LPUSH', KEYS[1], unpack(chunk))
end
redis.call('SET', KEYS[3], #closed > 0 and cjson.encode(closed) or '[]', 'EX', 60)
return closed
"""
# The replay check of a signed request (KEYS[1] its key; ARGV its call's token, then the key's lifetime): 1 for a key
# taken now, or taken by this very call run before (the client tried again a pipeline whose answer a broken connection
# lost: the key holds its token), 0 for one held by another call (two of one turn are told apart by their tokens).
_FIRST_SIGNED = """
local held = redis.call('GET', KEYS[1])
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return held == ARGV[1] and 1 or 0
"""
# A worker's claim on a new request left unrecorded since before ARGV[2]: its mark (KEYS[1], member ARGV[1]) set to
# minus now (ARGV[3]), so that a web that records it late no longer queues its card, nor another worker closes it
# too; 1 when claimed. A claim made before ARGV[2] is taken over (its worker died before closing it).
_CLAIM_UNRECORDED = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
score = tonumber(score)
local since = score >= 0 and score or -score
if since >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], -tonumber(ARGV[3]), ARGV[1])
return 1
"""
# One command counted in its minute's key, which outlives the minute: one script call, cheaper than MULTI/EXEC.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return count
"""
_ID_ATTEMPTS = 20
_RATE_WINDOW = 60  # seconds: limits.commands_per_minute counts commands in whole minutes
_TRANSITION_LOCK_SECONDS = 10.0
CONFIRM_MS = 800  # how long a write waits for a replica's confirmation (WAIT) before it counts as not done
_REPLICAS_TTL = 1.0  # seconds the master's count of connected replicas is trusted before it is asked again
CLOSED_UNRECORDED = "the request was recorded too late: it had been closed as never recorded, so it does not count"
UNCONFIRMED = "no Redis replica confirmed the write in time (a failover may be under way), so it does not count"

# Refusal summaries whose minute is over, taken (read and removed) in one step so that two workers never both
# write one.
_TAKE_REFUSALS = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local out = {}
for _, key in ipairs(due) do
  table.insert(out, key)
  table.insert(out, redis.call('HGET', KEYS[2], key) or '0')
  redis.call('HDEL', KEYS[2], key)
  redis.call('ZREM', KEYS[1], key)
end
return out
"""


@dataclass(frozen=True)
class Lockdown:
    """A lockdown in force: who turned it on, when, and why."""

    by: str
    at: datetime
    reason: str


# A lockdown is set whole, once: a second admin's `on` finds the first one's and changes nothing.
_START_LOCKDOWN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'by', ARGV[1], 'at', ARGV[2], 'reason', ARGV[3])
return 1
"""


@dataclass(frozen=True)
class RefusalSummary:
    """Refusals past a limit that were counted rather than recorded one by one: one user, one minute."""

    user: str
    window_start: datetime
    count: int


def haproxy_book_key(runtime_api: str, acl: str) -> str:
    """The prefix of the HAProxy provider's lease book for one ACL (its entries, leases and locks)."""
    return f"{PREFIX}haproxy:{runtime_api}:{acl}"


@dataclass(frozen=True)
class Counting:
    """The command a create is asked by, counted in the same round trip: its user, its time, the most a minute."""

    user: str
    now: datetime
    limit: int


def too_many_commands(limit: int) -> LimitError:
    """The refusal of a command past `limits.commands_per_minute`."""
    return LimitError(f"you sent more than {limit} `/jit` commands this minute; wait a minute and try again")


def _create_call(
    request: AccessRequest, pending_limit: int, counting: Counting | None = None
) -> tuple[list[str], list[str | float]]:
    """KEYS and ARGV of the _CREATE script for a new (pending) request (and the command that asks, if counted)."""
    assert request.status is Status.PENDING, "only a pending request is created"
    keys = [
        _REQUEST + request.id,
        *_CREATE_KEYS,
        _USER_PENDING + request.requester,
        _LOCKDOWN,
        _GROUP + request.id,
        _USER_VISIBLE + request.requester,
        _UNRECORDED,
        _REFUSED + uuid.uuid4().hex,  # this call's own: another create drawing the same id is not told its answer
    ]
    args: list[str | float] = [
        request.model_dump_json(),
        request.id,
        request.created_at.timestamp(),
        request.pending_until.timestamp(),
        pending_limit,
        request.created_at.timestamp() - _HISTORY_SECONDS,
    ]
    if counting is not None:
        keys.append(_rate_key(counting.user, counting.now)[0])
        args += [counting.limit, 2 * _RATE_WINDOW]
    return keys, args


def _create_group_call(parts: list[AccessRequest], pending_limit: int) -> tuple[list[str], list[str | float]]:
    """KEYS and ARGV of the _CREATE_GROUP script for the (pending) parts of a new request of several targets."""
    first = parts[0]
    assert first.group is not None
    assert all(p.status is Status.PENDING and p.group == first.group for p in parts)
    keys = [
        *_CREATE_KEYS,
        _USER_PENDING + first.requester,
        _LOCKDOWN,
        _GROUP + first.group,
        _REQUEST + first.group,
        _USER_VISIBLE + first.requester,
        _UNRECORDED,
        *(_REQUEST + part.id for part in parts),
    ]
    ids = ",".join(part.id for part in parts)
    args: list[str | float] = [
        pending_limit,
        first.created_at.timestamp() - _HISTORY_SECONDS,
        _HISTORY_SECONDS + 86400,
        ids,
    ]
    for part in parts:
        args += [part.model_dump_json(), part.id, part.created_at.timestamp(), part.pending_until.timestamp()]
    args.append(first.group)
    return keys, args


def _created(answer: object, request: AccessRequest, pending_limit: int, counting: Counting | None = None) -> bool:
    """Read the _CREATE script's answer: True when stored, False when the id was taken."""
    if answer == -3 and counting is not None:
        raise too_many_commands(counting.limit)
    if answer == -2:
        raise LockdownError(LOCKED)
    if answer == -1:
        raise LimitError(
            f"you already have {pending_limit} pending request(s), the most the policy allows; wait for a decision, "
            "or withdraw one"
        )
    return answer == 1


def _rate_key(user: str, now: datetime) -> tuple[str, int]:
    window = int(now.timestamp()) // _RATE_WINDOW * _RATE_WINDOW
    return f"{_RATE}{user}:{window}", window


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# Redis answers, but takes no write now: out of memory (maxmemory, noeviction), a replica (a master demoted by a
# failover, behind a plain REDIS_URL), a failed RDB save, too few replicas. Nothing can be done until it is fixed.
_NO_WRITES = ("OOM", "READONLY", "MISCONF", "NOREPLICAS", "MASTERDOWN")


def refuses_writes(err: Exception) -> bool:
    """Whether `err` is Redis saying it takes no write now (_NO_WRITES), however redis-py typed it."""
    return isinstance(err, OutOfMemoryError | ReadOnlyError) or (
        isinstance(err, ResponseError) and str(err).upper().startswith(_NO_WRITES)
    )


@contextlib.contextmanager
def reachable() -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as err:
        raise StoreUnavailableError(f"Redis could not be reached ({err})") from err
    except NoScriptError as err:  # flushed again as it was loaded: nothing ran
        raise StoreUnavailableError(f"Redis forgot jit-lb's scripts as they were loaded ({err})") from err
    except ResponseError as err:
        if refuses_writes(err):
            raise StoreUnavailableError(f"Redis takes no writes now ({err})") from err
        raise


class StoreObserver(Protocol):
    """Who hears of each stored request that could not be read (the process's metrics, jit_lb/metrics.py)."""

    def unreadable_request(self) -> None: ...


class RequestStore:
    """Persistence of AccessRequests; every status change goes through `transition`."""

    def __init__(self, client: redis.Redis, address: RedisAddress | str | None = None) -> None:
        self.redis = client
        self.observer: StoreObserver | None = None
        self._create = client.register_script(_CREATE)
        self._create_group = client.register_script(_CREATE_GROUP)
        self._count = client.register_script(_COUNT)
        # The web process's event loop stores new requests through an asyncio client, made in that loop on first use.
        self._url = RedisAddress(address) if isinstance(address, str) else address
        self._async: redis.asyncio.Redis | None = None
        self._async_scripts: dict[str, AsyncScript] = {}  # the asyncio client's scripts, by their source
        self._claim_unrecorded = client.register_script(_CLAIM_UNRECORDED)
        # What the event loop asks in one turn goes to Redis in one round trip: the ids announced (announce_async),
        # and the replay checks and creates of signed requests (first_signed_async, create_async) in one pipeline.
        self._announce_turn: OneTurn[str, None] = OneTurn(self._announce_batch)
        self._turn_scripts = TurnScripts(self._async_client)
        self._replicas: tuple[float, int] = (-_REPLICAS_TTL, 0)  # (when asked, how many)

    # --- replication --------------------------------------------------------------------------------

    def replicas(self) -> int:
        """How many replicas the master streams writes to now (asked at most once a second)."""
        known = self._known_replicas()
        if known is not None:
            return known
        with reachable():
            info = self.redis.info("replication")
        # Only replicas streaming writes count: one still in its first full sync cannot confirm anything yet.
        count = sum(
            1
            for key, value in info.items()
            if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
        )
        self._replicas = (time.monotonic(), count)
        return count

    def _known_replicas(self) -> int | None:
        """The count of replicas while it is still trusted (_REPLICAS_TTL), else None: then `replicas` asks."""
        asked, count = self._replicas
        return count if time.monotonic() - asked < _REPLICAS_TTL else None

    def confirm(self, strict: bool = True) -> None:
        """Every write made so far is on a replica too (WAIT), when the master has replicas.

        StoreUnavailableError when none confirms within CONFIRM_MS: what was written may vanish in a
        failover, so the caller does not report it as done. Not `strict` (the record of a revoke, which
        is done at the load balancer whatever Redis keeps): waited for, and only logged when unconfirmed.
        The counter written first gives this connection's WAIT a write of its own that comes after every
        earlier one, on any connection.
        """
        if not self.replicas():
            return
        with reachable(), self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(_CONFIRM)
            pipe.execute_command("WAIT", 1, CONFIRM_MS)  # type: ignore[no-untyped-call]
            _, acked = pipe.execute()
        if int(acked) < 1:
            if strict:
                raise StoreUnavailableError(UNCONFIRMED)
            log.warning("a write was not confirmed by a replica; a failover now may lose its record")

    def create(
        self, build: Callable[[str], AccessRequest], pending_limit: int = 1_000_000, counting: Counting | None = None
    ) -> AccessRequest:
        """Store a new request under a fresh id that no other request has; LimitError past `pending_limit`.

        With `counting`, the command that asks is counted first, in the same round trip (as `count_command`), and
        LimitError past its limit stores nothing. Its card is not queued here: the caller records the request
        first, then `announce_later`.
        """
        with reachable():
            for _ in range(_ID_ATTEMPTS):
                request = build(new_request_id())
                if _created(
                    self._create(*_create_call(request, pending_limit, counting)), request, pending_limit, counting
                ):
                    return request
                counting = None  # counted by the first try, whose id was taken
        raise StoreUnavailableError("could not find a free request id")

    def create_group(
        self, build: Callable[[str], list[AccessRequest]], pending_limit: int = 1_000_000
    ) -> list[AccessRequest]:
        """Store every part of a new request of several targets under a fresh id, or none of them; the request
        counts as one against `pending_limit` (LimitError past it)."""
        with reachable():
            for _ in range(_ID_ATTEMPTS):
                parts = build(new_request_id())
                if _created(self._create_group(*_create_group_call(parts, pending_limit)), parts[0], pending_limit):
                    return parts
        raise StoreUnavailableError("could not find a free request id")

    async def create_group_async(
        self, build: Callable[[str], list[AccessRequest]], pending_limit: int = 1_000_000
    ) -> list[AccessRequest]:
        """`create_group` for an event loop (in a thread: a request of several targets is the rarer case)."""
        return await asyncio.to_thread(self.create_group, build, pending_limit)

    def parts(self, request_id: str) -> list[AccessRequest]:
        """The requests an id people see stands for: a group's parts in order, or the one request of that id.

        NotFoundError when there is neither.
        """
        with reachable():
            raw = self.redis.get(_GROUP + request_id)
        if raw is None:
            return [self.get(request_id)]
        ids = _text(raw).split(",")
        found = self.find_many(set(ids))
        if not found:
            raise NotFoundError(f"there is no request {request_id}")
        return [found[part] for part in ids if part in found]

    def is_group(self, request_id: str) -> bool:
        with reachable():
            return bool(self.redis.exists(_GROUP + request_id))

    async def create_async(
        self, build: Callable[[str], AccessRequest], pending_limit: int = 1_000_000, counting: Counting | None = None
    ) -> AccessRequest:
        """`create` for an event loop: the same script, through an asyncio client, so the loop never blocks."""
        if self._url is None:  # a store made from a client alone has no asyncio twin
            return self.create(build, pending_limit, counting)
        with reachable():
            for _ in range(_ID_ATTEMPTS):
                request = build(new_request_id())
                answer = await self._turn_scripts(_CREATE, *_create_call(request, pending_limit, counting))
                if _created(answer, request, pending_limit, counting):
                    return request
                counting = None  # counted by the first try, whose id was taken
        raise StoreUnavailableError("could not find a free request id")

    def _async_client(self) -> redis.asyncio.Redis:
        if self._async is None:
            assert self._url is not None
            self._async = connect_async(self._url)
        return self._async

    def _async_script(self, source: str) -> AsyncScript:
        """The asyncio client's script of `source`, registered on first use."""
        script = self._async_scripts.get(source)
        if script is None:
            script = self._async_scripts[source] = self._async_client().register_script(source)
        return script

    def discard_group(self, group: str, part_ids: list[str], made: list[AccessRequest] | None = None) -> list[str]:
        """`discard` for every part of a request of several targets (each exactly as in `made`, when given), and the
        group itself once no part is left; the ids of the parts discarded."""
        expected = {request.id: request for request in made or []}
        gone = [part for part in part_ids if self.discard(part, expected.get(part))]
        if len(gone) == len(part_ids):
            with reachable():
                self.redis.lrem(_OUTBOX, 0, group)
                self.redis.delete(_GROUP + group)
                self.redis.zrem(_UNRECORDED, group)
        return gone

    def discard(self, request_id: str, made: AccessRequest | None = None) -> bool:
        """Take back a request just created whose record could not be written: as if it had never been stored; True
        when it was. Only a request still pending (and, given `made`, exactly as made) is taken back, in one
        transaction that a change made meanwhile (an approval, a card posted) cancels: a decision is never undone."""
        key = _REQUEST + request_id
        with reachable(), self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                raw = pipe.get(key)
                if raw is None:
                    return False
                request = self._read(request_id, raw)
                if request.status is not Status.PENDING or (made is not None and request != made):
                    return False
                pipe.multi()
                pipe.lrem(_OUTBOX, 0, request_id)
                pipe.delete(key)
                pipe.zrem(_INDEX, request_id)
                pipe.srem(_OPEN, request_id)
                pipe.zrem(_PENDING, request_id)
                if request.group is None:
                    pipe.zrem(_UNRECORDED, request_id)
                _pending_index(pipe, request.requester, request_id, pending=False)
                pipe.execute()
            except WatchError:
                return False
        return True

    def take_back(self, made: list[AccessRequest]) -> int:
        """Take back a request (or a group's parts) this process made but cannot say it made: the answer to its write
        was lost, so the person was told nothing was requested. What Redis holds exactly as made (nobody changed it
        since; another request that took its id is never touched) is discarded, each part in a transaction that a
        change made meanwhile cancels; how many parts. Raises StoreUnavailableError while Redis is out of reach."""
        if made and made[0].group is not None:
            return len(self.discard_group(made[0].group, [request.id for request in made], made))
        return sum(self.discard(request.id, request) for request in made[:1])

    async def discard_async(self, request_id: str) -> bool:
        return await asyncio.to_thread(self.discard, request_id)

    async def announce_async(self, request_id: str) -> None:
        """`announce_later` for an event loop, once the new request's `request.created` is written: its mark of
        unrecorded goes as its card is queued, in one step. StoreUnavailableError when it is no longer marked (a
        worker closed it as never recorded, the web being too slow), or when the master has replicas and none
        confirms the request (WAIT); the caller takes the request back.

        The ids announced in one turn of the loop (the commands whose records one audit batch wrote resume
        together) go in one LPUSH, in the order announced, with one WAIT for them all; each caller is told
        what the round trip did.
        """
        await self._announce_turn(request_id)

    async def _announce_batch(self, request_ids: list[str]) -> list[Exception | None]:
        closed = await self._push_announced(request_ids)
        return [StoreUnavailableError(CLOSED_UNRECORDED) if rid in closed else None for rid in request_ids]

    async def _push_announced(self, request_ids: list[str]) -> set[str]:
        replicas = self._known_replicas()
        if replicas is None:  # asked at most once a second, in a thread; every other command reads what it said
            replicas = await asyncio.to_thread(self.replicas)
        client = self._async_client()
        announce = self._async_script(_ANNOUNCE)
        with reachable():
            if not replicas:
                return await self._queue_cards(announce, request_ids)
            # The requests are confirmed before their ids go on the outbox: a worker takes an id at once (BRPOP), so
            # an id pushed before the WAIT could have its card posted, or be approved on call, while the web still
            # waited to learn that it takes the request back. The counter gives this connection's WAIT a write of its
            # own after every create (see `confirm`). The push itself is not waited for: a failover that loses it
            # loses the unmarking with it (one script), and a worker closes the confirmed request as never recorded and
            # tells its requester; a refusal then could not take back a card.
            async with client.pipeline(transaction=False) as pipe:
                pipe.incr(_CONFIRM)
                pipe.execute_command("WAIT", 1, CONFIRM_MS)
                _, acked = await pipe.execute()
            if int(acked) < 1:
                raise StoreUnavailableError(UNCONFIRMED)
            return await self._queue_cards(announce, request_ids)

    @staticmethod
    async def _queue_cards(announce: AsyncScript, request_ids: list[str]) -> set[str]:
        """Queue the cards of requests still marked unrecorded, unmarking them; the ids no longer marked."""
        answer = _ANNOUNCED + uuid.uuid4().hex  # this call's own: a retry of it finds what it did
        closed = await announce(keys=[_OUTBOX, _UNRECORDED, answer, _CLOSED_TOLD], args=request_ids)
        return {_text(request_id) for request_id in closed}

    def breakglass_granted(self, request_id: str, review_at: datetime) -> None:
        """A break-glass request turned approved, on the record: its announcement queued, its review due at
        `review_at`, and its mark of unrecorded gone, in one step. Until this is done it stays marked, and the worker
        that closes unrecorded requests finds it approved and does it instead (a web stopped just before)."""
        with reachable(), self.redis.pipeline() as pipe:
            pipe.zadd(_REVIEWS, {request_id: review_at.timestamp()})
            pipe.lpush(_OUTBOX, request_id)
            pipe.zrem(_UNRECORDED, request_id)
            pipe.execute()

    def unrecorded(self, request: AccessRequest) -> bool:
        """Whether the new request's `request.created` may not be written yet (nor ever: its web stopped first)."""
        with reachable():
            return self.redis.zscore(_UNRECORDED, request.group or request.id) is not None

    def unrecorded_before(self, moment: datetime) -> list[str]:
        """The ids people see of new requests stored before `moment` and still unrecorded (or being closed)."""
        with reachable():
            return [_text(m) for m in self.redis.zrangebyscore(_UNRECORDED, "-inf", moment.timestamp())]

    def unrecorded_ids(self) -> set[str]:
        """The ids people see of every new request still marked unrecorded (or being closed as such)."""
        with reachable():
            return {_text(m) for m in self.redis.zrange(_UNRECORDED, 0, -1)}

    def claim_unrecorded(self, request_id: str, moment: datetime, now: datetime) -> bool:
        """Claim, `now`, a new request unrecorded since before `moment`, for closing: a web recording it late then
        finds it claimed and does not queue its card, and another worker leaves it be unless the claim was made before
        `moment` too (its worker died). False when it was recorded, claimed by another or forgotten meanwhile."""
        with reachable():
            args: list[str | float] = [request_id, moment.timestamp(), now.timestamp()]
            return bool(self._claim_unrecorded(keys=[_UNRECORDED], args=args))

    def forget_unrecorded(self, request_id: str) -> None:
        """A claimed request is closed (or was decided already): its mark goes."""
        with reachable():
            self.redis.zrem(_UNRECORDED, request_id)

    def tell_closed(self, request_id: str, now: datetime) -> bool:
        """Take the telling of the person whose request (the id people see) was closed as never recorded: False when
        its web recorded it late and told them itself, or another worker's notice already did."""
        with reachable(), self.redis.pipeline() as pipe:
            pipe.zremrangebyscore(_CLOSED_TOLD, "-inf", now.timestamp() - CLOSED_TOLD_SECONDS)
            pipe.zadd(_CLOSED_TOLD, {request_id: now.timestamp()}, nx=True)
            return bool(pipe.execute()[1])

    # --- limits -------------------------------------------------------------------------------------

    def count_command(self, user: str, now: datetime) -> int:
        """Count one command of `user` in this minute; the count so far, this one included."""
        key, _ = _rate_key(user, now)
        with reachable():
            return int(self._count(keys=[key], args=[2 * _RATE_WINDOW]))

    async def count_command_async(self, user: str, now: datetime) -> int:
        """`count_command` for an event loop."""
        if self._url is None:
            return self.count_command(user, now)
        key, _ = _rate_key(user, now)
        with reachable():
            return int(await self._async_script(_COUNT)(keys=[key], args=[2 * _RATE_WINDOW]))

    def count_refusal(self, user: str, now: datetime) -> int:
        """Count one refusal past a limit for `user` in this minute; 1 for the first, which the caller records."""
        _, window = _rate_key(user, now)
        field = f"{user}|{window}"
        with reachable(), self.redis.pipeline() as pipe:
            pipe.hincrby(_REFUSALS, field, 1)
            pipe.zadd(_REFUSALS_DUE, {field: window + _RATE_WINDOW})
            count, _ = pipe.execute()
        return int(count)

    def take_refusal_summaries(self, now: datetime) -> list[RefusalSummary]:
        """The counted refusals of every minute that is over, each taken once across all workers."""
        with reachable():
            flat = self.redis.eval(_TAKE_REFUSALS, 2, _REFUSALS_DUE, _REFUSALS, now.timestamp())
        summaries = []
        for field, count in zip(flat[::2], flat[1::2], strict=True):
            user, _, window = _text(field).partition("|")
            summaries.append(RefusalSummary(user, datetime.fromtimestamp(int(window), UTC), int(_text(count))))
        return summaries

    def next_to_announce(self, timeout: float) -> str | None:
        """The oldest new request whose card is still to be posted, waiting up to `timeout` seconds for one."""
        with reachable():
            item = self.redis.brpop([_OUTBOX], timeout=timeout)
        return _text(item[1]) if item else None

    def announce_later(self, request_id: str) -> None:
        """Queue a request whose card (an extension's, say) a worker is to post, as `create` does for a new one."""
        with reachable():
            self.redis.lpush(_OUTBOX, request_id)

    def claim(self, name: str, seconds: int) -> bool:
        """True for the first caller to claim `name` within `seconds`: one job queued however many loops look."""
        with reachable():
            return bool(self.redis.set(_CLAIM + name, 1, nx=True, ex=seconds))

    def claim_many(self, names: list[str], seconds: int) -> list[bool]:
        """`claim` for many names in one round trip, each answer in the order of `names`."""
        with reachable(), self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.set(_CLAIM + name, 1, nx=True, ex=seconds)
            return [bool(won) for won in pipe.execute()]

    # --- lockdown and break-glass reviews ----------------------------------------------------------

    def start_lockdown(self, by: str, at: datetime, reason: str) -> Lockdown | None:
        """Turn the lockdown on; the one already in force when there is one (nothing is changed then)."""
        with reachable():
            if self.redis.eval(_START_LOCKDOWN, 1, _LOCKDOWN, by, at.isoformat(), reason):
                return None
        return self.lockdown()

    def end_lockdown(self) -> Lockdown | None:
        """Lift the lockdown; the one that was in force, or None when there was none."""
        current = self.lockdown()
        with reachable():
            self.redis.delete(_LOCKDOWN)
        return current

    def lockdown(self) -> Lockdown | None:
        with reachable():
            raw = self.redis.hgetall(_LOCKDOWN)
        fields = {_text(key): _text(value) for key, value in raw.items()}
        if "at" not in fields:
            return None
        return Lockdown(fields.get("by", "?"), datetime.fromisoformat(fields["at"]), fields.get("reason", ""))

    def review_due(self, request_id: str, at: datetime) -> None:
        with reachable():
            self.redis.zadd(_REVIEWS, {request_id: at.timestamp()})

    def reviewed(self, request_id: str) -> None:
        with reachable():
            self.redis.zrem(_REVIEWS, request_id)

    def reviews_due(self, now: datetime) -> list[str]:
        with reachable():
            return [_text(m) for m in self.redis.zrangebyscore(_REVIEWS, "-inf", now.timestamp())]

    def note_use(self, request_id: str, count: int, open_now: bool, now: datetime) -> datetime | None:
        """Remember a grant's use count; returns when it was last used (now, when the count rose or a connection
        is open), or None when no use has been seen since the grant (its first look counts as none).

        A count that falls is no use: the load balancer forgot the source (a stick-table entry expired, HAProxy
        restarted). It is kept as the new base, so that use from there on counts.
        """
        key = _USE + request_id
        with reachable():
            seen = {_text(k): _text(v) for k, v in self.redis.hgetall(key).items()}
            last = datetime.fromisoformat(seen["at"]) if seen.get("at") else None
            rose = "count" in seen and count > int(seen["count"])
            if rose or open_now:
                last = now
            fields = {"count": str(count)} | ({"at": last.isoformat()} if last else {})
            self.redis.hset(key, mapping=fields)  # type: ignore[arg-type]
            self.redis.expire(key, _HISTORY_SECONDS)
        return last

    def answers(self) -> bool:
        """Whether Redis answers PING now (between the write probes of /healthz). Raises StoreUnavailableError."""
        with reachable():
            return bool(self.redis.ping())

    def takes_writes(self) -> bool:
        """Whether Redis takes a write now (the web's /healthz): PING passes a Redis out of memory, a replica, one
        whose RDB save failed, none of which can store a request or count a click. Raises StoreUnavailableError."""
        with reachable():
            return bool(self.redis.set(_HEALTH, 1, ex=60))

    def home_opened(self, user: str) -> bool:
        """Note that `user` opened their App Home; True when a publish of it is to be queued, False while one queued
        before is not yet taken by a worker (it reads the store when it runs, so it shows this open's state too)."""
        with reachable(), self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(_HOME_USERS, user)
            pipe.set(_HOME_QUEUED + user, 1, nx=True, ex=HOME_QUEUED_SECONDS)
            return bool(pipe.execute()[1])

    def home_taken(self, user: str) -> None:
        """A worker takes the queued publish of `user`'s home (or it could not be queued): an open queues one again."""
        with reachable():
            self.redis.delete(_HOME_QUEUED + user)

    def any_home_users(self) -> bool:
        with reachable():
            return bool(self.redis.scard(_HOME_USERS))

    def home_users(self) -> set[str]:
        with reachable():
            return {_text(member) for member in self.redis.smembers(_HOME_USERS)}

    async def first_signed_async(self, timestamp: str, signature: str, seconds: int) -> bool:
        """True the first time a signed HTTP request (its timestamp and signature) reaches any web process: a replay
        within the signature's window is not taken again. Raises StoreUnavailableError."""
        key = f"{_DELIVERIES}{timestamp}:{signature}"
        if self._url is None:
            with reachable():
                return bool(self.redis.set(key, 1, nx=True, ex=seconds))
        with reachable():
            answer = await self._turn_scripts(_FIRST_SIGNED, [key], [uuid.uuid4().hex, seconds])
        return bool(answer)

    def first_delivery(self, event_id: str, seconds: int = 3600) -> bool:
        """True the first time an Events API event id is seen: a retried delivery is handled once."""
        with reachable():
            return bool(self.redis.set(_EVENTS + event_id, 1, nx=True, ex=seconds))

    def issue_form(self, callback_id: str, metadata: str, user: str, seconds: int = FORM_SECONDS) -> None:
        """Remember that jit-lb opened a `callback_id` modal carrying `metadata` for `user`."""
        with reachable():
            self.redis.set(_FORMS + _form_key(callback_id, metadata, user), 1, ex=seconds)

    def form_issued(self, callback_id: str, metadata: str, user: str) -> bool:
        """Whether jit-lb opened a `callback_id` modal with exactly this `metadata` for `user` (not altered since)."""
        with reachable():
            return bool(self.redis.exists(_FORMS + _form_key(callback_id, metadata, user)))

    def take_turn(self, name: str, holder: str, seconds: float) -> bool:
        """True when `holder` takes the turn `name` for `seconds` (the sweep's: one worker a period)."""
        with reachable():
            return bool(self.redis.set(PREFIX + "turn:" + name, holder, nx=True, px=int(seconds * 1000)))

    def get(self, request_id: str) -> AccessRequest:
        with reachable():
            raw = self.redis.get(_REQUEST + request_id)
        if raw is None:
            raise NotFoundError(f"there is no request {request_id}")
        return self._read(request_id, raw)

    def _read(self, request_id: str, raw: bytes | str) -> AccessRequest:
        """A stored request; a ValidationError, logged and counted, when it cannot be read (a bad write by hand, a
        record of a newer version, corruption: no Slack user can make one)."""
        try:
            return AccessRequest.model_validate_json(raw)
        except ValidationError as err:
            log.error("a stored request cannot be read", request_id=request_id, error=str(err)[:300])
            if self.observer is not None:
                self.observer.unreadable_request()
            raise

    def find(self, request_id: str) -> AccessRequest | None:
        try:
            return self.get(request_id)
        except NotFoundError:
            return None

    def find_many(self, request_ids: set[str]) -> dict[str, AccessRequest]:
        """The requests Redis knows among `request_ids`, in one round trip. A stored request that cannot be read (a bad
        write; a record of a newer version) is left out and logged by id, as one Redis does not know: the sweep and a
        lockdown read every open request through here, and one bad record must not blind them to all the others (the
        sweep then judges its objects by their markers alone)."""
        ordered = sorted(request_ids)
        if not ordered:
            return {}
        with reachable():
            raws = self.redis.mget([_REQUEST + request_id for request_id in ordered])
        found = {}
        for request_id, raw in zip(ordered, raws, strict=True):
            if not raw:
                continue
            with contextlib.suppress(ValidationError):  # logged and counted, and left out
                found[request_id] = self._read(request_id, raw)
        return found

    def transition(
        self, request_id: str, change: Transition, record: Record | None = None, strict: bool = True
    ) -> tuple[AccessRequest, AccessRequest]:
        """Apply `change` atomically: it sees the current request and its result replaces it.

        Returns (before, after). `record(before, after)` writes the change's audit record before it
        is committed: when it raises (the log is full, say) nothing is committed. Transitions of one
        request hold its lock, so that a change is recorded once, never for a state that lost a race;
        two clicks at once are judged one after the other. Once committed, a replica must confirm it
        (`confirm`; StoreUnavailableError when none does, unless not `strict`).
        """
        key = _REQUEST + request_id
        lock = self.redis.lock(
            _LOCK + "request:" + request_id,
            timeout=_TRANSITION_LOCK_SECONDS,
            blocking_timeout=_TRANSITION_LOCK_SECONDS,
            sleep=0.005,  # a click that waits for another's transition (redis-py polls; its default is 0.1 s)
        )
        recorded: bytes | str | None = None  # the state whose change is recorded already (a try cut on its way)
        with reachable(), lock, self.redis.pipeline() as pipe:
            while True:
                written: str | None = None
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    if raw is None:
                        raise NotFoundError(f"there is no request {request_id}")
                    before = self._read(request_id, raw)
                    after = change(before)
                    if after.id != before.id:
                        raise TransitionError("a transition cannot change a request's id")
                    if record is not None and raw != recorded:
                        record(before, after)  # once: a try that never reached Redis leaves `before` as it was
                        recorded = raw
                    pipe.multi()
                    written = after.model_dump_json()
                    pipe.set(key, written)
                    self._index(pipe, after)
                    try:
                        pipe.execute()
                    except (RedisConnectionError, RedisTimeoutError):
                        if not self._landed(key, written):
                            raise
                    break
                except WatchError:
                    # A client that retries a lost answer raises WatchError for it too: was it done all the same?
                    if written is not None and self._landed(key, written):
                        break
                    continue
            self.confirm(strict)
            return before, after

    def _landed(self, key: str, written: str) -> bool:
        """Whether a transaction whose answer was lost (Redis frozen or partitioned mid-call, and a timed-out wait is
        not retried) was done: the request reads as it wrote it. Under the request's lock nobody else changed it; so
        the caller goes on as for a change that counted, and is not told nothing changed while it stands."""
        raw = self.redis.get(key)
        return raw is not None and _text(raw) == written

    def update(self, request_id: str, **fields: Any) -> AccessRequest:
        """Change fields that are not the status (where the card is, say)."""
        return self.transition(request_id, lambda request: request.model_copy(update=fields))[1]

    def open_requests(self) -> list[AccessRequest]:
        """Pending, approved and granted requests, read in one round trip (MGET), by id."""
        with reachable():
            ids = {_text(member) for member in self.redis.smembers(_OPEN)}
        found = self.find_many(ids)
        return [found[request_id] for request_id in sorted(found)]

    def granted_targets(self) -> list[str]:
        """The target of each grant applied and not yet ended (the metrics' jit_grants_active), in two round trips."""
        with reachable():
            ids = {_text(member) for member in self.redis.zrange(_GRANTED, 0, -1)}
        return [request.target for request in self.find_many(ids).values() if request.status is Status.GRANTED]

    def granted_until(self, moment: datetime) -> list[str]:
        """Ids of granted requests whose end is at or before `moment`."""
        with reachable():
            return [_text(m) for m in self.redis.zrangebyscore(_GRANTED, "-inf", moment.timestamp())]

    def grants_ended(self, moment: datetime) -> dict[str, int]:
        """Granted requests whose end is at or before `moment`, each with its end (whole epoch seconds)."""
        with reachable():
            pairs: list[tuple[bytes, float]] = self.redis.zrangebyscore(  # type: ignore[assignment]
                _GRANTED, "-inf", moment.timestamp(), withscores=True
            )
        return {_text(member): int(score) for member, score in pairs}

    # --- what revokes cost the workers (workers/reconcile.py's per-grant lead) ----------------------

    def note_revoke_work(self, span: RevokeSpan, window: float = 60.0) -> None:
        """Keep one revoke job's span for `window` seconds."""
        member = ":".join(f"{value:.6f}" for value in span.fields()) + f":{uuid.uuid4().hex[:8]}"
        with reachable(), self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(_REVOKE_WORK, {member: span.ended})
            pipe.zremrangebyscore(_REVOKE_WORK, "-inf", span.ended - window)
            pipe.execute()

    def revoke_costs(self, now: float, window: float = 60.0) -> MeasuredRevokeCosts | None:
        """What a revoke job cost over the last `window` seconds, on average (`MeasuredRevokeCosts`). A quiet minute
        keeps the last figures measured; None until anything was measured.
        """
        with reachable():
            members = self.redis.zrangebyscore(_REVOKE_WORK, now - window, "+inf")
            if not members:
                last = self.redis.get(_REVOKE_COSTS)
                return MeasuredRevokeCosts.parse(_text(last)) if last else None
        spans = [RevokeSpan(*map(float, _text(member).split(":")[:6])) for member in members]
        count = len(spans)
        more = [span for span in spans if span.grants > 1]
        costs = MeasuredRevokeCosts(
            wait=sum(span.waited for span in spans) / count,
            job=sum(span.gone - span.started for span in spans) / count,
            first_record=sum(span.first_record - span.gone for span in spans) / count,
            record=sum(span.ended - span.first_record for span in more) / sum(span.grants - 1 for span in more)
            if more
            else None,
        )
        with reachable():
            self.redis.set(_REVOKE_COSTS, costs.text())
        return costs

    def note_revoke_jobs(self, jobs: dict[str, str], seconds: int) -> None:
        """Which job revokes each request at its end, for `seconds` (so that a loop can tell one is queued)."""
        with reachable(), self.redis.pipeline(transaction=False) as pipe:
            for request_id, job_id in jobs.items():
                pipe.set(_REVOKE_JOB + request_id, job_id, ex=seconds)
            pipe.execute()

    def revoke_job(self, request_id: str) -> str | None:
        """The id of the job queued to revoke that request at its end, if one was."""
        with reachable():
            raw = self.redis.get(_REVOKE_JOB + request_id)
        return None if raw is None else _text(raw)

    def pending_until(self, moment: datetime) -> list[str]:
        """Ids of pending requests whose approval window closed at or before `moment`."""
        with reachable():
            return [_text(m) for m in self.redis.zrangebyscore(_PENDING, "-inf", moment.timestamp())]

    @contextlib.contextmanager
    def running(self, name: str, seconds: float = 10.0) -> Iterator[bool]:
        """True inside for the one caller that runs `name` now across every worker (a sweep), False for others.

        The hold is renewed every third of `seconds` while the caller runs, so a long run stays alone and a
        worker that dies mid-run frees it within `seconds`.
        """
        with reachable():
            # Not thread-local: the hold is renewed from a thread of its own.
            lock = self.redis.lock(_LOCK + "running:" + name, timeout=seconds, blocking=False, thread_local=False)
            mine = bool(lock.acquire(blocking=False))
        if not mine:
            yield False
            return
        done = threading.Event()

        def renew() -> None:
            while not done.wait(seconds / 3):
                with contextlib.suppress(RedisError):
                    lock.reacquire()

        renewer = threading.Thread(target=renew, name=f"jit-{name}-hold", daemon=True)
        renewer.start()
        try:
            yield True
        finally:
            done.set()
            renewer.join()
            with contextlib.suppress(RedisError):
                lock.release()

    def mark_ending(self, request_id: str) -> None:
        """Note that a grant's revoke begins, before it takes the scope's lock (see `ending`)."""
        with reachable():
            self.redis.set(_ENDING + request_id, 1, ex=_ENDING_SECONDS)

    def ending(self, request_id: str) -> bool:
        """Whether a revoke of the grant has begun: read under the scope's lock, it tells an extension that read
        the grant before the revoke took the lock (and may find it still granted) not to put the rule back."""
        with reachable():
            return bool(self.redis.exists(_ENDING + request_id))

    @contextlib.contextmanager
    def lock(self, scope: str, timeout: float = 120.0) -> Iterator[None]:
        """Serialise work on one object at the load balancer across every worker."""
        with reachable(), self.redis.lock(_LOCK + scope, timeout=timeout, blocking_timeout=timeout):
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
        _pending_index(pipe, request.requester, request.id, pending=request.status is Status.PENDING)
        if request.status is Status.GRANTED and request.ends_at is not None:
            pipe.zadd(_GRANTED, {request.id: request.ends_at.timestamp()})
        else:
            pipe.zrem(_GRANTED, request.id)


def _pending_index(pipe: Any, requester: str, request_id: str, pending: bool) -> None:
    """Queue, in `pipe`, a request's move into or out of its requester's pending set and hash of visible ids."""
    pipe.eval(_PENDING_INDEX, 2, _USER_PENDING + requester, _USER_VISIBLE + requester, request_id, int(pending))


def _form_key(callback_id: str, metadata: str, user: str) -> str:
    return f"{callback_id}:{user}:{hashlib.sha256(metadata.encode()).hexdigest()}"
