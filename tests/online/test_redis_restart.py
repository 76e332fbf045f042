"""ETI across a Redis restart, in both configurations the README describes:

* no persistence: streams, the consumer group, histories and codes are gone; the worker recreates the
  group, carries on with new triggers, and reports the restart and the lost window in its metrics;
* AOF (``appendonly yes``, fsync every second): nothing is lost; a trigger left pending by a worker
  that died across the restart is reclaimed and embedded.

Also: credentials come from the environment, never from the URL, and are redacted in messages."""

import time

import pytest
import redis
from eti_proc import STREAMS, fake_codes, fake_embed

from duet_sdk.errors import ConfigError, StoreError
from duet_sdk.interface import Event
from duet_sdk.online import EtiConfig, EtiWorker, RedisHistory, RedisServer, RedisStore, RedisStreamQueue, RedisThrottle
from duet_sdk.online._redis import PASSWORD_ENV, connect, redact


def deployment(url: str, consumer: str = "w1") -> EtiWorker:
    return EtiWorker(RedisStreamQueue(url, consumer=consumer), RedisThrottle(url, 60.0), RedisHistory(url, STREAMS),
                     RedisStore(url), fake_embed,
                     EtiConfig(max_batch=16, max_wait_s=0.02, reclaim_idle_s=0.1, reclaim_every_s=0.0))


def add_user(url: str, user: str) -> None:
    history = RedisHistory(url, STREAMS)
    history.set_profile(user, [1, 2], [0.5])
    history.append(user, "click", [Event(1_000, (7, 8))])


def steps_until(worker: EtiWorker, done, tries: int = 20) -> None:
    """run_once until ``done()``; a step may fail while the client reconnects to the restarted server."""
    for _ in range(tries):
        try:
            worker.run_once()
        except StoreError:
            time.sleep(0.1)
        if done():
            return
    raise AssertionError(f"not done after {tries} steps; metrics {worker.metrics.to_dict()}")


def test_without_persistence_the_worker_recreates_its_group_and_reports_the_loss():
    with RedisServer() as server:
        url = server.url
        worker = deployment(url)
        add_user(url, "before")
        RedisStreamQueue(url, consumer="producer").publish("before", "click", 1_000)
        assert worker.run_once() == 1
        server.restart()  # everything is gone: stream, group, histories, codes
        assert RedisStore(url).get("before") is None
        add_user(url, "after")
        # a producer that was running (it does not recreate the group): a plain XADD
        redis.Redis.from_url(url).xadd("duet:triggers", {"user": "after", "stream": "click", "ts": 1_001})
        steps_until(worker, lambda: RedisStore(url).get("after") is not None)
        assert RedisStore(url).get("after").codes == fake_codes("after")
        m = worker.metrics
        assert m.redis_recoveries == 1 and m.lost_window_s > 0
        assert worker.queue.pending() == 0


def test_with_aof_a_restart_loses_nothing_and_a_pending_trigger_is_reclaimed():
    with RedisServer(appendonly=True) as server:
        url = server.url
        assert redis.Redis.from_url(url).config_get("appendonly") == {"appendonly": "yes"}
        add_user(url, "kept")
        add_user(url, "stored")
        worker = deployment(url)
        RedisStreamQueue(url, consumer="producer").publish("stored", "click", 1_000)
        assert worker.run_once() == 1
        RedisStreamQueue(url, consumer="producer").publish("kept", "click", 1_000)
        assert len(RedisStreamQueue(url, consumer="dies").read(count=10, block_ms=0)) == 1  # pending, owner dies
        server.restart()
        assert RedisStore(url).get("stored").codes == fake_codes("stored")  # codes survived
        assert RedisStreamQueue(url, consumer="probe").pending() == 1  # so did the group and its pending entry
        time.sleep(0.15)
        steps_until(worker, lambda: RedisStore(url).get("kept") is not None)
        assert worker.metrics.redis_recoveries == 0 and worker.queue.pending() == 0


def test_password_comes_from_the_environment_and_is_redacted(monkeypatch, tmp_path):
    secret = "s3cret-pw"
    with RedisServer(password=secret) as server:
        with pytest.raises(StoreError):
            RedisStore(server.url).get("u")  # no credentials: refused
        monkeypatch.setenv(PASSWORD_ENV, secret)
        assert RedisStore(server.url).get("u") is None
        monkeypatch.delenv(PASSWORD_ENV)
        key = tmp_path / "redis-password"
        key.write_text(secret + "\n")
        monkeypatch.setenv("DUET_REDIS_PASSWORD_FILE", str(key))
        assert RedisStore(server.url).get("u") is None
        assert secret not in " ".join(open(f"/proc/{server._process.pid}/cmdline").read().split("\0"))
    assert redact(f"redis://:{secret}@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    with pytest.raises(ConfigError) as info:
        connect(f"http://:{secret}@127.0.0.1:6379/0", "redis")
    assert secret not in str(info.value)
