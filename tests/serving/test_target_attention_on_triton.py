"""A ranker with DARE target attention served by a real tritonserver: its history inputs (ragged on L) are
declared by the ranker, the guards and every ensemble that reaches it, on the cpu and the gpu target;
served ``duet_downstream`` and ``duet_fresh`` with a history answer what in-process PyTorch computes; an
empty history is valid, a history longer than L keeps its most recent L events (client and server), and
a bad history fails alone with INVALID_ARGUMENT naming the input.

The deployment is the session's tiny one (same encoders and codecs) with a DARE ranker exported into a
copy of its export (only the ranker is exported again, to keep the module quick)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio
from release_load import serve
from request_samples import random_users
from serving_fixtures import export_runs, save_ranker
from tritonclient.utils import InferenceServerException

from duet_sdk.checkpoint import load_checkpoint
from duet_sdk.client import DuetClient, InvalidRequest
from duet_sdk.client.calls import fresh_calls, score_calls
from duet_sdk.errors import ConfigError
from duet_sdk.interface import DOWNSTREAM, FRESH, FreshRequest, ScoreRequest, release_model
from duet_sdk.models.config import TargetAttentionConfig
from duet_sdk.models.loading import load_ranker
from duet_sdk.online.history import InMemoryHistory
from duet_sdk.online.scorer import Scorer
from duet_sdk.online.store import SqliteStore
from duet_sdk.online.types import StoredCodes
from duet_sdk.serving.config import read_config
from duet_sdk.serving.reference import InProcessDuet
from duet_sdk.serving.repository import publish

pytestmark = pytest.mark.slow
TA = TargetAttentionConfig(
    variant="dare",
    stream="click",
    fields=("item_id", "author_id"),
    max_len=24,
    top_k=4,
    d_repr=8,
    d_att=4,
    table_size=128,
)
L = TA.max_len
# fp32 ONNX Runtime vs eager PyTorch (the export manifest's tolerance for probabilities; ~1e-7 observed).
PROBABILITY_ATOL = 1e-5
HISTORY_INPUTS = ("history_ids", "history_len")


@pytest.fixture(scope="module")
def ta_runs(tiny_runs, tmp_path_factory) -> Path:
    """The tiny runs plus an accepted DUET ranker with DARE target attention over the same encoders."""
    runs = Path(shutil.copytree(tiny_runs, tmp_path_factory.mktemp("runs-dare") / "runs"))
    duet = load_checkpoint(next((tiny_runs / "ranker").iterdir()))
    ranker = load_ranker(duet)
    codebooks = {name: decoder.codebooks for name, decoder in ranker.decoders.items()}
    save_ranker(runs, ranker.config.embeddings, codebooks, duet.lineage, seed=0, target_attention=TA)
    return runs


@pytest.fixture(scope="module")
def ta_export(tiny_export, ta_runs, tmp_path_factory) -> Path:
    out = Path(shutil.copytree(tiny_export, tmp_path_factory.mktemp("export-dare") / "export"))
    return export_runs(ta_runs, out, ("onnx",), encoders=(), ranker="duet-dare")


@pytest.fixture(scope="module")
def ta_repository(ta_export, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("repo-dare")
    publish(ta_export, repo, "cpu", formats=("onnx",))
    return repo


@pytest.fixture(scope="module")
def ta_triton(ta_repository):
    with serve(ta_repository) as server:
        yield server


@pytest.fixture(scope="module")
def ta_client(ta_triton):
    with DuetClient(ta_triton.endpoints.grpc_url, timeout_s=30) as c:
        c.connect()
        yield c


@pytest.fixture(scope="module")
def ta_reference(ta_runs, ta_client):
    return InProcessDuet(ta_runs, ta_client.interface, ranker="duet-dare")


def _recent(rng, n: int) -> list[tuple[int, int]]:
    """``n`` rows of (item, author) IDs anywhere in int64, oldest first."""
    return [tuple(int(x) for x in row) for row in rng.integers(-(2**63), 2**63 - 1, (n, 2), endpoint=True)]


def _score_requests(interface, n: int, seed: int, lengths=(0, 1, 5, L, L + 9, 17)) -> list[ScoreRequest]:
    rng = np.random.default_rng(seed)
    return [
        ScoreRequest(
            h.user_id,
            h.static_sparse,
            h.static_dense,
            {e: [int(c) for c in rng.integers(0, i.codebook_size, i.levels)] for e, i in interface.embeddings.items()},
            c,
            _recent(rng, lengths[k % len(lengths)]),
        )
        for k, (h, c) in enumerate(random_users(interface, n, seed=seed))
    ]


def _config(repo: Path, name: str):
    return read_config(repo / name / "config.pbtxt")


def _inputs(config) -> dict:
    return {i.name: i for i in config.input}


def test_ranker_guard_and_ensembles_declare_the_history_and_the_interface_says_where_it_comes_from(
    ta_repository, ta_client
):
    repo, v1 = ta_repository, lambda m: release_model(m, 1)
    ranker = _inputs(_config(repo, v1("ranker")))
    assert list(ranker["history_ids"].dims) == [-1, 2] and ranker["history_ids"].allow_ragged_batch
    assert list(ranker["history_len"].dims) == [1] and ranker["history_len"].HasField("reshape")
    for name in (v1(DOWNSTREAM), v1(FRESH), DOWNSTREAM, FRESH, v1("duet_fresh_guard")):
        inputs = _inputs(_config(repo, name))
        assert list(inputs["history_ids"].dims) == [-1, 2] and list(inputs["history_len"].dims) == [1], name
    for name in (v1(DOWNSTREAM), v1(FRESH)):
        step = next(s for s in _config(repo, name).ensemble_scheduling.step if s.model_name == v1("ranker"))
        assert {k: step.input_map[k] for k in HISTORY_INPUTS} == {k: k for k in HISTORY_INPUTS}, name
    assert "history_ids" not in _inputs(_config(repo, v1("duet_upstream")))
    for model in ("ranker", "duet_fresh_guard"):
        signature = json.loads((repo / v1(model) / "1" / "signature.json").read_text())
        assert signature["trim"] == {"history_len": "history_len"} and signature["dims"]["history_len"]["max"] == L
    history = ta_client.interface.history
    assert (history.stream, history.fields, history.columns, history.max_len) == (
        "click",
        ("item_id", "author_id"),
        (0, 1),
        L,
    )


def test_gpu_target_configs_declare_the_history_on_the_ranker_and_its_ensembles(gpu_export, ta_export, tmp_path):
    """A gpu export (prep + engine encoders) with the DARE ranker's ONNX artifact in place of its ranker."""
    export = Path(shutil.copytree(gpu_export, tmp_path / "export-gpu"))
    shutil.rmtree(export / "artifacts/ranker")
    shutil.copytree(ta_export / "artifacts/ranker/onnx", export / "artifacts/ranker/onnx")
    dare = json.loads((ta_export / "manifest.json").read_text())
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["model"] != "ranker"] + [
        a for a in dare["artifacts"] if a["model"] == "ranker" and a["format"] == "onnx"
    ]
    manifest["extraction"]["ranker"] = dare["extraction"]["ranker"]
    (export / "manifest.json").write_text(json.dumps(manifest))
    published = publish(export, tmp_path / "repo", "gpu")
    assert published.interface.history.max_len == L
    v1 = lambda m: release_model(m, 1)  # noqa: E731
    ranker = _config(tmp_path / "repo", v1("ranker"))
    assert ranker.platform == "onnxruntime_onnx" and list(_inputs(ranker)["history_ids"].dims) == [-1, 2]
    for name in (v1(DOWNSTREAM), v1(FRESH), v1("duet_fresh_guard")):
        inputs = _inputs(_config(tmp_path / "repo", name))
        assert inputs["history_ids"].data_type == ranker.input[0].data_type and list(inputs["history_len"].dims) == [
            1
        ], name


def test_served_downstream_with_a_history_matches_pytorch_and_the_history_matters(ta_client, ta_reference):
    requests = _score_requests(ta_client.interface, 12, seed=1)  # lengths 0, 1, 5, L, L + 9 (client trims), 17
    got = ta_client.score(requests)
    for request, result in zip(requests, got):
        want = ta_reference.score(
            request.static_sparse, request.static_dense, request.codes, request.candidates, request.recent_history[-L:]
        )
        assert np.isfinite(result.scores).all()
        np.testing.assert_allclose(np.array(result.scores), want, atol=PROBABILITY_ATOL, err_msg=request.user_id)
    without = ta_client.score([dataclasses.replace(r, recent_history=()) for r in requests])
    moved = [np.abs(np.array(a.scores) - np.array(b.scores)).max() for a, b in zip(got, without)]
    assert max(moved) > 1e-3, "the served scores ignore the history"


def test_served_fresh_with_a_history_matches_pytorch(ta_client, ta_reference):
    rng = np.random.default_rng(7)
    users = random_users(ta_client.interface, 10, seed=2, lengths={"click": [0, 3, 8, L, L + 5], "conv": [0, 2, 4]})
    requests = [
        FreshRequest(h, c, None if k % 2 else _recent(rng, (0, 7, L + 3)[k % 3])) for k, (h, c) in enumerate(users)
    ]
    for request, got in zip(requests, ta_client.score_fresh(requests)):
        want_scores, want_codes = ta_reference.score_fresh(request.history, request.candidates, request.recent_history)
        assert got.codes == {n: tuple(c.tolist()) for n, c in want_codes.items()}
        np.testing.assert_allclose(np.array(got.scores.scores), want_scores, atol=PROBABILITY_ATOL)


async def _send(url: str, model: str, requests: list[dict]) -> list:
    """Each request (wire tensors) sent concurrently to ``model``; its outputs by name, or the exception.
    Every output of the ensemble is asked for (Triton's 2.51 ensembles deadlock on a subset)."""
    outputs = ("scores", "click_codes", "conv_codes") if model == FRESH else ("scores",)
    async with grpcaio.InferenceServerClient(url) as c:

        async def one(tensors):
            inputs = []
            for name, array in tensors.items():
                datatype = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32", np.dtype(np.int32): "INT32"}[
                    array.dtype
                ]
                tensor = grpcaio.InferInput(name, list(array.shape), datatype)
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            try:
                result = await c.infer(model, inputs, outputs=[grpcaio.InferRequestedOutput(o) for o in outputs])
                return {o: result.as_numpy(o) for o in outputs}
            except InferenceServerException as exc:
                return exc

        return await asyncio.gather(*(one(t) for t in requests))


def _wire(call) -> dict:
    return {k: v.copy() for k, v in call.inputs.items()}


@pytest.mark.parametrize("ensemble", [DOWNSTREAM, FRESH])
def test_the_server_trims_a_history_longer_than_L_to_its_most_recent_events(ta_triton, ta_client, ensemble):
    interface = ta_client.interface
    rng = np.random.default_rng(3)
    [request] = _score_requests(interface, 1, seed=3, lengths=(L,))
    trimmed = _wire(
        (score_calls if ensemble == DOWNSTREAM else fresh_calls)(
            [
                request
                if ensemble == DOWNSTREAM
                else FreshRequest(random_users(interface, 1, seed=3)[0][0], request.candidates, request.recent_history)
            ],
            interface,
        )[0]
    )
    assert trimmed["history_ids"].shape == (1, L, 2)
    older = rng.integers(-(2**63), 2**63 - 1, (1, 40, 2), endpoint=True)
    long = dict(
        trimmed,
        history_ids=np.concatenate([older, trimmed["history_ids"]], axis=1),
        history_len=np.array([[L + 40]], np.int64),
    )  # T = L + 40 real events: the oldest 40 are dropped
    padded = dict(long, history_len=np.array([[L]], np.int64))  # T = L + 40, the last L real
    got = asyncio.run(_send(ta_triton.endpoints.grpc_url, ensemble, [trimmed, long, padded]))
    for answer in got:
        assert not isinstance(answer, Exception), answer
    np.testing.assert_allclose(got[1]["scores"], got[0]["scores"], atol=PROBABILITY_ATOL)
    np.testing.assert_allclose(got[2]["scores"], got[0]["scores"], atol=PROBABILITY_ATOL)


def test_an_empty_history_is_valid_finite_and_equal_however_it_is_padded(ta_triton, ta_client, ta_reference):
    [request] = _score_requests(ta_client.interface, 1, seed=4, lengths=(0,))
    want = ta_reference.score(request.static_sparse, request.static_dense, request.codes, request.candidates, ())
    [got] = ta_client.score([request])
    np.testing.assert_allclose(np.array(got.scores), want, atol=PROBABILITY_ATOL)
    wire = _wire(score_calls([request], ta_client.interface)[0])
    assert wire["history_ids"].shape == (1, 1, 2) and wire["history_len"][0, 0] == 0
    garbage = dict(wire, history_ids=np.full((1, 5, 2), 2**63 - 1, np.int64))  # 5 padding slots of any value
    none = dict(wire, history_ids=np.zeros((1, 0, 2), np.int64))  # T = 0: no slot at all
    answers = asyncio.run(_send(ta_triton.endpoints.grpc_url, DOWNSTREAM, [wire, garbage, none]))
    for answer in answers:
        assert not isinstance(answer, Exception), answer
        assert np.isfinite(answer["scores"]).all()
        np.testing.assert_allclose(answer["scores"][0, : len(request.candidates)], want, atol=PROBABILITY_ATOL)


def _break(tensors: dict, kind: str) -> tuple[dict, str]:
    t = {k: v.copy() for k, v in tensors.items()}
    if kind == "len_negative":
        t["history_len"][0, 0] = -1
    elif kind == "len_above_t":
        t["history_len"][0, 0] = t["history_ids"].shape[1] + 1
    elif kind == "float_ids":
        t["history_ids"] = t["history_ids"].astype(np.float32)
    elif kind == "wrong_fields":
        t["history_ids"] = np.zeros((1, 4, 3), np.int64)
    elif kind == "missing":
        del t["history_len"]
        return t, "history_len"
    else:
        raise AssertionError(kind)
    return t, "history_len" if kind.startswith("len") else "history_ids"


@pytest.mark.parametrize(
    "ensemble, kind",
    [
        (DOWNSTREAM, "len_negative"),
        (DOWNSTREAM, "len_above_t"),
        (FRESH, "len_above_t"),
        (DOWNSTREAM, "float_ids"),
        (FRESH, "wrong_fields"),
        (DOWNSTREAM, "missing"),
    ],
)
def test_one_bad_history_fails_alone_with_invalid_argument_naming_it(ta_triton, ta_client, ensemble, kind):
    interface = ta_client.interface
    requests = _score_requests(interface, 6, seed=5, lengths=(0, 3, L, 11))
    if ensemble == DOWNSTREAM:
        wire = [_wire(score_calls([r], interface)[0]) for r in requests]
    else:
        users = random_users(interface, 6, seed=5)
        wire = [
            _wire(fresh_calls([FreshRequest(h, r.candidates, r.recent_history)], interface)[0])
            for (h, _), r in zip(users, requests)
        ]
    url = ta_triton.endpoints.grpc_url
    alone = asyncio.run(_send(url, ensemble, wire[1:]))
    bad, field = _break(wire[0], kind)
    answers = asyncio.run(_send(url, ensemble, [bad, *wire[1:]]))
    error = answers[0]
    assert isinstance(error, InferenceServerException), f"a bad history ({kind}) was answered"
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and field in error.message(), error
    for got, want in zip(answers[1:], alone):
        assert not isinstance(got, Exception), f"a good request failed beside a bad one: {got}"
        np.testing.assert_allclose(got["scores"], want["scores"], atol=PROBABILITY_ATOL)


def test_the_client_refuses_a_stored_path_request_without_a_history_naming_the_field(ta_client):
    [request] = _score_requests(ta_client.interface, 1, seed=6)
    bare = ScoreRequest(request.user_id, request.static_sparse, request.static_dense, request.codes, request.candidates)
    with pytest.raises(InvalidRequest, match=r"requests\[0\]\.recent_history"):
        ta_client.score([bare])
    with pytest.raises(InvalidRequest, match=r"requests\[0\]\.recent_history\[1\]"):
        ta_client.score([dataclasses.replace(request, recent_history=[(1, 2), (3, 4, 5)])])


def test_the_scorer_sends_the_history_store_s_recent_history_on_both_paths(ta_client, ta_reference, tmp_path):
    interface = ta_client.interface
    now = 1_800_000_000
    users = random_users(interface, 4, seed=8, lengths={"click": [0, 3, L + 6, 12], "conv": [1, 4]})
    history = InMemoryHistory({"click": 64, "conv": 4})
    for h, _ in users:
        history.set_profile(h.user_id, h.static_sparse, h.static_dense)
        for stream, events in h.streams.items():
            history.append(h.user_id, stream, events)
    store = SqliteStore(tmp_path / "codes.db")
    rng = np.random.default_rng(8)
    stored = {
        h.user_id: {
            e: tuple(int(c) for c in rng.integers(0, i.codebook_size, i.levels))
            for e, i in interface.embeddings.items()
        }
        for h, _ in users[:2]
    }
    store.put_many([StoredCodes(u, codes, interface.version, now - 5) for u, codes in stored.items()])
    results = Scorer(ta_client, store, history, clock=lambda: now, write_back=False).score(
        [(h.user_id, c) for h, c in users]
    )
    assert [r.path for r in results] == ["stored", "stored", "fresh", "fresh"]
    for (h, candidates), got in zip(users, results):
        events = history.histories([h.user_id], now)[0]
        recent = interface.history.rows(events.streams["click"])
        if got.path == "stored":
            want = ta_reference.score(h.static_sparse, h.static_dense, stored[h.user_id], candidates, recent)
        else:
            want, _ = ta_reference.score_fresh(events, candidates, recent)
        np.testing.assert_allclose(np.array(got.scores), want, atol=PROBABILITY_ATOL, err_msg=h.user_id)
    no_clicks = InMemoryHistory({"conv": 4})  # a store that keeps no events of the ranker's history stream
    no_clicks.set_profile(users[0][0].user_id, users[0][0].static_sparse, users[0][0].static_dense)
    with pytest.raises(ConfigError, match="history.max_len"):
        Scorer(ta_client, store, no_clicks, clock=lambda: now).score([(users[0][0].user_id, users[0][1])])
