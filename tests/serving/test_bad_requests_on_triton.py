"""One bad request beside six good ones on a real tritonserver: the bad one fails alone with
INVALID_ARGUMENT naming the input and the expectation; the good ones, batched with it, answer what they
answer alone. One case per class of bad input, on the component and on the ensemble that carries it."""

import asyncio

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio
from request_samples import random_users
from tritonclient.utils import InferenceServerException

from duet_sdk.client.calls import embed_calls, fresh_calls, score_calls
from duet_sdk.interface import FreshRequest, ScoreRequest, release_model

pytestmark = pytest.mark.slow
GOOD = 6
RANKER = release_model("ranker", 1)  # release 1's ranker (the fixtures publish one release)


def _score_requests(interface, n, seed):
    rng = np.random.default_rng(seed)
    return [
        ScoreRequest(
            h.user_id,
            h.static_sparse,
            h.static_dense,
            {e: [int(c) for c in rng.integers(0, i.codebook_size, i.levels)] for e, i in interface.embeddings.items()},
            c,
        )
        for h, c in random_users(interface, n, seed=seed)
    ]


def _calls(interface, ensemble, n, seed):
    """``n`` one-user calls of ``ensemble`` as (model, inputs, outputs)."""
    users = random_users(interface, n, seed=seed, lengths={"click": [1, 3, 8], "conv": [0, 2, 4]})
    if ensemble == "duet_upstream":
        calls = [embed_calls([h], interface)[0] for h, _ in users]
    elif ensemble == "duet_fresh":
        calls = [fresh_calls([FreshRequest(h, c)], interface)[0] for h, c in users]
    else:
        calls = [score_calls([r], interface)[0] for r in _score_requests(interface, n, seed)]
    return [(c.model, dict(c.inputs), c.outputs) for c in calls]


def _inputs(tensors):
    out = []
    for name, array in tensors.items():
        t = grpcaio.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
        t.set_data_from_numpy(array)
        out.append(t)
    return out


async def _send(url, model, requests, outputs):
    async with grpcaio.InferenceServerClient(url) as c:

        async def one(tensors):
            try:
                result = await c.infer(
                    model, _inputs(tensors), outputs=[grpcaio.InferRequestedOutput(o) for o in outputs]
                )
                return {o: result.as_numpy(o) for o in outputs}
            except InferenceServerException as exc:
                return exc

        return await asyncio.gather(*(one(t) for t in requests))


def _break(interface, tensors, kind):
    """``tensors`` (one user, wire layout) with one bad value of class ``kind``; returns the input named."""
    t = {k: v.copy() for k, v in tensors.items()}
    codebook = next(iter(interface.embeddings.values())).codebook_size
    if kind == "code_k":
        t["click_codes"][0, 0] = codebook
        return t, "click_codes"
    if kind == "code_negative":
        t["conv_codes"][0, -1] = -1
        return t, "conv_codes"
    if kind == "nan_dense":
        t["static_dense"][0, 0] = np.nan
        return t, "static_dense"
    if kind == "inf_item_dense":
        t["item_dense"][0, 0, 0] = np.inf
        return t, "item_dense"
    if kind == "len_negative":
        t["click_len"][0, 0] = -1
        return t, "click_len"
    if kind == "len_above_t":
        t["conv_len"][0, 0] = t["conv_ts"].shape[1] + 1
        return t, "conv_len"
    if kind == "ts_after_request_time":
        t["click_len"][0, 0] = t["click_ts"].shape[1]
        t["click_ts"][0, -1] = t["request_time"][0, 0] + 1
        return t, "click_ts"
    if kind == "request_time_negative":
        t["request_time"][0, 0] = -1
        return t, "request_time"
    if kind == "candidates_mismatch":  # N differs between item_sparse and item_dense: a shape error
        t["item_dense"] = np.concatenate([t["item_dense"], t["item_dense"][:, :1]], axis=1)
        return t, "item_dense"
    raise AssertionError(kind)


CASES = [
    ("ranker", "code_k"),
    ("duet_downstream", "code_k"),
    ("duet_downstream", "code_negative"),
    ("duet_downstream", "nan_dense"),
    ("duet_fresh", "inf_item_dense"),
    ("duet_downstream", "candidates_mismatch"),
    ("duet_upstream", "nan_dense"),
    ("duet_upstream", "len_negative"),
    ("duet_upstream", "len_above_t"),
    ("duet_upstream", "ts_after_request_time"),
    ("duet_upstream", "request_time_negative"),
    ("duet_fresh", "len_above_t"),
]


@pytest.mark.parametrize("model, kind", CASES)
def test_one_bad_request_fails_alone_with_invalid_argument(triton, client, model, kind):
    interface = client.interface
    ensemble = "duet_downstream" if model == "ranker" else model
    calls = _calls(interface, ensemble, GOOD + 1, seed=hash(kind) % 1000)
    target = RANKER if model == "ranker" else calls[0][0]
    outputs = ("scores",) if model == "ranker" else calls[0][2]
    wire = [tensors for _, tensors, _ in calls]  # the ranker takes duet_downstream's inputs as they are
    alone = asyncio.run(_send(triton.endpoints.grpc_url, target, wire[1:], outputs))
    bad, field = _break(interface, wire[0], kind)
    batched = False
    for _ in range(3):  # rounds: the dynamic batcher groups some of the seven concurrent requests
        with triton.client() as c:
            before = c.get_inference_statistics(target).model_stats[-1].execution_count
        answers = asyncio.run(_send(triton.endpoints.grpc_url, target, [bad, *wire[1:]], outputs))
        with triton.client() as c:
            batched |= c.get_inference_statistics(target).model_stats[-1].execution_count - before < GOOD + 1
        error = answers[0]
        assert isinstance(error, InferenceServerException), f"bad {kind} request answered"
        assert error.status() == "StatusCode.INVALID_ARGUMENT", error
        assert f"input {field}" in error.message() and "expected" in error.message(), error.message()
        for got, want in zip(answers[1:], alone):
            assert not isinstance(got, Exception), f"a good request failed beside a bad one: {got}"
            for name in outputs:
                np.testing.assert_allclose(got[name], want[name], atol=1e-5)
    if target == RANKER:
        assert batched, "the bad request was never batched with the good ones"
