"""FeatureStore backends: round trips, batches, newer-wins puts, validation, open_store."""

import threading

import pytest
import redis

from duet_sdk.errors import ConfigError, DataError
from duet_sdk.online import RedisStore, SqliteStore, StoredCodes, open_store


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "codes.db")
    else:
        s = RedisStore(request.getfixturevalue("redis_url"))
    yield s
    s.close()


def rec(user_id: str, at: float, version: str = "v1", click=(1, 2, 3)) -> StoredCodes:
    return StoredCodes(user_id, {"click": tuple(click), "conv": (4,)}, version, at)


def test_put_then_get_round_trips(store):
    r = StoredCodes("u1", {"click": (0, 255, 7), "conv": (9, 1)}, "v3", 1700000000.125)
    assert store.put(r)
    assert store.get("u1") == r
    assert store.get("nobody") is None


def test_scan_resumes_from_its_cursor_and_returns_every_user_and_counts_users_per_release(store):
    store.put_many([rec(f"u{i:03d}", 10.0, "1" if i % 3 else "2") for i in range(120)])
    seen, cursor, calls = {}, "", 0
    while cursor is not None and calls < 1000:  # bounded: SCAN's count is a hint
        records, cursor = store.scan(cursor, 7)
        seen |= {r.user_id: r for r in records}
        calls += 1
    assert set(seen) == {f"u{i:03d}" for i in range(120)} and seen["u001"] == rec("u001", 10.0, "1")
    assert store.version_counts() == {"1": 80, "2": 40}


def test_batch_get_returns_hits_only(store):
    assert store.put_many([rec(f"u{i}", 10.0 + i) for i in range(50)]) == 50
    got = store.get_many(["u3", "missing", "u49", "u3"])
    assert set(got) == {"u3", "u49"}
    assert got["u49"] == rec("u49", 59.0)
    assert store.get_many([]) == {}


def test_older_put_is_ignored_and_newer_wins(store):
    assert store.put(rec("u1", 100.0, "new", click=(5, 5)))
    assert not store.put(rec("u1", 99.5, "old", click=(1, 1)))
    assert store.get("u1").model_version == "new"
    assert store.put_many([rec("u1", 50.0, "older"), rec("u2", 1.0)]) == 1  # u1 skipped, u2 written
    assert store.get("u1").model_version == "new"
    assert store.put(rec("u1", 101.0, "newer"))
    assert store.get("u1") == rec("u1", 101.0, "newer")


def test_equal_time_put_overwrites(store):
    store.put(rec("u1", 100.0, "a"))
    assert store.put(rec("u1", 100.0, "b"))
    assert store.get("u1").model_version == "b"


def test_batch_with_one_user_twice_keeps_the_newest(store):
    assert store.put_many([rec("u1", 2.0, "late"), rec("u1", 1.0, "early")]) == 1
    assert store.get("u1").model_version == "late"


@pytest.mark.parametrize("codes", [{"click": (1, -1)}, {"click": (1.5,)}, {"click": (True,)}, {}, {"click": "12"}])
def test_invalid_codes_are_rejected_before_any_write(store, codes):
    with pytest.raises(DataError, match="codes"):
        store.put_many([rec("ok", 1.0), StoredCodes("bad", codes, "v1", 1.0)])
    assert store.get_many(["ok", "bad"]) == {}


def test_invalid_produced_at_is_rejected(store):
    with pytest.raises(DataError, match="produced_at"):
        store.put(StoredCodes("u1", {"click": (1,)}, "v1", float("nan")))


def test_sqlite_persists_across_reopen(tmp_path):
    with SqliteStore(tmp_path / "db" / "codes.db") as s:
        s.put(rec("u1", 5.0))
    with open_store(f"sqlite:///{tmp_path}/db/codes.db") as s:
        assert s.get("u1") == rec("u1", 5.0)
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_is_safe_across_threads(tmp_path):
    s = SqliteStore(tmp_path / "codes.db")

    def writer(k: int) -> None:
        for i in range(50):
            s.put_many([rec(f"t{k}-{i}", float(i)), rec("shared", float(k * 100 + i))])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(s.get_many([f"t{k}-{i}" for k in range(4) for i in range(50)])) == 200
    assert s.get("shared").produced_at == 349.0  # the newest of all writes, whatever the interleaving
    s.close()


def test_redis_layout_is_one_hash_per_user_with_optional_ttl(redis_url):
    with RedisStore(redis_url, prefix="t:", ttl_s=30) as s:
        s.put(rec("u1", 5.0))
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.hgetall("t:u1") == {"codes": '{"click": [1, 2, 3], "conv": [4]}', "model_version": "v1",
                                      "produced_at": "5.0"}
    assert 0 < client.pttl("t:u1") <= 30_000


def test_open_store_picks_the_backend(tmp_path, redis_url):
    with open_store(tmp_path / "a.db") as a, open_store(f"sqlite:///{tmp_path}/b.db") as b:
        assert isinstance(a, SqliteStore) and isinstance(b, SqliteStore)
    with open_store(redis_url, prefix="x:") as r:
        assert isinstance(r, RedisStore) and r.prefix == "x:"


@pytest.mark.parametrize("url", ["postgres://db/x", "sqlite://relative.db", "", "mysql://h/d"])
def test_open_store_rejects_other_schemes_naming_the_field(url):
    with pytest.raises(ConfigError, match="redis://") as info:
        open_store(url)
    assert info.value.field == "store"
