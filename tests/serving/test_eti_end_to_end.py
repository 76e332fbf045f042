"""Event-triggered inference against a real tritonserver and a real redis-server: triggers become stored
codes that score like in-process PyTorch, throttling coalesces, a killed worker loses no trigger, a store
miss takes the fresh path, and invalid requests fail before reaching the server."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from request_samples import random_users

from duet_sdk.client import InvalidRequest
from duet_sdk.interface import Event
from duet_sdk.online import EtiConfig, EtiWorker, RedisHistory, RedisStore, RedisStreamQueue, RedisThrottle, StoredCodes
from duet_sdk.online.replay import store_histories
from duet_sdk.online.scorer import Scorer

NOW = 1_702_000_000  # after every event random_users draws
PROBABILITY_ATOL = 1e-5
HERE = Path(__file__).parent


def _online(redis_url, client, n, seed):
    """Users with profiles and histories in Redis; returns (history store, [(history at NOW, candidates)])."""
    interface = client.interface
    history = RedisHistory(redis_url, {s: info.max_len for s, info in interface.streams.items()})
    users = random_users(interface, n, seed=seed)
    store_histories(history, (h for h, _ in users))
    return history, [(replace(h, request_time=NOW), c) for h, c in users]


def _worker(redis_url, client, history, consumer="w1", **config):
    return EtiWorker(RedisStreamQueue(redis_url, consumer=consumer), RedisThrottle(redis_url, window_s=60.0), history,
                     RedisStore(redis_url), client.embed, EtiConfig(**({"max_batch": 16, "max_wait_s": 0.05} | config)),
                     clock=lambda: NOW)


def test_triggers_become_stored_codes_that_score_like_pytorch(redis_url, client, reference):
    history, users = _online(redis_url, client, 6, seed=11)
    queue = RedisStreamQueue(redis_url, consumer="producer")
    for h, _ in users:
        for _ in range(3):  # three qualifying events each: the throttle window coalesces them
            queue.publish(h.user_id, "conv", NOW - 1)
    worker = _worker(redis_url, client, history)
    while worker.run_once():
        pass
    assert worker.metrics.triggers == 18 and worker.metrics.embedded == 6
    assert worker.metrics.throttled + worker.metrics.coalesced == 12
    assert queue.pending() == 0

    store = RedisStore(redis_url)
    stored = store.get_many([h.user_id for h, _ in users])
    for h, _ in users:
        want = reference.embed(h)
        assert stored[h.user_id].codes == {n: tuple(want[f"{n}_codes"].tolist()) for n in client.interface.embeddings}
        assert stored[h.user_id].model_version == client.interface.version and stored[h.user_id].produced_at == NOW

    scorer = Scorer(client, store, history, clock=lambda: NOW)
    results = scorer.score([(h.user_id, c) for h, c in users])
    assert {r.path for r in results} == {"stored"}
    for (h, candidates), got in zip(users, results):
        want, _ = reference.score_fresh(h, candidates)
        np.testing.assert_allclose(np.array(got.scores), want, atol=PROBABILITY_ATOL)


def test_a_store_miss_takes_the_fresh_path_and_writes_the_codes_back(redis_url, client, reference):
    history, users = _online(redis_url, client, 4, seed=12)
    store = RedisStore(redis_url)
    stale = users[1][0].user_id
    store.put(StoredCodes(stale, {n: (0,) * e.levels for n, e in client.interface.embeddings.items()}, "0", NOW - 100))
    scorer = Scorer(client, store, history, clock=lambda: NOW)
    requests = [(h.user_id, c) for h, c in users] + [("nobody", users[0][1])]
    results = scorer.score(requests)
    assert [r.path for r in results] == ["fresh"] * 4 + ["default"]
    assert (
        scorer.metrics.missing_codes == 3 and scorer.metrics.stale_version == 1 and scorer.metrics.missing_profile == 1
    )
    for (h, candidates), got in zip(users, results):
        want_scores, want_codes = reference.score_fresh(h, candidates)
        np.testing.assert_allclose(np.array(got.scores), want_scores, atol=PROBABILITY_ATOL)
        assert store.get(h.user_id).codes == {n: tuple(c.tolist()) for n, c in want_codes.items()}
    assert [r.path for r in scorer.score([(h.user_id, c) for h, c in users])] == ["stored"] * 4
    assert (
        Scorer(client, RedisStore(redis_url), history, fallback="default").score([("nobody-else", users[0][1])])[0].path
        == "default"
    )


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_no_trigger_after_restart(redis_url, client, reference, triton, tmp_path):
    history, users = _online(redis_url, client, 5, seed=13)
    queue = RedisStreamQueue(redis_url, consumer="producer")
    for h, _ in users:
        queue.publish(h.user_id, "click", NOW - 1)
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    doomed = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "eti_triton_proc.py"),
            redis_url,
            triton.endpoints.grpc_url,
            str(tmp_path),
            str(NOW),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "embedded").exists():
        assert doomed.poll() is None, doomed.stderr.read()
        assert time.monotonic() < deadline, "the worker never embedded"
        time.sleep(0.05)
    doomed.send_signal(signal.SIGKILL)  # Triton answered; the worker dies before writing and acking
    doomed.wait(10)
    assert queue.pending() == 5 and RedisStore(redis_url).get_many([h.user_id for h, _ in users]) == {}

    restarted = _worker(redis_url, client, history, consumer="restarted", reclaim_idle_s=0.1)
    time.sleep(0.2)
    assert restarted.run_once() == 5 and restarted.metrics.reclaimed == 5
    assert queue.pending() == 0
    stored = RedisStore(redis_url).get_many([h.user_id for h, _ in users])
    for h, _ in users:
        want = reference.embed(h)
        assert stored[h.user_id].codes == {n: tuple(want[f"{n}_codes"].tolist()) for n in client.interface.embeddings}


def test_invalid_requests_raise_typed_errors_before_reaching_the_server(client, triton):
    [(history, _)] = random_users(client.interface, 1, seed=14)
    bad = [
        (replace(history, static_dense=list(history.static_dense) + [0.0]), "static_dense"),
        (replace(history, streams={"clicks": []}), "streams"),
        (replace(history, streams={"click": [Event(NOW + 10**6, (1,) * 7)]}), "click"),
        (replace(history, streams={"click": [Event(1, (1, 2))]}), "ids"),
    ]
    with triton.client() as c:
        before = c.get_inference_statistics("duet_upstream").model_stats[0].inference_count
        for request, field in bad:
            with pytest.raises(InvalidRequest, match=field) as info:
                client.embed([request])
            assert field in info.value.field
        assert c.get_inference_statistics("duet_upstream").model_stats[0].inference_count == before


def test_poison_profiles_are_dead_lettered_and_the_rest_embedded(redis_url, client, reference):
    """Profiles holding NaN and 1e39 (written by another writer, past set_profile's checks) beside good
    users: the good ones get their real codes, the poison ones are isolated, dead-lettered with the
    client's reason, and never stored (1e39 used to become codes [0, 0, 0, 0])."""
    import redis

    history, users = _online(redis_url, client, 5, seed=13)
    raw = redis.Redis.from_url(redis_url)
    poison = {users[1][0].user_id: "NaN", users[3][0].user_id: "1e39"}
    for user, value in poison.items():
        dense = [value] + ["0.5"] * (client.interface.static_dense - 1)
        raw.hset(f"duet:hist:profile:{user}", "static_dense", "[" + ",".join(dense) + "]")
    queue = RedisStreamQueue(redis_url, consumer="producer")
    for h, _ in users:
        queue.publish(h.user_id, "conv", NOW - 1)
    worker = _worker(redis_url, client, history)
    assert worker.run_once() == 3
    stored = RedisStore(redis_url).get_many([h.user_id for h, _ in users])
    assert set(stored) == {h.user_id for h, _ in users} - set(poison)
    for h, _ in users:
        if h.user_id in stored:
            want = reference.embed(h)
            assert stored[h.user_id].codes == {
                n: tuple(want[f"{n}_codes"].tolist()) for n in client.interface.embeddings
            }
    dead = {d["user"]: d["reason"] for d in worker.queue.dead_letters()}
    assert set(dead) == set(poison) and all("static_dense" in r for r in dead.values())
    assert worker.metrics.poison_users == 2 and queue.pending() == 0
