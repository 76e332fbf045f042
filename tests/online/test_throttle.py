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
