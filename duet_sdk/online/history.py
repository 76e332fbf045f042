"""Online store of users' static features and latest events: what the ETI worker embeds.

Each stream keeps at most ``max_len[stream]`` most recent events per user, oldest first by ``ts``
(ties by the encoded event). An event equal to a kept one (same ``ts`` and ``ids``) is stored once, so
re-appending a redelivered batch is harmless. ``histories`` returns only users with a profile
(``set_profile``), in request order: a user without one is a miss, left out like a FeatureStore miss.

Example::

    history = InMemoryHistory({"click": 256, "conv": 64})
    history.set_profile("u1", static_sparse=[3, 9], static_dense=[0.5])
    history.append("u1", "click", [Event(ts=1700000000, ids=(42, 7))])
    [h] = history.histories(["u1", "nobody"], request_time=1700000100)
"""

from __future__ import annotations

import json
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from duet_sdk.errors import ConfigError, DataError
from duet_sdk.interface import Event, UserHistory
from duet_sdk.online._redis import connect, redis_errors

_F32_MAX = 3.4028234663852886e38  # models read static_dense as float32: 1e39 would become inf


def encode_event(event: Event) -> str:
    """``[ts, [ids...]]`` JSON; also the tie-break order of equal ``ts`` (Redis sorts members by bytes)."""
    return json.dumps([event.ts, list(event.ids)], separators=(",", ":"))


def decode_events(array: str | bytes, count: int | None = None) -> tuple[Event, ...]:
    """Events from one JSON array of encoded events (``[[ts,[ids]],...]``), as ``_READ_USER`` returns
    a stream: one parse per stream (a parse per event was two thirds of the ETI worker's history read).
    ``count``: how many members were joined; DataError where the array holds another number of events
    (a corrupt member, e.g. one holding a comma-separated pair of events)."""
    try:
        events = tuple(Event(ts, tuple(ids)) for ts, ids in json.loads(array))
    except (ValueError, TypeError) as exc:
        raise DataError(f"stored events are not encoded events [ts, [ids...]]: {exc}") from exc
    if count is not None and len(events) != count:
        raise DataError(f"{count} stored events decoded as {len(events)}: a stored member is corrupt")
    return events


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class HistoryStore(ABC):
    """Profiles and capped per-stream event histories of users.

    Args:
        max_len: per stream name, how many most recent events to keep (a positive int).
    """

    def __init__(self, max_len: dict[str, int]) -> None:
        if not isinstance(max_len, dict) or not max_len:
            raise ConfigError("max_len", "a non-empty dict stream name -> positive int", max_len)
        for stream, n in max_len.items():
            if not isinstance(stream, str) or not stream or ":" in stream:
                raise ConfigError("max_len", "stream names that are non-empty str without ':'", stream)
            if not _is_int(n) or n <= 0:
                raise ConfigError(f"max_len[{stream!r}]", "a positive int", n)
        self.max_len = dict(max_len)

    @abstractmethod
    def set_profile(self, user_id: str, static_sparse: Sequence[int], static_dense: Sequence[float]) -> None:
        """Set (replace) the user's static features."""

    @abstractmethod
    def append(self, user_id: str, stream: str, events: Sequence[Event]) -> None:
        """Add events to one stream of the user, then keep only its ``max_len[stream]`` most recent."""

    @abstractmethod
    def histories(self, user_ids: Sequence[str], request_time: int) -> list[UserHistory]:
        """Histories at ``request_time`` (events with ``ts <= request_time``) of the users that have a
        profile, in request order (duplicates once); users without a profile are left out."""

    def close(self) -> None:
        """Release connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Validation shared by the backends.
    def _check_profile(self, user_id: str, sparse: Sequence[int], dense: Sequence[float]):
        _check_user(user_id)
        sparse, dense = list(sparse), list(dense)
        if not all(_is_int(x) for x in sparse):
            raise DataError(f"user {user_id!r}: static_sparse must be ints, got {sparse!r}")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                   and abs(x) <= _F32_MAX for x in dense):
            raise DataError(f"user {user_id!r}: static_dense must be floats finite as float32 (|x| <= 3.4e38), "
                            f"got {dense!r}")
        return tuple(sparse), tuple(float(x) for x in dense)

    def _check_events(self, user_id: str, stream: str, events: Sequence[Event]) -> list[Event]:
        _check_user(user_id)
        if stream not in self.max_len:
            raise ConfigError("stream", f"one of {sorted(self.max_len)}", stream)
        checked = []
        for e in events:
            if not isinstance(e, Event) or not _is_int(e.ts) or not all(_is_int(i) for i in e.ids):
                raise DataError(f"user {user_id!r} stream {stream!r}: expected Event(ts: int, ids: ints), got {e!r}")
            checked.append(Event(e.ts, tuple(e.ids)))
        return checked


def _check_user(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id:
        raise ConfigError("user_id", "a non-empty str", user_id)


def _check_request_time(request_time: int) -> None:
    if not _is_int(request_time):
        raise ConfigError("request_time", "int Unix seconds", request_time)


class InMemoryHistory(HistoryStore):
    """Dicts in this process, guarded by a lock (embedded default; lost on exit)."""

    def __init__(self, max_len: dict[str, int]) -> None:
        super().__init__(max_len)
        self._lock = threading.Lock()
        self._profiles: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = {}
        self._events: dict[tuple[str, str], list[tuple[int, str, Event]]] = {}  # sorted (ts, member, event)

    def set_profile(self, user_id: str, static_sparse: Sequence[int], static_dense: Sequence[float]) -> None:
        profile = self._check_profile(user_id, static_sparse, static_dense)
        with self._lock:
            self._profiles[user_id] = profile

    def append(self, user_id: str, stream: str, events: Sequence[Event]) -> None:
        new = [(e.ts, encode_event(e), e) for e in self._check_events(user_id, stream, events)]
        with self._lock:
            kept = self._events.get((user_id, stream), [])
            merged = sorted(set(kept) | set(new), key=lambda x: x[:2])
            self._events[(user_id, stream)] = merged[-self.max_len[stream]:]

    def histories(self, user_ids: Sequence[str], request_time: int) -> list[UserHistory]:
        _check_request_time(request_time)
        out = []
        with self._lock:
            for user_id in dict.fromkeys(user_ids):
                if user_id not in self._profiles:
                    continue
                sparse, dense = self._profiles[user_id]
                streams = {s: tuple(e for ts, _, e in self._events.get((user_id, s), []) if ts <= request_time)
                           for s in self.max_len}
                out.append(UserHistory(user_id, request_time, sparse, dense, streams))
        return out


# KEYS: the user's profile hash, then one sorted set per stream. ARGV: request_time. Returns {} where the
# user has no profile, else {static_sparse, static_dense, then per stream how many events have a score
# <= request_time and those events as one JSON array}: the members joined on the server, so a stream
# is one reply, not one per event (parsing those replies was most of the ETI worker's history read).
_READ_USER = """
local out = redis.call('HMGET', KEYS[1], 'static_sparse', 'static_dense')
if not out[1] then return {} end
for i = 2, #KEYS do
  local members = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', ARGV[1])
  out[#out + 1] = #members
  out[#out + 1] = '[' .. table.concat(members, ',') .. ']'
end
return out
"""


class RedisHistory(HistoryStore):
    """Redis keys: ``{prefix}profile:{user}`` a hash (``static_sparse``, ``static_dense`` as JSON) and
    ``{prefix}events:{stream}:{user}`` a sorted set (score ``ts``, member ``[ts,[ids]]`` JSON).

    Args:
        client_or_url: ``redis://...`` or a ``redis.Redis``.
        max_len: per stream, events kept per user.
        prefix: key prefix.

    ``append`` adds and trims in one MULTI; ``histories`` reads all users in one pipeline (one round
    trip), each user's profile and streams by one script (a consistent snapshot of that user).
    """

    def __init__(self, client_or_url: Any, max_len: dict[str, int], prefix: str = "duet:hist:") -> None:
        super().__init__(max_len)
        self._owns_client = isinstance(client_or_url, str)
        self._redis = connect(client_or_url, "history")
        self.prefix = prefix

    def _profile_key(self, user_id: str) -> str:
        return f"{self.prefix}profile:{user_id}"

    def _events_key(self, stream: str, user_id: str) -> str:
        return f"{self.prefix}events:{stream}:{user_id}"

    @redis_errors
    def set_profile(self, user_id: str, static_sparse: Sequence[int], static_dense: Sequence[float]) -> None:
        sparse, dense = self._check_profile(user_id, static_sparse, static_dense)
        self._redis.hset(self._profile_key(user_id),
                         mapping={"static_sparse": json.dumps(sparse), "static_dense": json.dumps(dense)})

    @redis_errors
    def append(self, user_id: str, stream: str, events: Sequence[Event]) -> None:
        events = self._check_events(user_id, stream, events)
        if not events:
            return
        key = self._events_key(stream, user_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.zadd(key, {encode_event(e): e.ts for e in events})
        pipe.zremrangebyrank(key, 0, -self.max_len[stream] - 1)
        pipe.execute()

    @redis_errors
    def histories(self, user_ids: Sequence[str], request_time: int) -> list[UserHistory]:
        _check_request_time(request_time)
        ids = list(dict.fromkeys(user_ids))
        streams = list(self.max_len)
        pipe = self._redis.pipeline(transaction=False)
        for user_id in ids:  # EVAL, not EVALSHA: a pipeline of scripts would first ask SCRIPT EXISTS
            pipe.eval(_READ_USER, 1 + len(streams), self._profile_key(user_id),
                      *(self._events_key(s, user_id) for s in streams), request_time)
        out = []
        for user_id, reply in zip(ids, pipe.execute()):
            if reply:
                sparse, dense, *counted = reply  # then per stream: count, JSON array
                events = {s: decode_events(counted[2 * i + 1], int(counted[2 * i])) for i, s in enumerate(streams)}
                out.append(UserHistory(user_id, request_time, tuple(json.loads(sparse)), tuple(json.loads(dense)),
                                       events))
        return out
