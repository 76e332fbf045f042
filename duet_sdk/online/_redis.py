"""Shared plumbing of the Redis backends: redis-py is imported only when one is used.

Credentials: a URL should carry no password. ``connect`` takes it from ``DUET_REDIS_PASSWORD``, else
from the first line of the file named by ``DUET_REDIS_PASSWORD_FILE`` (a URL's own password wins where
one is given). ``redact`` replaces the password of a URL for logs and messages; nothing here prints one.
"""

from __future__ import annotations

import functools
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from duet_sdk._extras import require
from duet_sdk.errors import ConfigError, DuetError, StoreError

PASSWORD_ENV, PASSWORD_FILE_ENV = "DUET_REDIS_PASSWORD", "DUET_REDIS_PASSWORD_FILE"
_SCHEMES = ("redis://", "rediss://", "unix://")


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: safe to log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


def password_from_env(environ: dict[str, str] | None = None) -> str | None:
    """``DUET_REDIS_PASSWORD``, else the first line of ``DUET_REDIS_PASSWORD_FILE``, else None."""
    environ = os.environ if environ is None else environ
    if environ.get(PASSWORD_ENV):
        return environ[PASSWORD_ENV]
    path = environ.get(PASSWORD_FILE_ENV)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n") or None
    except OSError as exc:
        raise ConfigError(
            PASSWORD_FILE_ENV, "a readable file holding the Redis password", f"{path} ({exc.strerror})"
        ) from exc


def connect(client_or_url: Any, field: str, retries: int | None = None) -> Any:
    """A ``redis.Redis`` from a URL (``redis://``, ``rediss://``, ``unix://``) or an existing client.

    The URL form decodes replies to str and takes its password from the environment (module doc).
    ``retries``: reconnect attempts on a connection error or timeout, with exponential backoff and
    jitter (redis-py's ``Retry``; 0.05 s doubling up to 2 s); None keeps redis-py's default.
    Blocking reads need ``socket_timeout`` None or longer than their block time, so a given client
    should not set a shorter one.
    """
    redis = require("redis", "the Redis backends")
    if isinstance(client_or_url, str):
        if not client_or_url.startswith(_SCHEMES):
            raise ConfigError(
                field, "a redis://, rediss:// or unix:// URL or a redis.Redis client", redact(client_or_url)
            )
        options: dict[str, Any] = {"decode_responses": True, "socket_connect_timeout": 5.0}
        if urlsplit(client_or_url).password is None and (password := password_from_env()) is not None:
            options["password"] = password
        if retries is not None:
            from redis.backoff import ExponentialWithJitterBackoff
            from redis.retry import Retry

            options |= {
                "retry": Retry(ExponentialWithJitterBackoff(cap=2.0, base=0.05), retries),
                "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
            }
        return redis.Redis.from_url(client_or_url, **options)
    if isinstance(client_or_url, redis.Redis):
        return client_or_url
    raise ConfigError(
        field, "a redis://, rediss:// or unix:// URL or a redis.Redis client", type(client_or_url).__name__
    )


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
