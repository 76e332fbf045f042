"""Fixtures of the online tests: a flushed real Redis per test and the ETI backends, both variants."""

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from eti_proc import STREAMS, fake_embed

from duet_sdk.interface import Event
from duet_sdk.online import (
    EtiConfig,
    EtiWorker,
    FeatureStore,
    HistoryStore,
    InMemoryHistory,
    InMemoryThrottle,
    InProcessQueue,
    RedisHistory,
    RedisStore,
    RedisStreamQueue,
    RedisThrottle,
    SqliteStore,
    Throttle,
    TriggerQueue,
)


@dataclass
class Online:
    """One deployment of the ETI parts: workers made by ``worker`` share queue, throttle, history, store."""

    queue_for: Callable[[str], TriggerQueue]
    throttle: Throttle
    history: HistoryStore
    store: FeatureStore

    def worker(self, consumer: str, embed=fake_embed, clock=time.time, **config) -> EtiWorker:
        """A worker that reclaims triggers pending 0.1 s at every step."""
        config = {"max_batch": 16, "max_wait_s": 0.02, "reclaim_idle_s": 0.1, "reclaim_every_s": 0.0, **config}
        return EtiWorker(self.queue_for(consumer), self.throttle, self.history, self.store, embed,
                         EtiConfig(**config), clock)

    def user(self, user_id: str, ts: int = 1_000) -> None:
        """Give ``user_id`` a profile and one click at ``ts``."""
        self.history.set_profile(user_id, [1, 2], [0.5])
        self.history.append(user_id, "click", [Event(ts, (7, 8))])


@pytest.fixture(params=["memory", "redis"])
def online(request, tmp_path):
    """Throttle window 60 s, streams ``STREAMS``; memory: InProcessQueue + SqliteStore, redis: all Redis."""
    if request.param == "memory":
        queue = InProcessQueue()
        parts = Online(queue.for_consumer, InMemoryThrottle(60.0), InMemoryHistory(STREAMS),
                       SqliteStore(tmp_path / "codes.db"))
    else:
        url = request.getfixturevalue("redis_url")
        parts = Online(lambda name: RedisStreamQueue(url, consumer=name), RedisThrottle(url, 60.0),
                       RedisHistory(url, STREAMS), RedisStore(url))
    yield parts
    parts.store.close()
