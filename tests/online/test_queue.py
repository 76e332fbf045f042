"""Trigger queues: read -> pending -> ack, and reclaim of another consumer's stale entries."""

import time

import pytest
import redis

from duet_sdk.errors import ConfigError
from duet_sdk.online import InProcessQueue, RedisStreamQueue, Trigger


@pytest.fixture(params=["memory", "redis"])
def make_queue(request):
    """name -> that consumer's view of one shared queue."""
    if request.param == "memory":
        return InProcessQueue().for_consumer
    url = request.getfixturevalue("redis_url")
    return lambda name: RedisStreamQueue(url, consumer=name)


def test_read_returns_published_triggers_in_order_and_ack_clears_them(make_queue):
    q = make_queue("c1")
    ids = [q.publish(f"u{i}", "click", 100 + i) for i in range(5)]
    got = q.read(count=3, block_ms=0)
    assert got == [Trigger(f"u{i}", 100 + i, "click", ids[i]) for i in range(3)]
    assert [t.user_id for t in q.read(count=10, block_ms=0)] == ["u3", "u4"]
    assert q.pending() == 5
    assert q.ack(ids[:4]) == 4
    assert q.ack(ids[:4]) == 0  # already acked
    assert q.pending() == 1


def test_read_waits_at_most_block_ms_when_empty(make_queue):
    q = make_queue("c1")
    start = time.monotonic()
    assert q.read(count=5, block_ms=50) == []
    assert 0.04 <= time.monotonic() - start < 1.0
    assert q.read(count=5, block_ms=0) == []


def test_each_entry_goes_to_one_consumer(make_queue):
    a, b = make_queue("a"), make_queue("b")
    for i in range(4):
        a.publish(f"u{i}", "click", i)
    first, second = a.read(2, 0), b.read(10, 0)
    assert {t.entry_id for t in first}.isdisjoint(t.entry_id for t in second)
    assert len(first) + len(second) == 4


def test_reclaim_takes_over_stale_pending_entries_only(make_queue):
    dead, alive = make_queue("dead"), make_queue("alive")
    ids = [dead.publish(f"u{i}", "conv", i) for i in range(3)]
    dead.read(count=3, block_ms=0)  # and never acks
    assert alive.reclaim(min_idle_ms=10_000, count=10) == []  # not idle long enough
    time.sleep(0.06)
    got = alive.reclaim(min_idle_ms=50, count=2)
    assert [t.entry_id for t in got] == ids[:2]
    assert alive.reclaim(min_idle_ms=50, count=10)[0].entry_id == ids[2]
    assert alive.reclaim(min_idle_ms=50, count=10) == []  # reclaiming resets the idle time
    assert alive.ack(ids) == 3 and alive.pending() == 0


def test_rejects_bad_arguments(make_queue):
    q = make_queue("c")
    with pytest.raises(ConfigError) as info:
        q.publish("u1", "click", 1.5)
    assert info.value.field == "event_ts"
    with pytest.raises(ConfigError):
        q.read(count=0, block_ms=0)


def test_redis_group_is_created_once_and_stream_capped(redis_url):
    q1 = RedisStreamQueue(redis_url, stream="s", group="g", consumer="a", maxlen=100)
    RedisStreamQueue(redis_url, stream="s", group="g", consumer="b")  # BUSYGROUP ignored
    for i in range(1000):
        q1.publish("u", "click", i)
    client = redis.Redis.from_url(redis_url)
    assert len(client.xinfo_groups("s")) == 1
    assert client.xlen("s") < 1000  # approximate trimming


@pytest.mark.parametrize("event_ts", [-1, 2**40, 1.5, "1700000000"])
def test_a_trigger_time_outside_unix_seconds_is_refused(event_ts):
    from duet_sdk.errors import ConfigError
    from duet_sdk.online import InProcessQueue

    with pytest.raises(ConfigError, match="event_ts"):
        InProcessQueue().publish("u1", "click", event_ts)
