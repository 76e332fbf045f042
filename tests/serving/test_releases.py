"""Releases on a real tritonserver and a real redis-server, with two *different* exports (other seeds,
other weights and codebooks): a swap and a rollback under load on all three ensembles and the Scorer
give only responses equal to the PyTorch of the release they report; the Scorer scores stored codes
with their own release; the backfill moves every user onto the new release and stops; a swap to a
corrupt or tampered release leaves the old one serving every model and the repository says so."""

import json
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from release_load import Load, mismatches, run_load, serve
from request_samples import random_users

from duet_sdk.client import DuetClient
from duet_sdk.export.manifest import sha256_file
from duet_sdk.interface import ENSEMBLES, FreshRequest, release_model
from duet_sdk.online import Backfill, RedisHistory, RedisStore, StoredCodes
from duet_sdk.online.replay import store_histories
from duet_sdk.online.scorer import Scorer
from duet_sdk.serving import releases
from duet_sdk.serving.reference import InProcessDuet
from duet_sdk.serving.repository import publish
from duet_sdk.serving.swap import SwapError, swap_release

pytestmark = pytest.mark.slow
NOW = 1_702_000_000  # after every event random_users draws


@pytest.fixture(scope="module")
def deployment(tiny_export, second_export, tmp_path_factory):
    """Release 1 = export A (current), release 2 = export B (published, the target); a server on them."""
    repo = tmp_path_factory.mktemp("releases") / "repo"
    assert publish(tiny_export, repo).version == 1
    assert publish(second_export, repo).version == 2
    index = releases.read_index(repo)
    assert (index["current"], index["loaded"], index["target"]) == (1, [1], 2)
    with serve(repo) as server:
        yield server, repo


@pytest.fixture(scope="module")
def references(deployment, tiny_runs, second_runs):
    server, _ = deployment
    with DuetClient(server.endpoints.grpc_url, timeout_s=30) as client:
        interface = client.connect()
    return {"1": InProcessDuet(tiny_runs, interface), "2": InProcessDuet(second_runs, replace(interface, version="2"))}


def _online(redis_url, interface, n, seed):
    history = RedisHistory(redis_url, {s: info.max_len for s, info in interface.streams.items()})
    users = random_users(interface, n, seed=seed)
    store_histories(history, (h for h, _ in users))
    return history, RedisStore(redis_url), [(replace(h, request_time=NOW), c) for h, c in users]


def test_swap_and_rollback_under_load_serve_only_responses_of_the_release_they_report(
    deployment, references, redis_url
):
    server, repo = deployment
    url = server.endpoints.grpc_url
    with DuetClient(url, timeout_s=30) as client:
        interface = client.connect()
        history, store, users = _online(redis_url, interface, 6, seed=31)
        stored = {i: ("1", e.codes) for i, e in enumerate(client.embed([h for h, _ in users], release=1))}
    store.put_many([StoredCodes(users[i][0].user_id, codes, release, NOW) for i, (release, codes) in stored.items()])
    codes = [stored[i][1] for i in range(len(users))]
    scorer = lambda client: Scorer(client, store, history, write_back=False, clock=lambda: NOW)  # noqa: E731
    stop, load = threading.Event(), Load()
    threads = run_load(url, users, codes, scorer, stop, load)
    try:
        time.sleep(1.0)
        started = time.monotonic()
        forward = swap_release(server, 2)
        during = load.served_between(started, time.monotonic())
        time.sleep(1.0)
        back = swap_release(server, 1)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert (forward.previous, forward.current, back.current) == (1, 2, 1)
    assert load.failures == []
    bad, seen = mismatches(load, users, codes, references, stored)
    assert bad == []  # 0 mixed or wrong responses
    for kind in ("fresh", "upstream", "downstream"):
        assert seen[(kind, "1")] > 0 and seen[(kind, "2")] > 0, (kind, seen)  # both releases really served
    assert seen[("scorer", "1")] > 0 and not seen[("scorer", "2")]  # stored codes of release 1: release 1's ranker
    assert during > 0
    index = releases.read_index(repo)
    assert (index["current"], index["loaded"]) == (1, [1, 2])
    store.close()


def test_scorer_keeps_stored_codes_on_their_release_and_the_backfill_moves_every_user_then_stops(
    deployment, references, redis_url, tmp_path
):
    server, repo = deployment
    swap_release(server, 2)
    with DuetClient(server.endpoints.grpc_url, timeout_s=30) as client:
        interface = client.connect()
        assert interface.version == "2" and client.releases().loaded == (1, 2)
        history, store, users = _online(redis_url, interface, 10, seed=32)
        old = client.embed([h for h, _ in users[:9]], release=1)
        store.put_many([StoredCodes(e.user_id, e.codes, e.model_version, NOW - 10) for e in old])
        store.put(StoredCodes(users[9][0].user_id, old[0].codes, "7", NOW - 10))  # a release no longer loaded
        scorer = Scorer(client, store, history, clock=lambda: NOW)
        results = scorer.score([(h.user_id, c) for h, c in users])
        for (h, c), e, r in zip(users, old, results):  # release 1's ranker for release 1's codes
            assert (r.path, r.model_version) == ("stored", "1")
            np.testing.assert_allclose(
                r.scores, references["1"].score(h.static_sparse, h.static_dense, e.codes, c), atol=1e-5
            )
        assert (results[9].path, results[9].model_version) == ("fresh", "2")
        assert store.get(users[9][0].user_id).model_version == "2"  # rewritten by the fresh path

        resume = tmp_path / "backfill.json"
        first = Backfill(client, store, history, target=2, rate_users_s=50, batch=4, resume=resume, clock=lambda: NOW)
        stop = threading.Event()
        partial = first.run(stop, on_progress=lambda p: p.reembedded and stop.set())  # stops after a batch
        assert partial.cursor is not None and 0 < partial.reembedded < 9 and resume.exists()
        done = Backfill(
            client, store, history, target=2, rate_users_s=50, batch=4, resume=resume, clock=lambda: NOW
        ).run()
        assert done.remaining_old == 0 and done.reembedded == 9 and done.passes == 1
        assert done.rate_users_s <= 50 * 1.2
        assert store.version_counts() == {"2": 10}
        again = scorer.score([(h.user_id, c) for h, c in users])
        for (h, c), r in zip(users, again):
            want_scores, want_codes = references["2"].score_fresh(h, c)
            assert store.get(h.user_id).codes == {n: tuple(v.tolist()) for n, v in want_codes.items()}
            assert (r.path, r.model_version) == ("stored", "2")
            np.testing.assert_allclose(r.scores, want_scores, atol=1e-5)
    store.close()


def _tamper(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40  # one flipped bit, same size
    path.write_bytes(bytes(data))


def _garbage_with_matching_digest(path):
    path.write_bytes(b"not an onnx graph")
    signature = path.parent / "signature.json"
    recorded = json.loads(signature.read_text())
    recorded["sha256"][path.name] = sha256_file(path)
    signature.write_text(json.dumps(recorded))


@pytest.mark.parametrize("damage", [_tamper, _garbage_with_matching_digest], ids=["tampered", "corrupt"])
def test_a_swap_to_a_damaged_release_leaves_the_current_one_serving_every_model_and_says_so(
    deployment, second_export, damage
):
    server, repo = deployment
    before = releases.read_index(repo)
    version = publish(second_export, repo).version
    damage(repo / release_model("ranker", version) / str(version) / "model.onnx")
    with pytest.raises(SwapError, match=f"release {before['current']} is still current for every model") as info:
        swap_release(server, version)
    assert info.value.current == before["current"]
    index = releases.read_index(repo)
    assert (index["current"], index["loaded"], index["target"]) == (
        before["current"],
        before["loaded"],
        before["current"],
    )
    entry = releases.release(index, version)
    assert entry["status"] == "failed" and "ranker" in entry["error"]
    assert not any(release_model(m, version) in name for m in ENSEMBLES for name in releases.startup_models(index))
    with server.client() as c:
        for ensemble in ENSEMBLES:
            assert c.is_model_ready(ensemble, str(before["current"])), ensemble
            assert not c.is_model_ready(release_model(ensemble, version), str(version))
        for model in ("click_encoder", "conv_encoder", "ranker"):
            assert not c.is_model_ready(release_model(model, version), str(version)), model
    with DuetClient(server.endpoints.grpc_url, timeout_s=30) as client:
        users = random_users(client.connect(), 2, seed=33)
        results = client.score_fresh([FreshRequest(h, c) for h, c in users])
        assert {r.scores.model_version for r in results} == {str(before["current"])}
