"""A real tritonserver on the published cpu repository: every model and ensemble is ready, and the three
ensembles answer what in-process PyTorch computes, for batches of mixed history lengths."""

import asyncio
import contextlib
import dataclasses

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio
from request_samples import random_users

from duet_sdk.client import AsyncDuetClient
from duet_sdk.client.calls import embed_calls
from duet_sdk.interface import ENSEMBLES, FreshRequest, ScoreRequest, release_model
from duet_sdk.serving.config import read_config
from duet_sdk.tune.settings import apply_settings, read_settings

# fp32 ONNX Runtime vs eager: ~1e-7 observed; stated as in the export manifest.
EMBEDDING_ATOL, PROBABILITY_ATOL = 1e-4, 1e-5
MODELS = tuple(release_model(m, 1) for m in ("click_encoder", "conv_encoder", "ranker", *ENSEMBLES)) + ENSEMBLES
CLICK_ENCODER = release_model("click_encoder", 1)


def test_every_model_and_ensemble_of_release_1_and_the_aliases_are_ready_at_version_1(triton):
    with triton.client() as c:
        assert c.is_server_ready()
        for model in MODELS:
            assert c.is_model_ready(model, "1"), model


def test_upstream_matches_pytorch_for_mixed_history_lengths(client, reference):
    users = random_users(client.interface, 13, seed=1)  # stream lengths 0, 1, max, > max and random
    embeddings = client.embed([h for h, _ in users])
    for (history, _), got in zip(users, embeddings):
        want = reference.embed(history)
        for name in client.interface.embeddings:
            np.testing.assert_allclose(got.vectors[name], want[f"{name}_embedding"], atol=EMBEDDING_ATOL)
            assert got.codes[name] == tuple(want[f"{name}_codes"].tolist()), history.user_id


def test_downstream_scores_stored_codes_like_pytorch(client, reference):
    users = random_users(client.interface, 9, seed=2)
    rng = np.random.default_rng(0)
    requests = [
        ScoreRequest(
            h.user_id,
            h.static_sparse,
            h.static_dense,
            {
                n: [int(c) for c in rng.integers(0, e.codebook_size, e.levels)]
                for n, e in client.interface.embeddings.items()
            },
            candidates,
        )
        for h, candidates in users
    ]
    for request, got in zip(requests, client.score(requests)):
        want = reference.score(request.static_sparse, request.static_dense, request.codes, request.candidates)
        assert got.path == "stored" and len(got.scores) == len(request.candidates)
        np.testing.assert_allclose(np.array(got.scores), want, atol=PROBABILITY_ATOL)


def test_fresh_chains_upstream_into_downstream_like_pytorch(client, reference):
    users = random_users(client.interface, 20, seed=3)  # 20 > max_batch 16: two requests
    results = client.score_fresh([FreshRequest(h, c) for h, c in users])
    for (history, candidates), got in zip(users, results):
        want_scores, want_codes = reference.score_fresh(history, candidates)
        assert got.codes == {n: tuple(c.tolist()) for n, c in want_codes.items()}
        np.testing.assert_allclose(np.array(got.scores.scores), want_scores, atol=PROBABILITY_ATOL)


@contextlib.contextmanager
def queue_delay(triton, model: str, delay_us: int):
    """``model`` reloaded with its dynamic batcher waiting ``delay_us`` for a batch, then the published config.

    The release default (no delay) groups only requests that arrive while the instance is busy, which on
    a fast machine may be none of them."""
    from google.protobuf import json_format

    config = read_config(triton.repository / model / "config.pbtxt")
    held = apply_settings(config, dataclasses.replace(read_settings(config), max_queue_delay_us=delay_us))
    with triton.client() as c:
        c.load_model(model, config=json_format.MessageToJson(held, preserving_proto_field_name=True))
    try:
        yield
    finally:
        with triton.client() as c:
            c.load_model(model)
            for ensemble in MODELS:
                if not c.is_model_ready(ensemble, "1"):
                    c.load_model(ensemble)


def test_concurrent_requests_of_different_lengths_are_batched_together(triton, client, reference):
    """Each request carries one user with its own padded length; Triton's dynamic batcher still groups
    them (ragged inputs; the runner pads each group) and every answer matches its user alone."""
    interface = client.interface
    users = random_users(interface, 16, seed=4, lengths={"click": [1, 2, 4, 8], "conv": [0, 1, 3, 4]})
    calls = [embed_calls([h], interface)[0] for h, _ in users]

    async def send_all():
        async with grpcaio.InferenceServerClient(triton.endpoints.grpc_url) as c:

            async def one(call):
                inputs = []
                for name, array in call.inputs.items():
                    tensor = grpcaio.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
                    tensor.set_data_from_numpy(array)
                    inputs.append(tensor)
                result = await c.infer(CLICK_ENCODER, inputs)
                return result.as_numpy("click_embedding")

            before = await c.get_inference_statistics(CLICK_ENCODER)
            outs = await asyncio.gather(*(one(call) for call in calls))
            after = await c.get_inference_statistics(CLICK_ENCODER)
            return outs, before, after

    with queue_delay(triton, CLICK_ENCODER, 100_000):
        outs, before, after = asyncio.run(send_all())
    shapes = {call.inputs["click_ids"].shape[1] for call in calls}
    assert len(shapes) == 4  # the requests really differ in length

    def stats(s):
        return s.model_stats[0].inference_count, s.model_stats[0].execution_count

    (inf0, exe0), (inf1, exe1) = stats(before), stats(after)
    assert inf1 - inf0 == len(users)
    assert exe1 - exe0 < len(users), "no two requests were batched together"
    for (history, _), got in zip(users, outs):
        np.testing.assert_allclose(got[0], reference.embed(history)["click_embedding"], atol=EMBEDDING_ATOL)


def test_bad_tensor_is_refused_by_the_runner_with_a_message(triton, client):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    too_long = client.interface.streams["click"].max_len + 1
    call = embed_calls([random_users(client.interface, 1, seed=5)[0][0]], client.interface)[0]
    inputs = dict(call.inputs)
    inputs["click_ids"] = np.zeros((1, too_long, client.interface.streams["click"].event_fields), np.int64)
    inputs["click_ts"] = np.zeros((1, too_long), np.int64)
    tensors = []
    for name, array in inputs.items():
        t = grpcclient.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
        t.set_data_from_numpy(array)
        tensors.append(t)
    with triton.client() as c, pytest.raises(InferenceServerException, match="expected dim click_len in") as info:
        c.infer(CLICK_ENCODER, tensors)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_async_client_answers_like_the_sync_client(triton, client):

    users = random_users(client.interface, 20, seed=6)  # 20 > max_batch: concurrent requests

    async def run():
        async with AsyncDuetClient(triton.endpoints.grpc_url, timeout_s=30) as aclient:
            return await aclient.embed([h for h, _ in users]), await aclient.score_fresh(
                [FreshRequest(h, c) for h, c in users]
            )

    embedded, fresh = asyncio.run(run())
    assert [e.codes for e in embedded] == [e.codes for e in client.embed([h for h, _ in users])]
    sync_fresh = client.score_fresh([FreshRequest(h, c) for h, c in users])
    for a, s in zip(fresh, sync_fresh):
        np.testing.assert_allclose(np.array(a.scores.scores), np.array(s.scores.scores), atol=1e-6)
