"""The gpu target's split encoder: prep (all int64 arithmetic) then engine (int32 indices, float32
features) equals the fused encoder bitwise in eager PyTorch, for any int64 IDs, timestamps and lengths."""

import numpy as np
import pytest
import torch
from export_fixtures import CODEBOOK, LEVELS, tiny_upstream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from duet_sdk.export.extract import extract_encoder
from duet_sdk.export.prep import compose, split_encoder
from duet_sdk.side import SideCodec, SideConfig

INT64 = st.integers(-(2**63), 2**63 - 1)
EDGES = np.array([-(2**63), -(2**63) + 1, -(2**31), -1, 0, 1, 2**31 - 1, 2**31, 2**62, 2**63 - 1], dtype=np.int64)


@pytest.fixture(scope="module")
def split():
    net = tiny_upstream("click")
    codec = SideCodec(
        SideConfig(levels=LEVELS, codebook_size=CODEBOOK),
        torch.randn(LEVELS, CODEBOOK, net.config.embedding_dim, generator=torch.Generator().manual_seed(3)) * 0.3,
    )
    fused = extract_encoder(net, codec, "click", max_batch=8, opt_batch=4)
    prep, engine = split_encoder(fused)
    return fused, prep, engine


def _raw(signature, draw_ids, draw_ts, draw_len, batch: int, width: int) -> dict[str, torch.Tensor]:
    """Inputs of ``signature`` with every int64 value drawn from the given arrays (no realism at all)."""
    out = {}
    for spec in signature.inputs:
        shape = tuple(batch if d == "batch" else width if isinstance(d, str) else d for d in spec.shape)
        if spec.dtype == "float32":
            out[spec.name] = torch.randn(shape)
        elif spec.name.endswith("_len"):
            out[spec.name] = torch.from_numpy(np.resize(draw_len, shape).astype(np.int64))
        elif spec.name.endswith("_ts") or spec.name == "request_time":
            out[spec.name] = torch.from_numpy(np.resize(draw_ts, shape).astype(np.int64))
        else:
            out[spec.name] = torch.from_numpy(np.resize(draw_ids, shape).astype(np.int64))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ids=arrays(np.int64, st.integers(1, 40), elements=INT64),
    ts=arrays(np.int64, st.integers(1, 20), elements=INT64),
    lengths=arrays(np.int64, st.integers(1, 4), elements=INT64),
    batch=st.integers(1, 3),
    width=st.integers(1, 5),
)
def test_engine_after_prep_equals_fused_encoder_bitwise_for_any_int64_input(split, ids, ts, lengths, batch, width):
    fused, prep, engine = split
    raw = _raw(fused.signature, ids, ts, lengths, batch, width)
    with torch.no_grad():
        want = fused.eager(raw)
        got = compose(prep.eager, engine.eager, engine.signature)(raw)
    for name in fused.signature.output_names:
        assert torch.equal(got[name], want[name]), name


def test_prep_outputs_int32_rows_in_range_and_fp16_safe_time_features_on_extreme_inputs(split):
    fused, prep, engine = split
    raw = _raw(fused.signature, EDGES, EDGES, EDGES, batch=len(EDGES), width=len(EDGES))
    prepared = prep.eager({n: raw[n] for n in prep.signature.input_names})
    for spec in prep.signature.outputs:
        tensor = prepared[spec.name]
        assert tensor.dtype == spec.torch_dtype and spec.dtype in ("int32", "float32")
        if spec.high is not None:
            assert int(tensor.min()) >= 0 and int(tensor.max()) < spec.high
        elif spec.dtype == "float32":
            assert bool(torch.isfinite(tensor).all()) and float(tensor.abs().max()) <= 5.0 < 65504  # fp16 holds them
        else:  # counts of real events: in [0, T]
            assert int(tensor.min()) >= 0 and int(tensor.max()) <= len(EDGES)
    assert {s.dtype for s in engine.signature.inputs} == {"int32", "float32"}  # the engine does no int64 arithmetic
    assert engine.signature.outputs == fused.signature.outputs
