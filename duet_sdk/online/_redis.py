"""Shared plumbing of the Redis backends: redis-py is imported only when one is used."""

from __future__ import annotations

import functools
from typing import Any

from duet_sdk.errors import ConfigError, DuetError, StoreError


def connect(client_or_url: Any, field: str) -> Any:
    """A ``redis.Redis`` from a URL (``redis://``, ``rediss://``, ``unix://``) or an existing client.

    The URL form decodes replies to str. Blocking reads need ``socket_timeout`` None or longer than
    their block time, so a given client should not set a shorter one.
    """
    try:
        import redis
    except ImportError as exc:
        raise StoreError("the Redis backends need redis-py: pip install 'redis>=5'") from exc
    if isinstance(client_or_url, str):
        if not client_or_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(field, "a redis://, rediss:// or unix:// URL or a redis.Redis client", client_or_url)
        return redis.Redis.from_url(client_or_url, decode_responses=True, socket_connect_timeout=5.0)
    if isinstance(client_or_url, redis.Redis):
        return client_or_url
    raise ConfigError(field, "a redis://, rediss:// or unix:// URL or a redis.Redis client", client_or_url)


def text(value: Any) -> str:
    """A reply as str, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_errors(method):
    """Re-raise redis-py errors of a backend method as StoreError naming the backend and method."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except DuetError:
            raise
        except Exception as exc:
            import redis
            if isinstance(exc, redis.RedisError):
                raise StoreError(f"{type(self).__name__}.{method.__name__}: {type(exc).__name__}: {exc}") from exc
            raise
    return wrapper
