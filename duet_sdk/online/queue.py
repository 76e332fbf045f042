"""Trigger queue of event-triggered inference, at-least-once.

A consumer ``read``s triggers, which then stay pending (owned by it) until ``ack``ed; ``reclaim`` hands
a consumer the entries that have been pending longer than ``min_idle_ms`` (their owner died or hangs),
each with how often it has been delivered. ``dead_letter`` moves poison entries (delivered too often,
or failing alone) to a dead-letter stream and acks them, in one transaction.

A Redis that restarted without persistence has lost the stream and its consumer group: the Redis queue
then recreates the group (``NOGROUP`` on any call), carries on with new triggers, and counts the
restart in ``recoveries`` and the time since its last successful read in ``lost_window_s`` (triggers
published in that window, and all pending ones, are gone; see README "Redis persistence").

Backends: ``RedisStreamQueue`` (a Redis stream and consumer group, shared by processes) and
``InProcessQueue`` (embedded default; consumers of one process share it via ``for_consumer``).

Example::

    queue = RedisStreamQueue("redis://127.0.0.1:6379/0", consumer="eti-1")
    queue.publish("u1", "click", event_ts=1700000000)
    for t in queue.read(count=64, block_ms=50):
        ...
    queue.ack([t.entry_id])
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from duet_sdk.errors import ConfigError, DataError
from duet_sdk.online._redis import connect, redis_errors, text
from duet_sdk.validation import require_int

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trigger:
    """A user's new event on ``stream`` at ``event_ts`` (Unix seconds); ``entry_id`` is what to ``ack``;
    ``deliveries``: how often it has been handed to a consumer (1 on first read)."""

    user_id: str
    event_ts: int
    stream: str
    entry_id: str
    deliveries: int = 1


def default_consumer() -> str:
    """``host-pid-random``: unique per process, so a restarted worker never inherits a dead one's name."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _check_publish(user_id: str, stream: str, event_ts: int) -> None:
    if not isinstance(user_id, str) or not user_id:
        raise ConfigError("user_id", "a non-empty str", user_id)
    if not isinstance(stream, str) or not stream:
        raise ConfigError("stream", "a non-empty str", stream)
    require_int("event_ts", event_ts, 0)
    if event_ts > 2**32:
        raise ConfigError("event_ts", "Unix seconds in [0, 2**32]", event_ts)


class TriggerQueue(ABC):
    """At-least-once queue of Triggers, seen by one named consumer."""

    consumer: str

    @abstractmethod
    def publish(self, user_id: str, stream: str, event_ts: int) -> str:
        """Enqueue a trigger; returns its entry id."""

    @abstractmethod
    def read(self, count: int, block_ms: int) -> list[Trigger]:
        """Up to ``count`` new triggers for this consumer, waiting up to ``block_ms`` (0: no wait) for
        the first; they are pending until acked."""

    @abstractmethod
    def ack(self, entry_ids: Sequence[str]) -> int:
        """Mark entries done; returns how many were pending."""

    @abstractmethod
    def reclaim(self, min_idle_ms: int, count: int) -> list[Trigger]:
        """Take over up to ``count`` entries pending for at least ``min_idle_ms`` (any consumer's)."""

    @abstractmethod
    def pending(self) -> int:
        """How many entries are read but not acked, over all consumers."""

    @abstractmethod
    def dead_letter(self, triggers: Sequence[Trigger], reason: str) -> int:
        """Move pending ``triggers`` to the dead-letter store with ``reason`` and ack them; returns how many."""

    @abstractmethod
    def dead_letters(self, count: int = 100) -> list[dict]:
        """The oldest ``count`` dead letters: ``user``, ``stream``, ``ts``, ``entry``, ``deliveries``, ``reason``."""

    recoveries: int = 0  # times the queue found its group gone (a Redis restart without persistence)
    lost_window_s: float = 0.0  # summed seconds between the last good read and each recovery

    def close(self) -> None:
        """Release connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RedisStreamQueue(TriggerQueue):
    """Redis stream ``stream`` with consumer group ``group`` (created with MKSTREAM when missing).

    Args:
        client_or_url: ``redis://...`` or a ``redis.Redis`` (with no socket timeout shorter than reads block).
        stream, group: the stream key and its consumer group.
        consumer: this consumer's name; None: ``default_consumer()``.
        maxlen: approximate cap on the stream's length (XADD MAXLEN ~); entries trimmed while pending
            are lost, so keep it far above the backlog. None: no cap.

    Entries carry fields ``user``, ``stream``, ``ts``. Dead letters go to the stream ``{stream}:dead``.
    """

    def __init__(self, client_or_url: Any, stream: str = "duet:triggers", group: str = "eti",
                 consumer: str | None = None, maxlen: int | None = 1_000_000) -> None:
        if maxlen is not None:
            require_int("maxlen", maxlen, 1)
        self._owns_client = isinstance(client_or_url, str)
        self._redis = connect(client_or_url, "queue")
        self.stream, self.group, self.maxlen = stream, group, maxlen
        self.dead_stream = f"{stream}:dead"
        self.consumer = consumer or default_consumer()
        self.recoveries, self.lost_window_s = 0, 0.0
        self._last_ok = time.time()
        self._create_group()

    @redis_errors
    def _create_group(self) -> None:
        import redis
        try:
            self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _group_call(self, fn: Callable[[], Any]) -> Any:
        """``fn()``; where the group is gone (NOGROUP: Redis restarted without its data), recreate it,
        count the recovery and the window since the last good call, and try once more."""
        import redis
        try:
            out = fn()
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            now = time.time()
            self._create_group()
            self.recoveries += 1
            self.lost_window_s += max(0.0, now - self._last_ok)
            log.warning("trigger group %s of %s was gone (Redis restarted without persistence?): recreated; "
                        "triggers pending or published in the last %.1fs are lost", self.group, self.stream,
                        now - self._last_ok)
            out = fn()
        self._last_ok = time.time()
        return out

    @redis_errors
    def publish(self, user_id: str, stream: str, event_ts: int) -> str:
        _check_publish(user_id, stream, event_ts)
        fields = {"user": user_id, "stream": stream, "ts": event_ts}
        return text(self._redis.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True))

    @redis_errors
    def read(self, count: int, block_ms: int) -> list[Trigger]:
        require_int("count", count, 1)
        block = int(block_ms) if block_ms and block_ms > 0 else None  # BLOCK 0 would wait forever
        reply = self._group_call(lambda: self._redis.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                                                count=count, block=block))
        if isinstance(reply, dict):  # RESP3 clients
            entries = [e for per_stream in reply.values() for e in per_stream[0]]
        else:
            entries = [e for _, per_stream in reply or [] for e in per_stream]
        return [t for t in map(self._trigger, entries) if t is not None]

    @staticmethod
    def _trigger(entry: tuple) -> Trigger | None:
        entry_id, fields = entry
        if not fields:  # deleted from the stream while pending
            return None
        f = {text(k): text(v) for k, v in fields.items()}
        try:
            return Trigger(f["user"], int(f["ts"]), f["stream"], text(entry_id))
        except (KeyError, ValueError) as exc:
            raise DataError(f"trigger entry {text(entry_id)}: expected fields user, stream, ts; got {f}") from exc

    @redis_errors
    def ack(self, entry_ids: Sequence[str]) -> int:
        if not entry_ids:
            return 0
        return int(self._group_call(lambda: self._redis.xack(self.stream, self.group, *entry_ids)))

    @redis_errors
    def reclaim(self, min_idle_ms: int, count: int) -> list[Trigger]:
        require_int("count", count, 1)
        claimed: list[Trigger] = []
        start = "0-0"
        while len(claimed) < count:
            reply = self._group_call(lambda: self._redis.xautoclaim(
                self.stream, self.group, self.consumer, int(min_idle_ms), start_id=start, count=count - len(claimed)))
            start, entries = text(reply[0]), reply[1]
            claimed += [t for t in map(self._trigger, entries) if t is not None]
            if start == "0-0":
                break
        return self._with_deliveries(claimed)

    def _with_deliveries(self, triggers: list[Trigger]) -> list[Trigger]:
        """``triggers`` with their delivery counts from XPENDING (XAUTOCLAIM has just counted this one)."""
        if not triggers:
            return triggers
        pipe = self._redis.pipeline(transaction=False)
        for t in triggers:
            pipe.xpending_range(self.stream, self.group, min=t.entry_id, max=t.entry_id, count=1)
        counts = [int(r[0]["times_delivered"]) if r else 1 for r in pipe.execute()]
        return [dataclasses.replace(t, deliveries=n) for t, n in zip(triggers, counts)]

    @redis_errors
    def dead_letter(self, triggers: Sequence[Trigger], reason: str) -> int:
        if not triggers:
            return 0
        pipe = self._redis.pipeline(transaction=True)
        for t in triggers:
            pipe.xadd(self.dead_stream, {"user": t.user_id, "stream": t.stream, "ts": t.event_ts, "entry": t.entry_id,
                                         "deliveries": t.deliveries, "reason": reason[:500]},
                      maxlen=self.maxlen, approximate=True)
        pipe.xack(self.stream, self.group, *[t.entry_id for t in triggers])
        pipe.execute()
        return len(triggers)

    @redis_errors
    def dead_letters(self, count: int = 100) -> list[dict]:
        entries = self._redis.xrange(self.dead_stream, count=count)
        return [{text(k): text(v) for k, v in fields.items()} for _, fields in entries]

    @redis_errors
    def pending(self) -> int:
        return int(self._group_call(lambda: self._redis.xpending(self.stream, self.group))["pending"])

    def close(self) -> None:
        if self._owns_client:
            self._redis.close()


class _Broker:
    """State shared by the InProcessQueue views of one queue."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.cond = threading.Condition()
        self.ready: OrderedDict[str, Trigger] = OrderedDict()
        self.pending: dict[str, tuple[Trigger, str, float]] = {}  # id -> (trigger, owner, delivered at)
        self.dead: list[dict] = []
        self.ids = itertools.count(1)


class InProcessQueue(TriggerQueue):
    """Thread-safe queue in this process with the same at-least-once semantics as RedisStreamQueue.

    Args:
        consumer: this view's consumer name.
        clock: monotonic seconds, for idle times (injectable in tests).

    ``for_consumer(name)`` returns another consumer's view of the same queue.
    """

    def __init__(
        self, consumer: str = "local", clock: Callable[[], float] = time.monotonic, _broker: _Broker | None = None
    ) -> None:
        self.consumer = consumer
        self._b = _broker or _Broker(clock)

    def for_consumer(self, name: str) -> InProcessQueue:
        return InProcessQueue(name, _broker=self._b)

    def publish(self, user_id: str, stream: str, event_ts: int) -> str:
        _check_publish(user_id, stream, event_ts)
        with self._b.cond:
            entry_id = f"{next(self._b.ids)}-0"
            self._b.ready[entry_id] = Trigger(user_id, event_ts, stream, entry_id)
            self._b.cond.notify_all()
        return entry_id

    def read(self, count: int, block_ms: int) -> list[Trigger]:
        require_int("count", count, 1)
        b = self._b
        with b.cond:
            if not b.ready and block_ms and block_ms > 0:
                b.cond.wait_for(lambda: b.ready, timeout=block_ms / 1000)
            now = b.clock()
            out = []
            while b.ready and len(out) < count:
                entry_id, trigger = b.ready.popitem(last=False)
                b.pending[entry_id] = (trigger, self.consumer, now)
                out.append(trigger)
            return out

    def ack(self, entry_ids: Sequence[str]) -> int:
        with self._b.cond:
            return sum(self._b.pending.pop(i, None) is not None for i in entry_ids)

    def reclaim(self, min_idle_ms: int, count: int) -> list[Trigger]:
        require_int("count", count, 1)
        b = self._b
        with b.cond:
            now = b.clock()
            stale = [(i, t) for i, (t, _, at) in b.pending.items() if (now - at) * 1000 >= min_idle_ms][:count]
            out = []
            for entry_id, trigger in stale:
                trigger = dataclasses.replace(trigger, deliveries=trigger.deliveries + 1)
                b.pending[entry_id] = (trigger, self.consumer, now)
                out.append(trigger)
            return out

    def dead_letter(self, triggers: Sequence[Trigger], reason: str) -> int:
        with self._b.cond:
            for t in triggers:
                if self._b.pending.pop(t.entry_id, None) is not None:
                    self._b.dead.append(
                        {
                            "user": t.user_id,
                            "stream": t.stream,
                            "ts": str(t.event_ts),
                            "entry": t.entry_id,
                            "deliveries": str(t.deliveries),
                            "reason": reason,
                        }
                    )
            return len(triggers)

    def dead_letters(self, count: int = 100) -> list[dict]:
        with self._b.cond:
            return [dict(d) for d in self._b.dead[:count]]

    def pending(self) -> int:
        with self._b.cond:
            return len(self._b.pending)
