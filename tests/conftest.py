"""Fixtures shared by all test packages."""

import pytest

from duet_sdk.online.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    """A real ``redis-server`` (no persistence) on a free loopback port for the whole session.
    Needs the binary: ``apt-get install redis-server``."""
    with RedisServer() as server:
        yield server
