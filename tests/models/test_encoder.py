"""UserEncoder / UpstreamNet: padding invariance (property-based), batch independence, empty streams,
sensitivity to real events, logits shape and finite gradients."""

import dataclasses
import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from duet_sdk.data import schema as keys
from duet_sdk.data.batching import pad_stream
from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.models import AttentionConfig, UpstreamNet, UserEncoder
from duet_sdk.training.presets import upstream_config

SCHEMA = SyntheticConfig().schema()  # streams: click (max_len 32), conv (max_len 8)
F = len(SCHEMA.event_fields)
REQUEST = 1_700_000_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Embeddings are O(0.1-1) fp32 values; re-padding only changes matmul/softmax reduction lengths, i.e. fp32
# rounding (~1e-7), so 1e-5 absolute is tight enough to catch any leak from a padded slot (>1e-3).
ATOL = 1e-5


def _config(name):
    kind, _, variant = name.partition("-")
    cfg = upstream_config(kind, SCHEMA, "demo")
    mla = dataclasses.replace(cfg.attention, kind="mla")
    variants = {
        "": {},
        "pyramid": {"pyramid": (0, 3)},
        "pyramid_tight": {"pyramid": (5, 2)},
        "mla": {"attention": mla},
        "mla_pyramid": {"attention": mla, "pyramid": (6, 3)},
        "both_streams": {"streams": ("click", "conv")},
        "click_stream_only": {"streams": ("click",)},
        "conv_stream_only": {"streams": ("conv",)},
    }
    return dataclasses.replace(cfg, **variants[variant])


CONFIGS = ["click", "conv", "click-pyramid", "conv-pyramid", "click-mla", "conv-mla", "conv-mla_pyramid",
           "click-pyramid_tight", "click-both_streams"]


@functools.cache
def _encoder(name):
    torch.manual_seed(0)
    encoder = UserEncoder(_config(name)).eval()
    with torch.no_grad():  # make zero-initialised parameters non-trivial so they are exercised too
        for module in encoder.modules():
            if hasattr(module, "null"):
                module.null.normal_()
        encoder.static.field.normal_()
    return encoder


# ---------------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class World:
    """Users' static features and per-stream flat event arrays (as an EventTable holds them)."""

    static_sparse: np.ndarray
    static_dense: np.ndarray
    request_time: np.ndarray
    streams: dict  # name -> (ids (N, F), ts (N,), start (U,), end (U,))


def _make_world(lengths, seed):
    """``lengths[stream][u]`` events per user; random raw ids over all of int64, sorted past timestamps."""
    rng = np.random.default_rng(seed)
    users = len(next(iter(lengths.values())))
    # Static features first, so worlds with the same seed and user count share them whatever the histories.
    request = REQUEST + rng.integers(0, 10**6, users)
    static_sparse = rng.integers(
        INT64_MIN, INT64_MAX, (users, len(SCHEMA.static_sparse)), dtype=np.int64, endpoint=True
    )
    static_dense = rng.normal(size=(users, len(SCHEMA.static_dense))).astype(np.float32)
    streams = {}
    for name, per_user in lengths.items():
        per_user = np.asarray(per_user, dtype=np.int64)
        end = np.cumsum(per_user)
        start = end - per_user
        n = int(per_user.sum())
        ids = np.where(
            rng.random((n, F)) < 0.5,
            rng.integers(INT64_MIN, INT64_MAX, (n, F), dtype=np.int64, endpoint=True),
            rng.integers(0, 1000, (n, F)),
        )
        ts = np.concatenate(
            [np.sort(request[u] - rng.integers(1, 60 * 86_400, k)) for u, k in enumerate(per_user)]
            + [np.zeros(0, np.int64)]
        )
        streams[name] = (ids.astype(np.int64), ts.astype(np.int64), start.astype(np.int64), end.astype(np.int64))
    return World(
        static_sparse=static_sparse,
        static_dense=static_dense,
        request_time=request.astype(np.int64),
        streams=streams,
    )


def _batch(world, users=None, extra=0, garbage_seed=None):
    """Batch of ``users`` padded (pad_stream) to their longest history + ``extra`` slots; with
    ``garbage_seed`` every padded slot gets random int64 ids and timestamps instead of zeros."""
    users = np.arange(len(world.request_time)) if users is None else np.asarray(users)
    rng = np.random.default_rng(garbage_seed)
    batch = {
        keys.REQUEST_TIME: torch.from_numpy(world.request_time[users]),
        keys.STATIC_SPARSE: torch.from_numpy(world.static_sparse[users]),
        keys.STATIC_DENSE: torch.from_numpy(world.static_dense[users]),
        keys.ITEM_SPARSE: torch.from_numpy(rng.integers(0, 10**6, (len(users), len(SCHEMA.item_sparse)))),
        keys.ITEM_DENSE: torch.from_numpy(rng.normal(size=(len(users), len(SCHEMA.item_dense))).astype(np.float32)),
    }
    for name, (ids, ts, start, end) in world.streams.items():
        longest = max(1, int((end[users] - start[users]).max(initial=0)))
        p_ids, p_ts, p_len = pad_stream(ids, ts, start[users], end[users], longest + extra)
        if garbage_seed is not None:
            pad = np.arange(p_ts.shape[1])[None, :] < (p_ts.shape[1] - p_len)[:, None]  # (B, T) padded slots
            p_ids = np.where(
                pad[..., None], rng.integers(INT64_MIN, INT64_MAX, p_ids.shape, dtype=np.int64, endpoint=True), p_ids
            )
            p_ts = np.where(pad, rng.integers(INT64_MIN, INT64_MAX, p_ts.shape, dtype=np.int64, endpoint=True), p_ts)
        batch[keys.ids_key(name)] = torch.from_numpy(p_ids)
        batch[keys.ts_key(name)] = torch.from_numpy(p_ts)
        batch[keys.len_key(name)] = torch.from_numpy(p_len)
    return batch


@st.composite
def _histories(draw, max_users=4):
    users = draw(st.integers(1, max_users))
    lengths = {
        s.name: draw(st.lists(st.integers(0, s.max_len), min_size=users, max_size=users)) for s in SCHEMA.streams
    }
    return lengths, draw(st.integers(0, 2**32 - 1))


def _embed(name, batch):
    with torch.no_grad():
        return _encoder(name)(batch)


# ---------------------------------------------------------------------------------------------- padding


@pytest.mark.parametrize("name", CONFIGS)
@settings(max_examples=25, deadline=None)
@given(history=_histories(), extra=st.integers(1, 7))
def test_embedding_is_invariant_to_padding_width_and_padding_content(name, history, extra):
    lengths, seed = history
    world = _make_world(lengths, seed)
    tight = _embed(name, _batch(world))  # zero padding up to the batch's longest history
    wide = _embed(name, _batch(world, extra=extra, garbage_seed=seed + 1))  # wider, garbage-filled padding
    assert tight.shape == (len(world.request_time), _config(name).embedding_dim)
    assert torch.isfinite(tight).all()
    torch.testing.assert_close(wide, tight, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["click", "conv-mla_pyramid"])
@settings(max_examples=25, deadline=None)
@given(history=_histories(max_users=5), data=st.data())
def test_a_users_embedding_does_not_depend_on_the_other_users_in_the_batch(name, history, data):
    lengths, seed = history
    world = _make_world(lengths, seed)
    users = len(world.request_time)
    full = _embed(name, _batch(world, garbage_seed=seed))
    subset = data.draw(st.lists(st.integers(0, users - 1), min_size=1, max_size=users, unique=True))
    alone = _embed(name, _batch(world, users=subset, garbage_seed=seed + 7))  # its own (shorter) padding width
    torch.testing.assert_close(alone, full[subset], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["click", "conv", "click-mla", "conv-pyramid", "click-both_streams"])
def test_user_with_all_streams_empty_gets_a_finite_embedding(name):
    only_empty = _make_world({"click": [0, 0], "conv": [0, 0]}, seed=1)
    mixed = _make_world({"click": [0, 9], "conv": [0, 3]}, seed=1)
    out_empty = _embed(name, _batch(only_empty, garbage_seed=2))
    out_mixed = _embed(name, _batch(mixed, garbage_seed=3))
    assert torch.isfinite(out_empty).all() and torch.isfinite(out_mixed).all()
    # Users 0 of both worlds share static features (same seed) and have no events: same embedding.
    torch.testing.assert_close(out_mixed[0], out_empty[0], atol=ATOL, rtol=0)


def test_encoder_accepts_zero_width_streams_as_empty_streams():
    # A batch in which every history is empty may carry (B, 0, F) / (B, 0) stream tensors. It must give the
    # same embedding as the width-1 all-padding batch that pad_stream builds; today both block types crash
    # (see test_attention.py::test_blocks_accept_a_zero_width_sequence_like_an_all_masked_one).
    world = _make_world({"click": [0, 0], "conv": [0, 0]}, seed=4)
    for name in ("click", "conv"):
        padded = _batch(world)
        zero_width = dict(padded)
        for stream in SCHEMA.stream_names:
            zero_width[keys.ids_key(stream)] = padded[keys.ids_key(stream)][:, :0]
            zero_width[keys.ts_key(stream)] = padded[keys.ts_key(stream)][:, :0]
        torch.testing.assert_close(_embed(name, zero_width), _embed(name, padded), atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------- sensitivity


def _diff(name, world, mutate):
    before = _batch(world)
    after = {k: v.clone() for k, v in before.items()}
    mutate(after)
    return (_embed(name, after) - _embed(name, before)).abs().max(dim=1).values


@pytest.mark.parametrize("name", ["click", "conv", "click-mla", "conv-pyramid"])
def test_embedding_changes_when_a_real_event_changes(name):
    stream = _config(name).streams[0]
    world = _make_world({"click": [5, 2], "conv": [5, 2]}, seed=5)
    ids, ts = keys.ids_key(stream), keys.ts_key(stream)

    def newest_item(batch):
        batch[ids][0, -1, 0] += 1

    def oldest_item(batch):
        batch[ids][0, 0, 0] += 1

    def newest_time(batch):
        batch[ts][0, -1] -= 3 * 3600

    for mutate in (newest_item, oldest_item, newest_time):
        diff = _diff(name, world, mutate)
        assert diff[0] > 1e-4, mutate.__name__  # the edited user's embedding moves
        assert diff[1] == 0, mutate.__name__  # the other user's does not


def test_embedding_changes_when_the_history_length_changes():
    world = _make_world({"click": [3, 3], "conv": [0, 0]}, seed=6)
    shorter = _batch(world)
    shorter[keys.len_key("click")][0] = 2  # drop user 0's oldest event by marking it as padding
    diff = (_embed("click", shorter) - _embed("click", _batch(world))).abs().max(dim=1).values
    assert diff[0] > 1e-4 and diff[1] == 0


def test_embedding_changes_with_static_features():
    world = _make_world({"click": [2], "conv": [1]}, seed=7)

    def sparse(batch):
        batch[keys.STATIC_SPARSE][0, 0] += 1

    def dense(batch):
        batch[keys.STATIC_DENSE][0, 1] += 1.0

    for mutate in (sparse, dense):
        assert _diff("click", world, mutate)[0] > 1e-4, mutate.__name__


def test_pyramid_drops_events_older_than_the_first_keep_count():
    # pyramid (5, 2): the first block only sees the 5 most recent events, so older ones cannot matter,
    # while the 5th most recent still does.
    world = _make_world({"click": [8], "conv": [0]}, seed=8)

    def sixth_newest(batch):
        batch[keys.ids_key("click")][0, -6, :] += 1

    def fifth_newest(batch):
        batch[keys.ids_key("click")][0, -5, :] += 1

    assert _diff("click-pyramid_tight", world, sixth_newest)[0] == 0
    assert _diff("click-pyramid_tight", world, fifth_newest)[0] > 1e-4
    assert _diff("click", world, sixth_newest)[0] > 1e-4  # without a pyramid it does matter


def test_only_configured_streams_are_read():
    world = _make_world({"click": [3], "conv": [4]}, seed=9)

    def conv_event(batch):
        batch[keys.ids_key("conv")][0, -1, 0] += 1

    def click_event(batch):
        batch[keys.ids_key("click")][0, -1, 0] += 1

    assert _diff("click-click_stream_only", world, conv_event)[0] == 0  # configured for the click stream alone
    assert _diff("conv-conv_stream_only", world, click_event)[0] == 0  # configured for the conv stream alone
    assert _diff("click-both_streams", world, conv_event)[0] > 1e-4


# ---------------------------------------------------------------------------------------------- UpstreamNet


@pytest.mark.parametrize("kind", ["click", "conv"])
def test_upstream_net_returns_one_logit_per_task(kind):
    cfg = upstream_config(kind, SCHEMA, "demo")
    torch.manual_seed(0)
    net = UpstreamNet(cfg).eval()
    batch = _batch(_make_world({"click": [0, 4, 32], "conv": [1, 0, 8]}, seed=10), garbage_seed=11)
    with torch.no_grad():
        logits = net(batch)
    assert logits.shape == (3, len(cfg.tasks))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("kind, attention", [("click", "mha"), ("conv", "mha"), ("click", "mla"), ("conv", "mla")])
def test_backward_with_empty_streams_gives_finite_gradients(kind, attention):
    cfg = upstream_config(kind, SCHEMA, "demo")
    cfg = dataclasses.replace(cfg, attention=AttentionConfig(num_heads=2, kind=attention, latent_dim=8))
    torch.manual_seed(0)
    net = UpstreamNet(cfg).train()
    for lengths in ({"click": [0, 0], "conv": [0, 0]}, {"click": [0, 5], "conv": [0, 3]}):
        net.zero_grad()
        batch = _batch(_make_world(lengths, seed=12), garbage_seed=13)
        logits = net(batch)
        labels = torch.tensor([[1.0] * len(cfg.tasks), [0.0] * len(cfg.tasks)])
        torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).backward()
        grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
        assert grads, "no gradient reached the parameters"
        bad = [n for n, g in grads.items() if not torch.isfinite(g).all()]
        assert not bad, f"non-finite gradients in {bad}"
