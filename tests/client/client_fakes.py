"""Fakes for the client tests: a small served interface, request builders and a fake Triton.

``FakeTriton`` stands in for ``tritonclient.grpc.InferenceServerClient``: it decodes the real
``InferInput`` objects, checks names, datatypes and shapes against ``expected_inputs`` (as a server
with exactly those ensemble I/O would), and answers with outputs derived from each user's inputs so
tests can tell users apart after splitting and padding.
"""

import asyncio
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from duet_sdk.client.calls import expected_inputs, expected_outputs
from duet_sdk.interface import (
    PARAMETER,
    Candidates,
    EmbeddingInfo,
    Event,
    FreshRequest,
    ScoreRequest,
    ServingInterface,
    StreamInfo,
    UserHistory,
    split_release_model,
)

INTERFACE = ServingInterface(
    streams={"click": StreamInfo(max_len=6, event_fields=3), "conv": StreamInfo(max_len=4, event_fields=2)},
    embeddings={"click": EmbeddingInfo(levels=2, codebook_size=16, dim=4),
                "conv": EmbeddingInfo(levels=3, codebook_size=8, dim=2)},
    static_sparse=2, static_dense=1, item_sparse=2, item_dense=3,
    tasks=("ctr", "cvr"), max_batch=4, max_candidates=8, version="7",
)
NOW = 1_700_000_000


def history(user=0, clicks=3, convs=1, **changes):
    """User ``user`` (its id is static_sparse[0]) with ``clicks``/``convs`` events, one second apart."""
    fields = {
        "user_id": f"u{user}", "request_time": NOW, "static_sparse": (user, 7), "static_dense": (0.5,),
        "streams": {"click": [Event(NOW - 100 + i, (i, i + 1, i + 2)) for i in range(clicks)],
                    "conv": [Event(NOW - 50 + i, (i, 9)) for i in range(convs)]},
    }
    return UserHistory(**(fields | changes))


def candidates(n=3, first=0.0):
    """``n`` candidates; candidate j has item_dense[0] = first + j."""
    return Candidates(item_sparse=[(j, j) for j in range(n)], item_dense=[(first + j, 0.0, 1.0) for j in range(n)])


def score_request(user=0, n=3, codes=None):
    codes = codes if codes is not None else {"click": (1, 2), "conv": (0, 1, 7)}
    return ScoreRequest(f"u{user}", (user, 7), (0.5,), codes, candidates(n, first=10.0 * user))


def fresh_request(user=0, n=3):
    return FreshRequest(history(user), candidates(n, first=10.0 * user))


def error(status, message="boom"):
    return InferenceServerException(msg=message, status=status)


class FakeTriton:
    """Records calls; raises queued ``failures`` first; otherwise answers like the DUET ensembles."""

    def __init__(self, interface=INTERFACE, parameters=None):
        self.interface = interface
        self.parameters = parameters
        self.release = interface.version  # the model version every response reports
        self.failures, self.calls, self.closed = [], [], False

    def get_model_config(self, model_name, as_json=False, client_timeout=None):
        """The alias's config carries ``interface``; ``<ensemble>_vV``'s the same interface at release V."""
        self.calls.append(("config", model_name, client_timeout))
        self._maybe_fail()
        split = split_release_model(model_name)
        interface = replace(self.interface, version=str(split[1])) if split else self.interface
        parameters = (
            self.parameters if self.parameters is not None else {PARAMETER: {"string_value": interface.to_json()}}
        )
        return {"config": {"name": model_name, "max_batch_size": self.interface.max_batch, "parameters": parameters}}

    def infer(self, model_name, inputs, outputs=None, client_timeout=None, **_):
        arrays = {
            i.name(): np.frombuffer(i._get_content(), triton_to_np_dtype(i.datatype())).reshape(i.shape())
            for i in inputs
        }
        self.calls.append(("infer", model_name, client_timeout, arrays))
        self._maybe_fail()
        split = split_release_model(model_name)
        model, release = (split[0], str(split[1])) if split else (model_name, self.release)
        self._check(model, inputs, arrays)
        answers = self.answer(model, arrays)
        assert {o.name() for o in outputs} == set(answers)
        return SimpleNamespace(as_numpy=answers.get, get_response=lambda: SimpleNamespace(model_version=release))

    def get_model_metadata(self, model_name, as_json=False, client_timeout=None):
        """The alias serves only the current release's version (``release``)."""
        self.calls.append(("metadata", model_name, client_timeout))
        self._maybe_fail()
        return {"name": model_name, "versions": [self.release]}

    def is_model_ready(self, model_name, model_version="", client_timeout=None):
        """``<model>_vV`` is ready for V in ``loaded`` (the current release only, unless set)."""
        self.calls.append(("ready", model_name, client_timeout))
        split = split_release_model(model_name)
        return bool(split) and split[1] in getattr(self, "loaded", {int(self.release)})

    def close(self):
        self.closed = True

    @property
    def infers(self):
        return [call for call in self.calls if call[0] == "infer"]

    def _maybe_fail(self):
        if self.failures:
            raise self.failures.pop(0)

    def _check(self, model, inputs, arrays):
        expected = expected_inputs(self.interface, model)
        assert set(arrays) == set(expected)
        batch = {a.shape[0] for a in arrays.values()}
        assert len(batch) == 1 and 1 <= batch.pop() <= self.interface.max_batch
        for tensor in inputs:
            dtype, shape = expected[tensor.name()]
            assert tensor.datatype() == dtype, tensor.name()
            got = arrays[tensor.name()].shape
            assert len(got) == len(shape) and all(e in (-1, g) for e, g in zip(shape, got)), (tensor.name(), got)
        for name, info in self.interface.streams.items():
            if f"{name}_ids" in arrays:
                assert 1 <= arrays[f"{name}_ids"].shape[1] <= info.max_len
        if "item_sparse" in arrays:
            assert arrays["item_sparse"].shape[1] <= self.interface.max_candidates

    def answer(self, model, arrays):
        """Codes (u + j) % size and vectors u + j/2 for user u = static_sparse[0]; scores item_dense[0] * (k+1)."""
        user = arrays["static_sparse"][:, 0]  # (B,)
        out = {}
        for name, info in self.interface.embeddings.items():
            out[f"{name}_codes"] = (user[:, None] + np.arange(info.levels)) % info.codebook_size  # (B, L)
            out[f"{name}_embedding"] = (user[:, None] + np.arange(info.dim) / 2).astype(np.float32)  # (B, D)
        if "item_dense" in arrays:
            k = np.arange(len(self.interface.tasks)) + 1
            out["scores"] = (arrays["item_dense"][:, :, :1] * k).astype(np.float32)  # (B, N, K)
        return {name: out[name] for name in expected_outputs(self.interface, model)}


class AsyncFakeTriton:
    """``tritonclient.grpc.aio`` stand-in over a ``FakeTriton``; records the most requests in flight."""

    def __init__(self, fake):
        self.fake, self.in_flight, self.max_in_flight, self.closed = fake, 0, 0, False

    async def get_model_config(self, *args, **kwargs):
        await asyncio.sleep(0)
        return self.fake.get_model_config(*args, **kwargs)

    async def infer(self, *args, **kwargs):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            return self.fake.infer(*args, **kwargs)
        finally:
            self.in_flight -= 1

    async def close(self):
        self.closed = True
