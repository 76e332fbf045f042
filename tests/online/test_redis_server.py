"""RedisServer: a real redis-server that answers, exposes its URL and stops cleanly."""

import pytest
import redis

from duet_sdk.errors import ConfigError, StoreError
from duet_sdk.online.redis_server import RedisServer, ping


def test_server_answers_on_its_url_and_stops():
    with RedisServer() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert client.ping()
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.close()
        port = server.port
    assert not ping(port)
    server.stop()  # twice is fine


def test_missing_binary_names_the_package_to_install(tmp_path):
    with pytest.raises(StoreError, match="apt-get install redis-server"):
        RedisServer(binary=str(tmp_path / "no-redis-server")).start()


def test_taken_port_is_reported(redis_server):
    """The session server holds the port: the new one exits, and the old one answering is not mistaken for it."""
    with pytest.raises(StoreError, match="(?s)did not answer.*Address already in use"):
        RedisServer(port=redis_server.port, start_timeout_s=2).start()


def test_url_before_start_is_an_error():
    with pytest.raises(StoreError, match="not running"):
        _ = RedisServer().url


def test_rejects_bad_port():
    with pytest.raises(ConfigError) as info:
        RedisServer(port=70000)
    assert info.value.field == "port"
