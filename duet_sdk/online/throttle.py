"""Per-user throttle window that coalesces ETI triggers.

``admit(user, now)`` is True for the first trigger of a user in a ``window_s`` window and False for the
rest, which are redundant: the admitted embedding reads the user's latest history. ``release(user)``
ends the window early (the ETI worker does so when the admitted embedding failed).

Example::

    throttle = InMemoryThrottle(window_s=5.0)
    throttle.admit("u1", now=100.0)  # True
    throttle.admit("u1", now=102.0)  # False: inside u1's window
    throttle.admit("u1", now=105.0)  # True: a new window
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Any

from duet_sdk.errors import ConfigError
from duet_sdk.online._redis import connect, redis_errors


def _check_window(window_s: float) -> float:
    if isinstance(window_s, bool) or not isinstance(window_s, (int, float)) or not window_s > 0:
        raise ConfigError("window_s", "a positive number of seconds", window_s)
    return float(window_s)


class Throttle(ABC):
    """At most one admitted trigger per user per ``window_s``."""

    window_s: float

    @abstractmethod
    def admit(self, user_id: str, now: float) -> bool:
        """True where ``user_id`` has no open window (and open one from ``now``), else False."""

    @abstractmethod
    def release(self, user_id: str) -> None:
        """Close the user's window, so that the next trigger is admitted."""

    def close(self) -> None:
        """Release connections."""


class InMemoryThrottle(Throttle):
    """Windows of this process in a dict (thread-safe); expired ones are swept every ``window_s``."""

    def __init__(self, window_s: float) -> None:
        self.window_s = _check_window(window_s)
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}  # user -> end of its window
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

    def __len__(self) -> int:
        """Windows held (some may have expired since the last sweep)."""
        return len(self._until)


class RedisThrottle(Throttle):
    """``SET {prefix}{user} 1 NX PX window`` shared by all workers; windows run on Redis's clock, so
    ``now`` is ignored here."""

    def __init__(self, client_or_url: Any, window_s: float, prefix: str = "duet:throttle:") -> None:
        self.window_s = _check_window(window_s)
        self._owns_client = isinstance(client_or_url, str)
        self._redis = connect(client_or_url, "throttle")
        self.prefix, self._window_ms = prefix, max(1, round(self.window_s * 1000))

    @redis_errors
    def admit(self, user_id: str, now: float) -> bool:
        return bool(self._redis.set(self.prefix + user_id, 1, nx=True, px=self._window_ms))

    @redis_errors
    def release(self, user_id: str) -> None:
        self._redis.delete(self.prefix + user_id)

    def close(self) -> None:
        if self._owns_client:
            self._redis.close()
