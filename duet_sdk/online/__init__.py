"""Online side of DUET serving: stored SIDE codes, user histories, and event-triggered inference (ETI).

redis-py is imported only when a Redis backend is constructed.
"""

from duet_sdk.online.backfill import Backfill, BackfillProgress
from duet_sdk.online.eti import EtiConfig, EtiWorker
from duet_sdk.online.eti_metrics import EtiCollector, EtiMetrics
from duet_sdk.online.history import HistoryStore, InMemoryHistory, RedisHistory
from duet_sdk.online.queue import InProcessQueue, RedisStreamQueue, Trigger, TriggerQueue
from duet_sdk.online.redis_server import RedisServer
from duet_sdk.online.scorer import Scorer, ScorerMetrics
from duet_sdk.online.store import FeatureStore, RedisStore, SqliteStore, open_store
from duet_sdk.online.throttle import InMemoryThrottle, RedisThrottle, Throttle
from duet_sdk.online.types import StoredCodes

__all__ = [
    "Backfill",
    "BackfillProgress",
    "EtiCollector",
    "EtiConfig",
    "EtiMetrics",
    "EtiWorker",
    "FeatureStore",
    "HistoryStore",
    "InMemoryHistory",
    "InMemoryThrottle",
    "InProcessQueue",
    "RedisHistory",
    "RedisServer",
    "RedisStore",
    "RedisStreamQueue",
    "RedisThrottle",
    "Scorer",
    "ScorerMetrics",
    "SqliteStore",
    "StoredCodes",
    "Throttle",
    "Trigger",
    "TriggerQueue",
    "open_store",
]
