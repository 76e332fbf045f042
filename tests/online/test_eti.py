"""ETI worker on both deployments (in-process + SQLite, all Redis): at-least-once, throttling, batching."""

import threading
import time

import pytest
from eti_proc import fake_codes, fake_embed

from duet_sdk.client.errors import InvalidRequest, Unavailable
from duet_sdk.interface import Event
from duet_sdk.online import StoredCodes


class Killed(BaseException):
    """Stands for the process dying inside embed: not an Exception, so the worker does no cleanup."""


def recording(embed=fake_embed):
    """``embed`` that also records the user ids of each call."""
    calls = []

    def wrapped(histories):
        calls.append([h.user_id for h in histories])
        return embed(histories)
    return wrapped, calls


def test_trigger_becomes_stored_codes(online):
    online.user("u1", ts=1_000)
    worker = online.worker("w1", clock=lambda: 1_005.0)
    online.queue_for("producer").publish("u1", "click", 1_000)
    assert worker.run_once() == 1
    assert online.store.get("u1") == StoredCodes("u1", fake_codes("u1"), "v1", 1_005.0)
    m = worker.metrics
    assert (m.triggers, m.embedded, m.written, m.failed_batches) == (1, 1, 1, 0)
    assert (m.staleness_s.count, m.staleness_s.mean, m.staleness_s.max) == (1, 5.0, 5.0)
    assert worker.queue.pending() == 0


def test_throttle_coalesces_a_users_triggers_in_the_window_into_one_embed(online):
    online.user("u1")
    online.user("u2")
    embed, calls = recording()
    worker = online.worker("w1", embed=embed, max_batch=4)
    producer = online.queue_for("producer")
    for ts in range(1_000, 1_010):  # 10 triggers of u1: the first batch of 4 holds 4 of them
        producer.publish("u1", "click", ts)
    producer.publish("u2", "click", 1_000)
    for _ in range(4):  # 3 batches hold the 11 triggers
        worker.run_once()
    assert calls == [["u1"], ["u2"]]
    m = worker.metrics
    assert (m.triggers, m.coalesced, m.throttled, m.embedded) == (11, 3, 6, 2)
    assert worker.queue.pending() == 0


def test_worker_dying_in_embed_loses_no_trigger(online):
    for u in ("a", "b", "c"):
        online.user(u)
    producer = online.queue_for("producer")
    for u in ("a", "b", "c", "a"):
        producer.publish(u, "click", 1_000)

    def dies(histories):
        raise Killed
    doomed = online.worker("doomed", embed=dies)
    with pytest.raises(Killed):
        doomed.run_once()  # read, admitted (windows stay open: no cleanup), never acked
    assert online.store.get_many(["a", "b", "c"]) == {}
    time.sleep(0.15)  # past reclaim_idle_s
    rescuer = online.worker("rescuer")
    assert rescuer.run_once() == 3  # reclaimed triggers bypass the windows the dead worker opened
    assert set(online.store.get_many(["a", "b", "c"])) == {"a", "b", "c"}
    m = rescuer.metrics
    assert (m.reclaimed, m.coalesced, m.throttled) == (4, 1, 0)
    assert rescuer.queue.pending() == 0


def test_reader_that_never_acks_is_reclaimed(online):
    online.user("u1")
    producer = online.queue_for("producer")
    producer.publish("u1", "click", 1_000)
    assert len(online.queue_for("hung").read(count=10, block_ms=0)) == 1
    worker = online.worker("w1")
    assert worker.run_once() == 0  # not idle long enough yet
    time.sleep(0.15)
    assert worker.run_once() == 1
    assert online.store.get("u1").codes == fake_codes("u1")


def test_failed_embed_acks_nothing_and_releases_the_throttle(online):
    online.user("u1")
    producer = online.queue_for("producer")
    producer.publish("u1", "click", 1_000)
    failures = [Unavailable("triton down")]

    def flaky(histories):
        if failures:
            raise failures.pop()
        return fake_embed(histories)
    worker = online.worker("w1", embed=flaky, reclaim_idle_s=60.0)
    with pytest.raises(Unavailable, match="triton down"):
        worker.run_once()
    assert worker.queue.pending() == 1 and worker.metrics.failed_batches == 1
    producer.publish("u1", "click", 1_001)  # admitted: the failed batch released u1's window
    assert worker.run_once() == 1
    assert worker.metrics.throttled == 0
    assert worker.queue.pending() == 1  # the failed trigger waits for reclaim (60 s here)


def test_late_write_of_an_older_embedding_does_not_replace_newer_codes(online):
    """A slow worker reads at t=100; meanwhile its trigger is redelivered to another worker that stores
    codes at t=200; the slow worker's write of t=100 is ignored."""
    online.user("u1")
    online.queue_for("producer").publish("u1", "click", 50)
    fast = online.worker("fast", embed=lambda hs: fake_embed(hs, "fast"), clock=lambda: 200.0,
                         reclaim_idle_s=0.0)

    def slow_embed(histories):
        assert fast.run_once() == 1  # reclaims the slow worker's pending trigger, bypassing the throttle
        return fake_embed(histories, "slow")
    slow = online.worker("slow", embed=slow_embed, clock=lambda: 100.0)
    assert slow.run_once() == 0
    assert online.store.get("u1") == StoredCodes("u1", fake_codes("u1"), "fast", 200.0)
    assert (slow.metrics.embedded, slow.metrics.written) == (1, 0)


def test_batches_are_bounded_by_max_batch(online):
    users = [f"u{i:02d}" for i in range(23)]
    for u in users:
        online.user(u)
    embed, calls = recording()
    worker = online.worker("w1", embed=embed, max_batch=5)
    producer = online.queue_for("producer")
    for u in users:
        producer.publish(u, "click", 1_000)
    while worker.run_once():
        pass
    assert max(len(c) for c in calls) == 5
    assert sorted(u for c in calls for u in c) == users
    m = worker.metrics
    assert sum(m.batch_sizes.values()) == len(calls) and max(m.batch_sizes) == 5
    assert len(online.store.get_many(users)) == 23


def test_user_without_profile_is_acked_and_counted(online):
    online.user("known")
    producer = online.queue_for("producer")
    producer.publish("ghost", "click", 1_000)
    producer.publish("known", "click", 1_000)
    worker = online.worker("w1")
    assert worker.run_once() == 1
    assert (worker.metrics.missing_profile, worker.metrics.embedded) == (1, 1)
    assert worker.queue.pending() == 0
    assert online.store.get("ghost") is None


def test_run_loops_until_stopped(online):
    online.user("u1")
    worker = online.worker("w1")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    online.queue_for("producer").publish("u1", "click", 1_000)
    deadline = time.monotonic() + 5
    while online.store.get("u1") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert online.store.get("u1") is not None


def test_a_poison_user_is_isolated_and_its_batch_is_stored(online):
    """One user whose embedding fails (as a NaN or 1e39 profile does in the client's validation) fails
    alone: the others of its batch are stored and acked, its triggers go to the dead-letter stream."""
    users = ["a", "poison", "b", "c"]
    for u in users:
        online.user(u)

    def embed(histories):
        for h in histories:
            if h.user_id == "poison":
                raise InvalidRequest("histories[1].static_dense[0]", "a float finite as float32", float("nan"))
        return fake_embed(histories)
    worker = online.worker("w1", embed=embed)
    producer = online.queue_for("producer")
    for u in users:
        producer.publish(u, "click", 1_000)
    assert worker.run_once() == 3
    assert set(online.store.get_many(users)) == {"a", "b", "c"}
    assert worker.queue.pending() == 0
    [dead] = worker.queue.dead_letters()
    assert dead["user"] == "poison" and "static_dense" in dead["reason"]
    m = worker.metrics
    assert (m.poison_users, m.dead_lettered, m.embedded, m.failed_batches) == (1, 1, 3, 0)


def test_a_trigger_delivered_too_often_goes_to_the_dead_letter_stream(online):
    online.user("u1")
    online.queue_for("producer").publish("u1", "click", 1_000)
    assert len(online.queue_for("crashes").read(count=10, block_ms=0)) == 1  # delivery 1, never acked
    time.sleep(0.15)
    worker = online.worker("w1", max_deliveries=1)
    assert worker.run_once() == 0  # reclaimed as delivery 2 > 1: dead-lettered, not embedded
    [dead] = worker.queue.dead_letters()
    assert dead["user"] == "u1" and dead["deliveries"] == "2" and "delivered more than 1" in dead["reason"]
    assert worker.queue.pending() == 0 and online.store.get("u1") is None
    assert worker.metrics.dead_lettered == 1


def test_a_throttled_user_is_embedded_again_at_the_end_of_the_window(online):
    """Leading edge at t=1000; an event at t=1010 is throttled; the user goes quiet. Once the window
    (60 s) has ended the worker embeds the user again, and staleness counts the throttled trigger."""
    online.user("u1", ts=1_000)
    now = [1_000.0]
    worker = online.worker("w1", clock=lambda: now[0])
    producer = online.queue_for("producer")
    producer.publish("u1", "click", 1_000)
    assert worker.run_once() == 1
    online.history.append("u1", "click", [Event(1_010, (9, 9))])
    producer.publish("u1", "click", 1_010)
    now[0] = 1_010.0
    assert worker.run_once() == 0 and worker.metrics.throttled == 1
    assert worker.queue.pending() == 0  # acked: the deferral holds it
    now[0] = 1_040.0
    assert worker.run_once() == 0  # the window is still open
    now[0] = 1_100.0  # past the window's end (Redis: 1010 + its remaining TTL)
    assert worker.run_once() == 1
    assert online.store.get("u1").produced_at == 1_100.0
    m = worker.metrics
    assert (m.trailing, m.embedded, m.staleness_s.count) == (1, 2, 2)
    assert m.staleness_s.max == 90.0  # 1100 - 1010: the throttled event waited for the window
