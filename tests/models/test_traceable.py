"""The UserEncoder survives torch.jit.trace and torch.export with dynamic batch and sequence sizes."""

import dataclasses
import functools

import numpy as np
import pytest
import torch
from torch.export import Dim

from duet_sdk.data import schema as keys
from duet_sdk.data.batching import pad_stream
from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.models import UserEncoder
from duet_sdk.training.presets import upstream_config

SCHEMA = SyntheticConfig().schema()
F = len(SCHEMA.event_fields)
REQUEST = 1_700_000_000
# Fixed positional order of the serving inputs.
INPUT_KEYS = (keys.REQUEST_TIME, keys.STATIC_SPARSE, keys.STATIC_DENSE,
              "click_ids", "click_ts", "click_len", "conv_ids", "conv_ts", "conv_len")
# Same ops on the same values; a traced/exported graph may only differ from eager by fp32 kernel choice.
ATOL = 1e-5

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::FutureWarning", "ignore:.*jit.*:UserWarning"
)


class PositionalEncoder(torch.nn.Module):
    """The dict-input UserEncoder behind a fixed positional signature (what trace/export and Triton need)."""

    def __init__(self, encoder: UserEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, request_time, static_sparse, static_dense, click_ids, click_ts, click_len, conv_ids, conv_ts, conv_len
    ):
        return self.encoder(
            {
                keys.REQUEST_TIME: request_time,
                keys.STATIC_SPARSE: static_sparse,
                keys.STATIC_DENSE: static_dense,
                "click_ids": click_ids,
                "click_ts": click_ts,
                "click_len": click_len,
                "conv_ids": conv_ids,
                "conv_ts": conv_ts,
                "conv_len": conv_len,
            }
        )


def _config(name):
    kind, _, variant = name.partition("-")
    cfg = upstream_config(kind, SCHEMA, "demo")
    if variant == "mla_pyramid":
        cfg = dataclasses.replace(cfg, attention=dataclasses.replace(cfg.attention, kind="mla"), pyramid=(6, 3))
    return dataclasses.replace(cfg, streams=("click", "conv"))  # both streams: two independent sequence dims


@functools.cache
def _model(name):
    torch.manual_seed(0)
    encoder = UserEncoder(_config(name)).eval()
    with torch.no_grad():
        for module in encoder.modules():
            if hasattr(module, "null"):
                module.null.normal_()
    return encoder, PositionalEncoder(encoder).eval()


def _batch(batch_size, widths, seed):
    """Left-padded random batch; stream s is ``widths[s]`` wide with lengths in 0..width (one full row)."""
    rng = np.random.default_rng(seed)
    batch = {
        keys.REQUEST_TIME: torch.from_numpy(REQUEST + rng.integers(0, 10**6, batch_size)),
        keys.STATIC_SPARSE: torch.from_numpy(rng.integers(-(2**62), 2**62, (batch_size, len(SCHEMA.static_sparse)))),
        keys.STATIC_DENSE: torch.from_numpy(rng.normal(size=(batch_size, len(SCHEMA.static_dense))).astype(np.float32)),
    }
    for stream, width in widths.items():
        lengths = rng.integers(0, width + 1, batch_size)
        lengths[0] = width
        end = np.cumsum(lengths)
        ids = rng.integers(-(2**62), 2**62, (int(end[-1]), F))
        ts = REQUEST - np.sort(rng.integers(1, 10**7, int(end[-1])))[::-1]
        p_ids, p_ts, p_len = pad_stream(ids, ts.copy(), end - lengths, end, width)
        batch[keys.ids_key(stream)] = torch.from_numpy(p_ids)
        batch[keys.ts_key(stream)] = torch.from_numpy(p_ts)
        batch[keys.len_key(stream)] = torch.from_numpy(p_len)
    return batch


def _args(batch):
    return tuple(batch[k] for k in INPUT_KEYS)


# Example shapes vs other shapes: different batch sizes and widths, with the pyramid keep counts (6, 3)
# crossed in both directions (T > keep in the example, T < keep in the others and vice versa).
EXAMPLE = (3, {"click": 7, "conv": 4})
OTHERS = [(5, {"click": 12, "conv": 2}), (1, {"click": 1, "conv": 1}), (2, {"click": 3, "conv": 9})]


@pytest.mark.parametrize("name", ["click", "conv-mla_pyramid"])
def test_jit_trace_matches_eager_on_other_batch_sizes_and_widths(name):
    encoder, wrapper = _model(name)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, _args(_batch(*EXAMPLE, seed=0)))
        for i, (batch_size, widths) in enumerate(OTHERS):
            batch = _batch(batch_size, widths, seed=i + 1)
            out = traced(*_args(batch))
            assert out.shape == (batch_size, _config(name).embedding_dim)
            torch.testing.assert_close(out, encoder(batch), atol=ATOL, rtol=0)


def _dynamic_shapes():
    batch, click, conv = (
        Dim("batch", min=1, max=4096),
        Dim("click_len", min=1, max=4096),
        Dim("conv_len", min=1, max=4096),
    )
    return {
        "request_time": {0: batch},
        "static_sparse": {0: batch},
        "static_dense": {0: batch},
        "click_ids": {0: batch, 1: click},
        "click_ts": {0: batch, 1: click},
        "click_len": {0: batch},
        "conv_ids": {0: batch, 1: conv},
        "conv_ts": {0: batch, 1: conv},
        "conv_len": {0: batch},
    }


def test_torch_export_with_dynamic_batch_and_stream_dims_matches_eager():
    # One export (each costs ~8 s on the 2-core box) of the config that exercises every code path:
    # cross and self blocks, MLA, pyramidal trimming, and two streams with independent sequence dims.
    encoder, wrapper = _model("conv-mla_pyramid")
    program = torch.export.export(wrapper, _args(_batch(*EXAMPLE, seed=0)), dynamic_shapes=_dynamic_shapes())
    exported = program.module()
    with torch.no_grad():
        for i, (batch_size, widths) in enumerate(OTHERS):
            batch = _batch(batch_size, widths, seed=i + 10)
            torch.testing.assert_close(exported(*_args(batch)), encoder(batch), atol=ATOL, rtol=0)
    # The three dims stayed symbolic (nothing was specialised to the example's sizes).
    placeholder_shapes = [
        node.meta["val"].shape
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in ("click_ids", "conv_ids")
    ]
    assert all(
        isinstance(shape[0], torch.SymInt) and isinstance(shape[1], torch.SymInt) for shape in placeholder_shapes
    )
    assert len(placeholder_shapes) == 2
