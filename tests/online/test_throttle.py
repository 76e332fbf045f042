"""Throttles: one admission per user per window, release, and sharing between workers in Redis."""

import time

import pytest

from duet_sdk.errors import ConfigError
from duet_sdk.online import InMemoryThrottle, RedisThrottle


def test_admits_first_trigger_per_window_per_user():
    t = InMemoryThrottle(window_s=5.0)
    assert t.admit("u1", 100.0)
    assert not t.admit("u1", 104.9)
    assert t.admit("u2", 104.9)
    assert t.admit("u1", 105.0)


def test_release_reopens_admission():
    t = InMemoryThrottle(window_s=5.0)
    assert t.admit("u1", 0.0)
    t.release("u1")
    assert t.admit("u1", 1.0)


def test_expired_windows_are_swept():
    t = InMemoryThrottle(window_s=1.0)
    for i in range(100):
        t.admit(f"u{i}", 0.0)
    t.admit("late", 5.0)
    assert len(t) == 1


def test_redis_windows_are_shared_and_expire(redis_url):
    a, b = RedisThrottle(redis_url, window_s=0.2), RedisThrottle(redis_url, window_s=0.2)
    assert a.admit("u1", 0.0)
    assert not b.admit("u1", 0.0)  # another worker
    time.sleep(0.25)
    assert b.admit("u1", 0.0)
    b.release("u1")
    assert a.admit("u1", 0.0)


@pytest.mark.parametrize("window", [0, -1.0, "5"])
def test_rejects_bad_window(window):
    with pytest.raises(ConfigError) as info:
        InMemoryThrottle(window)
    assert info.value.field == "window_s"


def test_deferred_triggers_fall_due_when_the_window_ends_with_their_count_and_first_time():
    t = InMemoryThrottle(window_s=5.0)
    assert t.admit("u1", 100.0)
    t.defer("u1", event_ts=102, now=102.0)
    t.defer("u1", event_ts=101, now=103.0)
    assert t.due(104.9, limit=10) == []
    [d] = t.due(105.0, limit=10)
    assert (d.user_id, d.first_ts, d.count) == ("u1", 101, 2)
    assert t.due(200.0, limit=10) == []  # handed out once


def test_redis_deferrals_are_claimed_by_one_worker_only(redis_url):
    a, b = RedisThrottle(redis_url, window_s=0.2), RedisThrottle(redis_url, window_s=0.2)
    assert a.admit("user", 0.0)
    a.defer("user", event_ts=7, now=time.time())
    b.defer("user", event_ts=9, now=time.time())
    assert a.due(time.time(), limit=10) == []  # the window (0.2 s of Redis time) is still open
    time.sleep(0.3)
    claimed = a.due(time.time(), limit=10) + b.due(time.time(), limit=10)
    assert [(d.user_id, d.first_ts, d.count) for d in claimed] == [("user", 7, 2)]
