"""HistoryStore backends: capped recent events, request-time filter, profiles, validation."""

import pytest
import redis

from duet_sdk.errors import ConfigError, DataError
from duet_sdk.interface import Event
from duet_sdk.online import InMemoryHistory, RedisHistory

MAX_LEN = {"click": 3, "conv": 2}


@pytest.fixture(params=["memory", "redis"])
def history(request):
    if request.param == "memory":
        return InMemoryHistory(MAX_LEN)
    return RedisHistory(request.getfixturevalue("redis_url"), MAX_LEN)


def test_keeps_only_the_max_len_most_recent_events(history):
    history.set_profile("u1", [1], [0.5])
    history.append("u1", "click", [Event(ts, (ts,)) for ts in (10, 11, 12)])
    history.append("u1", "click", [Event(14, (14,)), Event(9, (9,)), Event(13, (13,))])  # out of order
    history.append("u1", "conv", [Event(ts, (ts, 0)) for ts in (1, 2, 3)])
    [h] = history.histories(["u1"], request_time=100)
    assert [e.ts for e in h.streams["click"]] == [12, 13, 14]
    assert h.streams["conv"] == (Event(2, (2, 0)), Event(3, (3, 0)))


def test_filters_events_after_request_time(history):
    history.set_profile("u1", [1], [0.5])
    history.append("u1", "click", [Event(ts, (ts,)) for ts in (10, 20, 30)])
    [h] = history.histories(["u1"], request_time=20)
    assert h.request_time == 20
    assert [e.ts for e in h.streams["click"]] == [10, 20]
    assert h.streams["conv"] == ()


def test_user_without_profile_is_left_out(history):
    history.set_profile("a", [3, 4], [0.25, -1.0])
    history.append("ghost", "click", [Event(1, (1,))])
    got = history.histories(["ghost", "a", "nobody", "a"], request_time=5)
    assert [h.user_id for h in got] == ["a"]
    assert (tuple(got[0].static_sparse), tuple(got[0].static_dense)) == ((3, 4), (0.25, -1.0))


def test_reappending_the_same_events_stores_them_once(history):
    history.set_profile("u1", [], [])
    batch = [Event(5, (1, 2)), Event(5, (3, 4))]
    history.append("u1", "click", batch)
    history.append("u1", "click", batch)  # a redelivered batch
    [h] = history.histories(["u1"], request_time=5)
    assert h.streams["click"] == (Event(5, (1, 2)), Event(5, (3, 4)))


def test_set_profile_replaces(history):
    history.set_profile("u1", [1], [1.0])
    history.set_profile("u1", [2, 3], [2.0])
    [h] = history.histories(["u1"], 0)
    assert tuple(h.static_sparse) == (2, 3)


def test_backends_agree_on_ties(redis_url):
    """Equal ts order by the encoded event in both backends, so trimming keeps the same events."""
    events = [Event(7, (i, 9 - i)) for i in (3, 1, 2, 0)] + [Event(6, (5,))]
    results = []
    for history in (InMemoryHistory(MAX_LEN), RedisHistory(redis_url, MAX_LEN)):
        history.set_profile("u", [], [])
        history.append("u", "click", events)
        results.append(history.histories(["u"], 10)[0].streams["click"])
    assert results[0] == results[1] == (Event(7, (1, 8)), Event(7, (2, 7)), Event(7, (3, 6)))


def test_redis_key_layout(redis_url):
    h = RedisHistory(redis_url, MAX_LEN, prefix="h:")
    h.set_profile("u1", [1], [0.5])
    h.append("u1", "click", [Event(3, (4, 5))])
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.hgetall("h:profile:u1") == {"static_sparse": "[1]", "static_dense": "[0.5]"}
    assert client.zrange("h:events:click:u1", 0, -1, withscores=True) == [("[3,[4,5]]", 3.0)]


def test_rejects_unknown_stream_and_bad_events(history):
    with pytest.raises(ConfigError) as info:
        history.append("u1", "views", [Event(1, (1,))])
    assert info.value.field == "stream"
    with pytest.raises(DataError, match="Event"):
        history.append("u1", "click", [Event(1.5, (1,))])
    with pytest.raises(DataError, match="static_dense"):
        history.set_profile("u1", [1], [float("inf")])
    with pytest.raises(ConfigError, match="request_time"):
        history.histories(["u1"], request_time=1.5)


@pytest.mark.parametrize("max_len, field", [({}, "max_len"), ({"click": 0}, "max_len['click']"),
                                            ({"a:b": 1}, "max_len")])
def test_rejects_bad_max_len(max_len, field):
    with pytest.raises(ConfigError) as info:
        InMemoryHistory(max_len)
    assert info.value.field == field
