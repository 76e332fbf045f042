"""The ETI worker's Redis round trips are per batch, not per user, and batching keeps the per-user
semantics: throttle windows and deferrals, newer-wins store writes, history reads.

Round trips are counted on a real Redis by ``RoundTrips`` (every request the client sends: a command,
or a whole pipeline)."""

import pytest
import redis
from eti_proc import STREAMS, fake_codes, fake_embed

from duet_sdk.errors import DataError
from duet_sdk.interface import Event
from duet_sdk.online import (
    EtiConfig,
    EtiWorker,
    InMemoryThrottle,
    RedisHistory,
    RedisStore,
    RedisStreamQueue,
    RedisThrottle,
    StoredCodes,
)
from duet_sdk.online.redis_server import RoundTrips
from duet_sdk.online.throttle import Deferred

NOW = 1_000_000.0


def _step_round_trips(url: str, users: int) -> tuple[int, EtiWorker]:
    """One worker step over ``users`` fresh triggers (half of them throttled: another worker holds their
    window) and ``users // 4`` trailing users; returns the step's round trips and the worker."""
    redis.Redis.from_url(url).flushdb()
    history = RedisHistory(url, STREAMS)
    fresh = [f"u{i}" for i in range(users)]
    trailing = [f"t{i}" for i in range(users // 4)]
    for u in fresh + trailing:
        history.set_profile(u, [1], [0.5])
        history.append(u, "click", [Event(900_000, (7, 8))])
    other = RedisThrottle(url, 60.0)
    for u in fresh[::2]:
        other.admit(u, NOW)  # another worker's open windows: these triggers are throttled
    for u in trailing:
        other.defer(u, 900_000, NOW - 120)  # due now
    producer = RedisStreamQueue(url, consumer="producer")
    for u in fresh:
        producer.publish(u, "click", 900_000)
    trips = RoundTrips(url)
    worker = EtiWorker(RedisStreamQueue(trips.client, consumer="w"), RedisThrottle(trips.client, 60.0),
                       RedisHistory(trips.client, STREAMS), RedisStore(trips.client), fake_embed,
                       EtiConfig(max_batch=users, max_wait_s=0.0), clock=lambda: NOW)
    trips.reset()
    written = worker.run_once()
    count = trips.reset()
    assert written == users // 2 + users // 4
    return count, worker


def test_a_worker_step_takes_the_same_redis_round_trips_for_4_or_64_users(redis_url):
    """Per-user calls (one SET NX per admitted user, one script per deferral) made a step's round trips
    grow with its users (18 for 4 users, 120 for 64 before batching); batched, a step costs 10: reclaim,
    read, admit, defer, ack the throttled, due, admit the trailing, read histories, write codes, ack."""
    small, _ = _step_round_trips(redis_url, 4)
    large, worker = _step_round_trips(redis_url, 64)
    assert small == large == 10, (small, large)
    m = worker.metrics
    assert (m.triggers, m.throttled, m.trailing, m.written) == (64, 32, 16, 48)
    assert worker.queue.pending() == 0
    store = RedisStore(redis_url)
    stored = store.get_many([f"u{i}" for i in range(64)] + [f"t{i}" for i in range(16)])
    assert sorted(stored) == sorted([f"u{i}" for i in range(1, 64, 2)] + [f"t{i}" for i in range(16)])
    assert stored["u1"] == StoredCodes("u1", fake_codes("u1"), "v1", NOW)


@pytest.fixture(params=["memory", "redis"])
def throttles(request):
    """Two workers' views of one throttle (window 60 s)."""
    if request.param == "memory":
        shared = InMemoryThrottle(60.0)
        return shared, shared
    url = request.getfixturevalue("redis_url")
    return RedisThrottle(url, 60.0), RedisThrottle(url, 60.0)


def test_admit_many_opens_only_free_windows_and_release_many_reopens_them(throttles):
    a, b = throttles
    assert a.admit("u1", NOW)
    assert b.admit_many(["u1", "u2", "u3"], NOW) == {"u2", "u3"}
    assert a.admit_many(["u2", "u4"], NOW + 1) == {"u4"}
    assert a.admit_many([], NOW) == set()
    b.release_many(["u2", "u3"])
    b.release_many([])
    assert a.admit_many(["u1", "u2", "u3"], NOW + 2) == {"u2", "u3"}


def test_defer_many_records_what_the_same_defer_calls_record(redis_url):
    one_by_one, batched = RedisThrottle(redis_url, 0.2, prefix="a:"), RedisThrottle(redis_url, 0.2, prefix="b:")
    deferrals = [Deferred("u1", 12, 1), Deferred("u2", 5, 3), Deferred("u1", 10, 1)]
    for t in (one_by_one, batched):
        t.admit("u1", NOW)  # u1's window is open: due when it ends; u2 has none: due at once
    for d in deferrals:
        one_by_one.defer(d.user_id, d.first_ts, NOW, d.count)
    batched.defer_many(deferrals, NOW)
    for t in (one_by_one, batched):
        assert t.due(NOW, 10) == [Deferred("u2", 5, 3)]
        assert t.due(NOW + 0.1, 10) == []
        [d] = t.due(NOW + 0.25, 10)
        assert d == Deferred("u1", 10, 2)


def test_batches_of_store_writes_history_reads_and_admits_are_one_round_trip_each(redis_url):
    trips = RoundTrips(redis_url)
    store, history, throttle = RedisStore(trips.client), RedisHistory(trips.client, STREAMS), \
        RedisThrottle(trips.client, 60.0)
    users = [f"u{i}" for i in range(50)]
    for u in users:
        history.set_profile(u, [1], [0.5])
    trips.reset()
    assert store.put_many([StoredCodes(u, fake_codes(u), "v2", NOW) for u in users]) == 50
    assert trips.reset() == 1
    assert len(history.histories(users, request_time=0)) == 50
    assert trips.reset() == 1
    assert len(throttle.admit_many(users, NOW)) == 50
    assert trips.reset() == 1


def test_store_writes_survive_a_flushed_script_cache_and_keep_newer_wins(redis_url):
    """A Redis restart empties its script cache: writes still land (EVAL carries the script), and an
    older write of the same batch shape still loses to what is stored."""
    store = RedisStore(redis_url)
    assert store.put_many([StoredCodes("u1", {"click": (1,)}, "v2", NOW)]) == 1
    redis.Redis.from_url(redis_url).script_flush()
    older, newer = StoredCodes("u1", {"click": (2,)}, "v1", NOW - 1), StoredCodes("u2", {"click": (3,)}, "v2", NOW)
    assert store.put_many([older, newer]) == 1
    assert store.get("u1").model_version == "v2" and store.get("u2") == newer


def test_a_corrupt_stored_event_is_a_data_error_not_a_wrong_history(redis_url):
    """A member holding two events joined by a comma would pass a blind join: the count check catches it."""
    history = RedisHistory(redis_url, STREAMS, prefix="h:")
    history.set_profile("u1", [1], [0.5])
    redis.Redis.from_url(redis_url).zadd("h:events:click:u1", {"[3,[4,5]],[4,[6,7]]": 3})
    with pytest.raises(DataError, match="corrupt"):
        history.histories(["u1"], request_time=10)
