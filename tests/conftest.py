"""Fixtures shared by all test packages."""

import pytest
import redis

from duet_sdk.online.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    """A real ``redis-server`` (no persistence) on a free loopback port for the whole session.
    Needs the binary: ``apt-get install redis-server``."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server):
    """The session server's URL, its db flushed for this test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    return redis_server.url
