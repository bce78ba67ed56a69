"""How a process reaches Redis (docs/high-availability.md): the one REDIS_URL names, or the master that the
Sentinels of REDIS_SENTINELS name, followed across failovers without a restart.

With Sentinel, every connection a client opens asks the Sentinels where the master is now: when the
master dies, the next command fails (the caller says "try again", or a worker's loop tries again),
and the first connection opened after Sentinel's promotion reaches the new master. RQ's workers,
queues and scheduler use the same clients, so they follow too. REDIS_URL's database number and
password still apply; its host and port are not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

# Sentinels answer "where is the master" from memory: a Sentinel that does not answer this fast is skipped.
SENTINEL_TIMEOUT = 0.5


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is: a URL, or Sentinels and the master's name (the URL then gives the database and password)."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = "mymaster"


@dataclass(frozen=True)
class Timeouts:
    """How long a client waits for Redis before the caller is told it is unavailable."""

    connect: float
    read: float
    retries: int
    # Whether a wait that timed out is tried again. redis-py nests its retries (a command's retry wraps the connect,
    # whose handshake retries too), so with a Redis that accepts connections and never answers (frozen, or behind a
    # partition) one command can wait `read` four times over with a single retry.
    retry_timeouts: bool = True


# The web answers Slack within 3 seconds whatever Redis does: one retry of a refused or broken connection (a
# failover, a stale pooled one), none of a wait that timed out, and short waits.
WEB = Timeouts(connect=0.5, read=1.5, retries=1, retry_timeouts=False)
# The web's connections to Redis: at most this many, and a command beyond them waits up to WEB_POOL_WAIT seconds
# for one to come free. Without the wait, redis-py refuses a command past its pool's size at once ("Too many
# connections"): a burst of a few hundred clicks (an incident channel approving at once) was answered "jit-lb is
# unavailable" for every click past the hundredth, with Redis idle.
WEB_CONNECTIONS = 100
WEB_POOL_WAIT = 1.0
# Workers can wait longer (their loops try again), but not hang.
WORKER = Timeouts(connect=2.0, read=3.0, retries=2)
# A worker's PING that tells whether Redis answers at all: a frozen Redis accepts connections and never answers.
PROBE = Timeouts(connect=0.5, read=1.0, retries=0)


def parse_sentinels(value: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` as pairs; ValueError naming the first part that is not one."""
    pairs = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"`{part}` is not host:port (a comma-separated list, e.g. 10.0.0.1:26379,10.0.0.2:26379)")
        pairs.append((host.strip("[]"), int(port)))
    return tuple(pairs)


def _retried(timeouts: Timeouts) -> tuple[type[RedisError], ...]:
    return (RedisConnectionError, RedisTimeoutError) if timeouts.retry_timeouts else (RedisConnectionError,)


def _options(timeouts: Timeouts) -> dict[str, Any]:
    return {
        "socket_timeout": timeouts.read,
        "socket_connect_timeout": timeouts.connect,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), timeouts.retries, supported_errors=_retried(timeouts)),
        "retry_on_error": list(_retried(timeouts)),
    }


def _from_url(address: RedisAddress) -> dict[str, Any]:
    """What of REDIS_URL applies beside Sentinel: the database, user and password (and TLS)."""
    parsed = parse_url(address.url)  # type: ignore[no-untyped-call, unused-ignore]
    return {key: parsed[key] for key in ("db", "username", "password") if parsed.get(key) is not None}


def connect(address: RedisAddress, timeouts: Timeouts = WORKER) -> redis.Redis:
    """A client of the master, which fails fast when Redis is away instead of hanging a Slack request."""
    options = _options(timeouts)
    if not address.sentinels:
        return redis.Redis.from_url(address.url, **options)
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        list(address.sentinels),
        sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT},
    )
    client: redis.Redis = sentinel.master_for(address.master, **options, **_from_url(address))  # type: ignore[no-untyped-call, unused-ignore]
    return client


class _WaitingSentinelPool(redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool):
    """The master's pool found through Sentinel, waiting for a free connection as BlockingConnectionPool does (the
    Sentinel pool overrides neither `get_connection` nor `release`, so those are the waiting pool's)."""


def connect_async(address: RedisAddress, timeouts: Timeouts = WEB) -> redis.asyncio.Redis:
    """`connect`'s asyncio twin, for the web process's event loop: at most WEB_CONNECTIONS connections, and a command
    beyond them waits up to WEB_POOL_WAIT for one (then fails as Redis out of reach)."""
    options = _options(timeouts)
    options["retry"] = redis.asyncio.retry.Retry(
        ExponentialBackoff(cap=0.2, base=0.05), timeouts.retries, supported_errors=_retried(timeouts)
    )
    pool: dict[str, Any] = {"max_connections": WEB_CONNECTIONS, "timeout": WEB_POOL_WAIT}
    if not address.sentinels:
        waiting = redis.asyncio.BlockingConnectionPool.from_url(address.url, **pool, **options)
        return redis.asyncio.Redis.from_pool(waiting)
    sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        list(address.sentinels),
        sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT},
    )
    client: redis.asyncio.Redis = sentinel.master_for(
        address.master, connection_pool_class=_WaitingSentinelPool, **pool, **options, **_from_url(address)
    )
    return client
