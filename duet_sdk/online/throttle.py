"""Per-user throttle window that coalesces ETI triggers, leading and trailing edge.

``admit(user, now)`` is True for the first trigger of a user in a ``window_s`` window and False for the
rest. ``release(user)`` ends the window early (the ETI worker does so when the admitted embedding failed).

Trailing edge: a throttled trigger is ``defer``red, not dropped. It marks the user for one more
embedding when the window that throttled it ends, so events after the admitted embedding are embedded
even if the user goes quiet. ``due(now, limit)`` hands out (and removes) the users whose window has
ended, each as ``Deferred(user, first_ts, count)``: the earliest throttled event time and how many
triggers the trailing embedding covers.

Example::

    throttle = InMemoryThrottle(window_s=5.0)
    throttle.admit("u1", now=100.0)  # True
    throttle.admit("u1", now=102.0)  # False: inside u1's window
    throttle.admit("u1", now=105.0)  # True: a new window
    throttle.defer("u1", event_ts=106, now=106.0)  # throttled: embed u1 again at 110.0
    throttle.due(now=110.0, limit=64)  # [Deferred("u1", 106, 1)]
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from duet_sdk.errors import ConfigError
from duet_sdk.online._redis import connect, redis_errors, text


def _check_window(window_s: float) -> float:
    if isinstance(window_s, bool) or not isinstance(window_s, (int, float)) or not window_s > 0:
        raise ConfigError("window_s", "a positive number of seconds", window_s)
    return float(window_s)


@dataclass(frozen=True)
class Deferred:
    """A user to embed at the end of its window: earliest throttled event time, triggers covered."""

    user_id: str
    first_ts: int
    count: int


class Throttle(ABC):
    """At most one admitted trigger per user per ``window_s``, plus one trailing embedding per window."""

    window_s: float

    @abstractmethod
    def admit(self, user_id: str, now: float) -> bool:
        """True where ``user_id`` has no open window (and open one from ``now``), else False."""

    @abstractmethod
    def release(self, user_id: str) -> None:
        """Close the user's window, so that the next trigger is admitted."""

    @abstractmethod
    def defer(self, user_id: str, event_ts: int, now: float, count: int = 1) -> None:
        """Record ``count`` throttled triggers of ``user_id``: due at the end of its current window."""

    @abstractmethod
    def due(self, now: float, limit: int) -> list[Deferred]:
        """Up to ``limit`` deferred users whose window has ended by ``now``, removed from the record."""

    def admit_many(self, user_ids: Sequence[str], now: float) -> set[str]:
        """``admit`` for each of ``user_ids`` (distinct), in order; returns the admitted ones."""
        return {u for u in user_ids if self.admit(u, now)}

    def release_many(self, user_ids: Sequence[str]) -> None:
        """``release`` each of ``user_ids``."""
        for u in user_ids:
            self.release(u)

    def defer_many(self, deferred: Sequence[Deferred], now: float) -> None:
        """``defer(d.user_id, d.first_ts, now, d.count)`` for each, in order."""
        for d in deferred:
            self.defer(d.user_id, d.first_ts, now, d.count)

    def redefer(self, deferred: Sequence[Deferred], now: float) -> None:
        """Put back deferred users whose trailing embedding failed (due at once)."""
        self.defer_many(deferred, now - self.window_s)

    def close(self) -> None:
        """Release connections."""


class InMemoryThrottle(Throttle):
    """Windows of this process in a dict (thread-safe); expired ones are swept every ``window_s``."""

    def __init__(self, window_s: float) -> None:
        self.window_s = _check_window(window_s)
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}  # user -> end of its window
        self._deferred: dict[str, tuple[float, int, int]] = {}  # user -> (due, first_ts, count)
        self._next_sweep = float("-inf")

    def admit(self, user_id: str, now: float) -> bool:
        with self._lock:
            if now >= self._next_sweep:
                self._until = {u: t for u, t in self._until.items() if t > now}
                self._next_sweep = now + self.window_s
            if self._until.get(user_id, float("-inf")) > now:
                return False
            self._until[user_id] = now + self.window_s
            return True

    def release(self, user_id: str) -> None:
        with self._lock:
            self._until.pop(user_id, None)

    def defer(self, user_id: str, event_ts: int, now: float, count: int = 1) -> None:
        with self._lock:
            end = max(now, self._until.get(user_id, now))
            due, first, n = self._deferred.get(user_id, (end, event_ts, 0))
            self._deferred[user_id] = (min(due, end), min(first, event_ts), n + count)

    def due(self, now: float, limit: int) -> list[Deferred]:
        with self._lock:
            ready = [u for u, (due, _, _) in self._deferred.items() if due <= now][:limit]
            return [Deferred(u, *self._deferred.pop(u)[1:]) for u in ready]

    def __len__(self) -> int:
        """Windows held (some may have expired since the last sweep)."""
        return len(self._until)


# KEYS: deferred zset (score = due), first-ts hash, count hash, the user's window key.
# ARGV: user, event ts, now (s), count. Due = now + the window's remaining PTTL.
_DEFER = """
local ttl = redis.call('PTTL', KEYS[4])
local due = tonumber(ARGV[3]) + math.max(ttl, 0) / 1000
redis.call('ZADD', KEYS[1], 'NX', due, ARGV[1])
local first = redis.call('HGET', KEYS[2], ARGV[1])
if (not first) or tonumber(ARGV[2]) < tonumber(first) then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
redis.call('HINCRBY', KEYS[3], ARGV[1], ARGV[4])
"""
# KEYS: deferred zset, first-ts hash, count hash. ARGV: now, limit. Returns user, first, count triples.
_DUE = """
local users = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, u in ipairs(users) do
  redis.call('ZREM', KEYS[1], u)
  table.insert(out, u)
  table.insert(out, redis.call('HGET', KEYS[2], u) or '0')
  table.insert(out, redis.call('HGET', KEYS[3], u) or '0')
  redis.call('HDEL', KEYS[2], u)
  redis.call('HDEL', KEYS[3], u)
end
return out
"""


class RedisThrottle(Throttle):
    """``SET {prefix}{user} 1 NX PX window`` shared by all workers; windows run on Redis's clock, so
    ``now`` is ignored by ``admit``. Deferred users live in ``{prefix}deferred`` (a sorted set by due
    time, with ``:first`` and ``:count`` hashes), updated and claimed atomically by Lua scripts, so a
    deferred user is handed to exactly one worker.

    The ``*_many`` methods send one pipeline (one round trip) whatever the number of users; each
    command in it stays atomic on its own (a SET NX, a DEL, one deferral's script), which is all the
    per-user semantics need, so the pipeline is not a transaction. Scripts go by EVAL (Redis caches
    them by digest): one round trip always, where EVALSHA costs more after a restart emptied the cache.
    """

    def __init__(self, client_or_url: Any, window_s: float, prefix: str = "duet:throttle:") -> None:
        self.window_s = _check_window(window_s)
        self._owns_client = isinstance(client_or_url, str)
        self._redis = connect(client_or_url, "throttle")
        self.prefix, self._window_ms = prefix, max(1, round(self.window_s * 1000))
        base = f"{prefix.rstrip(':')}@deferred"  # outside ``prefix + user``: no user name can collide
        self._keys = [base, f"{base}:first", f"{base}:count"]

    @redis_errors
    def admit(self, user_id: str, now: float) -> bool:
        return bool(self._redis.set(self.prefix + user_id, 1, nx=True, px=self._window_ms))

    @redis_errors
    def release(self, user_id: str) -> None:
        self._redis.delete(self.prefix + user_id)

    @redis_errors
    def defer(self, user_id: str, event_ts: int, now: float, count: int = 1) -> None:
        self.defer_many([Deferred(user_id, event_ts, count)], now)

    @redis_errors
    def admit_many(self, user_ids: Sequence[str], now: float) -> set[str]:
        if not user_ids:
            return set()
        pipe = self._redis.pipeline(transaction=False)
        for u in user_ids:
            pipe.set(self.prefix + u, 1, nx=True, px=self._window_ms)
        return {u for u, opened in zip(user_ids, pipe.execute()) if opened}

    @redis_errors
    def release_many(self, user_ids: Sequence[str]) -> None:
        if user_ids:
            self._redis.delete(*(self.prefix + u for u in user_ids))

    @redis_errors
    def defer_many(self, deferred: Sequence[Deferred], now: float) -> None:
        if not deferred:
            return
        pipe = self._redis.pipeline(transaction=False)
        for d in deferred:  # EVAL, not EVALSHA: a pipeline of scripts would first ask SCRIPT EXISTS
            pipe.eval(_DEFER, 4, *self._keys, self.prefix + d.user_id,
                      d.user_id, int(d.first_ts), repr(float(now)), int(d.count))
        pipe.execute()

    @redis_errors
    def due(self, now: float, limit: int) -> list[Deferred]:
        flat = self._redis.eval(_DUE, 3, *self._keys, repr(float(now)), int(limit))
        return [Deferred(text(flat[i]), int(text(flat[i + 1])), int(text(flat[i + 2]))) for i in range(0, len(flat), 3)]

    def close(self) -> None:
        if self._owns_client:
            self._redis.close()
