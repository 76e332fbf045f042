"""Left-padding masks, pyramidal trimming (keep_recent) and the EventTower's invariance to padding."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.models import EventTower
from duet_sdk.models.tower import keep_recent, valid_from_lengths
from duet_sdk.training.presets import upstream_config

SCHEMA = SyntheticConfig().schema()


def test_valid_from_lengths_marks_the_last_length_slots_of_each_row():
    valid = valid_from_lengths(torch.tensor([0, 1, 3, 4]), 4)
    expected = torch.tensor([
        [False, False, False, False],
        [False, False, False, True],
        [False, True, True, True],
        [True, True, True, True],
    ])
    assert valid.dtype == torch.bool
    assert torch.equal(valid, expected)


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(0, 9), min_size=1, max_size=6), extra=st.integers(0, 3))
def test_valid_from_lengths_counts_and_places_real_slots_at_the_end(lengths, extra):
    width = max(lengths) + extra
    valid = valid_from_lengths(torch.tensor(lengths), width)
    assert valid.shape == (len(lengths), width)
    assert valid.sum(1).tolist() == lengths
    # Once a slot is real every later slot is real (left padding).
    assert torch.equal(valid.int().cummax(1).values, valid.int())


def _sequence(b, t):
    """(B, T, 2) with seq[b, t] = (b, t) so every kept slot says where it came from."""
    rows = torch.arange(b).view(b, 1).expand(b, t)
    cols = torch.arange(t).view(1, t).expand(b, t)
    return torch.stack([rows, cols], dim=-1).float()


@pytest.mark.parametrize("t, keep", [(3, 5), (5, 5), (8, 5), (1, 1), (1, 4), (6, 1)])
def test_keep_recent_keeps_the_most_recent_slots_and_invalidates_repeats(t, keep):
    lengths = torch.tensor([0, 1, min(2, t), t])
    seq, valid = _sequence(4, t), valid_from_lengths(lengths, t)
    kept_seq, kept_valid = keep_recent(seq, valid, keep)
    assert kept_seq.shape == (4, keep, 2) and kept_valid.shape == (4, keep)
    # Kept slot j holds original slot t - keep + j when that exists (the most recent `keep` slots, in order).
    source = torch.arange(keep) + (t - keep)
    exists = source >= 0
    assert torch.equal(kept_seq[:, exists, 1], source[exists].float().expand(4, -1))
    assert torch.equal(
        kept_seq[:, exists, 0], torch.arange(4).float().view(4, 1).expand(4, int(exists.sum()))
    )  # rows never mix
    # Slots that do not exist (T < keep) are invalid; existing ones keep their validity.
    assert not kept_valid[:, ~exists].any()
    assert torch.equal(kept_valid[:, exists], valid[:, source[exists]])
    # Valid kept events are exactly the min(length, keep) most recent events of each row.
    assert kept_valid.sum(1).tolist() == torch.clamp(lengths, max=keep).tolist()


def test_keep_recent_with_t_less_than_keep_pads_on_the_left_with_invalid_slots():
    seq, valid = _sequence(1, 2), torch.tensor([[True, True]])
    kept_seq, kept_valid = keep_recent(seq, valid, 4)
    assert kept_valid.tolist() == [[False, False, True, True]]
    assert kept_seq[0, 2:, 1].tolist() == [0.0, 1.0]


def test_keep_recent_with_t_equal_keep_is_identity():
    seq, valid = _sequence(2, 4), valid_from_lengths(torch.tensor([2, 4]), 4)
    kept_seq, kept_valid = keep_recent(seq, valid, 4)
    assert torch.equal(kept_seq, seq) and torch.equal(kept_valid, valid)


def test_keep_recent_with_t_greater_than_keep_drops_the_oldest_slots():
    seq, valid = _sequence(2, 6), valid_from_lengths(torch.tensor([6, 1]), 6)
    kept_seq, kept_valid = keep_recent(seq, valid, 2)
    assert kept_seq[:, :, 1].tolist() == [[4.0, 5.0], [4.0, 5.0]]
    assert kept_valid.tolist() == [[True, True], [False, True]]


# ---------------------------------------------------------------------------------------------- EventTower


def _tower(kind, pyramid):
    cfg = dataclasses.replace(upstream_config(kind, SCHEMA, "demo"), pyramid=pyramid)
    torch.manual_seed(0)
    return cfg, EventTower(cfg).eval()


@pytest.mark.parametrize("kind, pyramid", [("click", ()), ("click", (0, 2)), ("conv", ()), ("conv", (3, 3))])
def test_event_tower_ignores_padded_slots_and_extra_left_padding(kind, pyramid):
    cfg, tower = _tower(kind, pyramid)
    g = torch.Generator().manual_seed(1)
    b, t, extra = 3, 5, 4
    static = torch.randn(b, cfg.num_query_tokens, cfg.d_model, generator=g)
    feats = torch.randn(b, t, len(SCHEMA.event_fields) * cfg.hashing.dim, generator=g)
    request = torch.full((b,), 1_700_000_000)
    ts = request[:, None] - torch.randint(0, 10**6, (b, t), generator=g)
    lengths = torch.tensor([0, 2, 5])
    out = tower(static, feats, request, ts, lengths)
    assert out.shape == (b, cfg.tower_out_dim)
    wide_feats = torch.cat([1.0e3 * torch.randn(b, extra, feats.shape[-1], generator=g), feats], dim=1)
    wide_ts = torch.cat([torch.randint(-(2**40), 2**40, (b, extra), generator=g), ts], dim=1)
    valid = valid_from_lengths(lengths, t + extra)
    wide_feats[:, extra:][~valid[:, extra:]] = -7.0  # garbage in the original padding too
    # Same valid events, different key count / garbage: fp32 reduction-order noise only, 1e-5 absolute.
    torch.testing.assert_close(tower(static, wide_feats, request, wide_ts, lengths), out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("keep", [1, 3])
def test_keep_recent_of_a_zero_width_stream_gives_only_invalid_slots(keep):
    seq, valid = torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool)
    kept_seq, kept_valid = keep_recent(seq, valid, keep)
    assert kept_seq.shape == (2, keep, 4) and not kept_valid.any()
