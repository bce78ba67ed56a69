"""Real parts for the tests: a private Redis and moto in server mode for the session, HAProxy a module, on loopback."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
import redis

from devtools.haproxy import HaproxyServer
from devtools.moto_server import MotoServer
from devtools.redis_server import RedisServer


@pytest.fixture(name="redis_server", scope="session")
def fixture_redis_server() -> Iterator[RedisServer]:
    """A redis-server of our own for the whole session, never the machine's shared one."""
    with RedisServer() as server:
        yield server


@pytest.fixture(name="redis_url")
def fixture_redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The private Redis's URL, emptied before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(name="redis_client")
def fixture_redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(name="moto", scope="session")
def fixture_moto() -> Iterator[MotoServer]:
    """moto server mode on loopback; AWS_* in this process point boto3 at it for the session."""
    with MotoServer() as server:
        saved = {key: os.environ.get(key) for key in server.env}
        os.environ.update(server.env)
        yield server
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(name="haproxy", scope="module")
def fixture_haproxy() -> Iterator[HaproxyServer]:
    """A private HAProxy for the module (skipped where haproxy is not installed)."""
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed")
    with HaproxyServer() as server:
        yield server
