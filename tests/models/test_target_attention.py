"""Target attention (DARE / TWIN / TWIN w/ proj.) against a naive per-candidate reference: top-k, masks,
empty and over-long histories, padding invariance, int64 IDs, decoupled widths, export."""

import dataclasses

import numpy as np
import pytest
import torch

from duet_sdk.errors import ConfigError
from duet_sdk.models.config import TargetAttentionConfig
from duet_sdk.models.target_attention import TargetAttention

VARIANTS = ("dare", "twin", "twin_proj")
# Same arithmetic as the reference up to summation order: fp32 agreement within 1e-5.
ATOL = 1e-5


def _config(variant: str, **overrides) -> TargetAttentionConfig:
    base = TargetAttentionConfig(
        variant=variant, max_len=12, top_k=4, d_repr=8, d_att=0 if variant == "twin" else 4, table_size=256
    )
    return dataclasses.replace(base, **overrides)


def _module(variant: str, **overrides) -> TargetAttention:
    torch.manual_seed(0)
    module = TargetAttention(_config(variant, **overrides)).eval()
    for p in module.parameters():  # break ties that equal hashed rows could create
        p.data.normal_()
    return module


def _history(lengths: list[int], width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (U, width, 2) raw IDs anywhere in int64 (padding 0) and (U,) lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(-(2**62), 2**62, (len(lengths), width, 2), generator=g)
    for u, n in enumerate(lengths):
        ids[u, : width - min(n, width)] = 0
    return ids, torch.tensor(lengths)


def _targets(users: int, candidates: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(-(2**62), 2**62, (users, candidates, 2), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _reference(module: TargetAttention, history_ids, history_len, target_ids) -> tuple[torch.Tensor, list]:
    """Per user and candidate, in plain loops: the valid recent behaviours, their scores, a full sort,
    the top k, softmax, TR. Returns (U, N, d_repr) and the retrieved history positions per pair."""
    cfg = module.config
    width = history_ids.shape[1]
    out = torch.zeros(*target_ids.shape[:2], cfg.d_repr)
    retrieved = []
    for u in range(history_ids.shape[0]):
        n_valid = min(int(history_len[u]), width, cfg.max_len)
        positions = list(range(width - n_valid, width))
        rows = []
        for c in range(target_ids.shape[1]):
            q_att, q_repr = module.embed(target_ids[u, c])
            scored = []
            for p in positions:
                k_att, _ = module.embed(history_ids[u, p])
                scored.append((float(q_att @ k_att) / cfg.attention_dim**0.5, p))
            top = sorted(scored, reverse=True)[: cfg.top_k]
            rows.append(sorted(p for _, p in top))
            if top:
                weights = torch.softmax(torch.tensor([s for s, _ in top]), 0)
                reps = torch.stack([module.embed(history_ids[u, p])[1] for _, p in top])
                out[u, c] = (weights[:, None] * reps).sum(0) * q_repr
        retrieved.append(rows)
    return out, retrieved


@pytest.mark.parametrize("variant", VARIANTS)
def test_target_attention_matches_naive_reference_on_mixed_lengths(variant):
    module = _module(variant)
    # lengths: full, shorter than k, exactly k, empty, longer than the tensor, longer than max_len
    history_ids, history_len = _history([12, 2, 4, 0, 30, 9], width=12)
    targets = _targets(6, 5)
    with torch.no_grad():
        got = module(history_ids, history_len, targets)
    want, _ = _reference(module, history_ids, history_len, targets)
    assert torch.allclose(got, want, atol=ATOL), float((got - want).abs().max())


@pytest.mark.parametrize("variant", VARIANTS)
def test_search_retrieves_the_reference_top_k_positions(variant):
    module = _module(variant)
    history_ids, history_len = _history([12, 3, 0, 7], width=12, seed=3)
    targets = _targets(4, 6, seed=4)
    with torch.no_grad():
        valid = module.valid_mask(history_ids, history_len)
        _, index, selected = module.search(module.embed_attention(history_ids), valid, module.embed_attention(targets))
    _, want = _reference(module, history_ids, history_len, targets)
    for u in range(4):
        for c in range(6):
            got = sorted(int(i) for i, s in zip(index[u, c], selected[u, c]) if s)
            assert got == want[u][c]
            assert bool((index[u, c][~selected[u, c]] == -1).all())


@pytest.mark.parametrize("variant", VARIANTS)
def test_empty_history_gives_zero_representation_and_finite_gradients(variant):
    module = _module(variant).train()
    history_ids, history_len = _history([0, 0, 5], width=6)
    out = module(history_ids, history_len, _targets(3, 4))
    assert torch.equal(out[:2], torch.zeros_like(out[:2]))
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)
    empty = module(torch.zeros(2, 0, 2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64), _targets(2, 3))
    assert torch.equal(empty, torch.zeros(2, 3, module.config.d_repr))


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_ignores_the_amount_and_content_of_padding(variant):
    module = _module(variant)
    history_ids, history_len = _history([5, 1, 0], width=6)
    targets = _targets(3, 4)
    wider = torch.randint(-(2**62), 2**62, (3, 11, 2), generator=torch.Generator().manual_seed(9))  # garbage padding
    wider[:, 5:] = history_ids
    with torch.no_grad():
        a = module(history_ids, history_len, targets)
        b = module(wider, history_len, targets)
    assert torch.allclose(a, b, atol=ATOL)


@pytest.mark.parametrize("variant", VARIANTS)
def test_full_attention_matches_a_softmax_over_every_valid_behaviour_and_is_zero_for_an_empty_history(variant):
    """The auxiliary training view: the reference with k = every behaviour, padding ignored."""
    module = _module(variant)
    history_ids, history_len = _history([12, 2, 0, 30], width=12)
    targets = _targets(4, 3)
    wider = torch.randint(-(2**62), 2**62, (4, 17, 2), generator=torch.Generator().manual_seed(5))
    wider[:, 5:] = history_ids  # garbage padding in front
    with torch.no_grad():
        got = module.full_attention(history_ids, history_len, targets)
        padded = module.full_attention(wider, history_len, targets)
        want, _ = _reference(_module(variant, top_k=module.config.max_len), history_ids, history_len, targets)
    assert torch.allclose(got, want, atol=ATOL), float((got - want).abs().max())
    assert torch.allclose(padded, got, atol=ATOL)
    assert torch.equal(got[2], torch.zeros_like(got[2]))


def test_history_longer_than_max_len_keeps_the_most_recent_events():
    module = _module("dare", max_len=6)
    history_ids, _ = _history([20], width=20)
    targets = _targets(1, 3)
    with torch.no_grad():
        full = module(history_ids, torch.tensor([20]), targets)
        recent = module(history_ids[:, -6:], torch.tensor([6]), targets)
    assert torch.equal(full, recent)


def test_listwise_candidates_are_scored_independently():
    module = _module("dare")
    history_ids, history_len = _history([9, 4], width=12)
    targets = _targets(2, 5)
    with torch.no_grad():
        together = module(history_ids, history_len, targets)
        alone = torch.cat([module(history_ids, history_len, targets[:, c : c + 1]) for c in range(5)], dim=1)
    assert torch.allclose(together, alone, atol=ATOL)


def test_dare_attention_space_has_its_own_table_and_width():
    module = _module("dare", d_repr=16, d_att=4)
    ids = _targets(2, 3)
    att, rep = module.embed(ids)
    assert att.shape[-1] == 4 and rep.shape[-1] == 16
    assert module.att_table is not None and module.att_table.table.weight.shape[1] == 2  # 4 / 2 fields
    # The search reads only the attention table: changing the representation table leaves it unchanged.
    before = module.embed_attention(ids).clone()
    module.repr_table.table.weight.data.add_(1.0)
    assert torch.equal(module.embed_attention(ids), before)
    twin = _module("twin")
    assert twin.att_table is None and twin.att_proj is None
    proj = _module("twin_proj", d_att=2)
    assert proj.att_proj.weight.shape == (2, 8)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"variant": "din"}, "TargetAttentionConfig.variant"),
        ({"variant": "twin", "d_att": 4}, "TargetAttentionConfig.d_att"),
        ({"d_repr": 7}, "TargetAttentionConfig.d_repr"),
        ({"d_att": 3}, "TargetAttentionConfig.d_att"),
        ({"top_k": 0}, "TargetAttentionConfig.top_k"),
        ({"fields": ()}, "TargetAttentionConfig.fields"),
        ({"fields": ("item_id", "item_id")}, "TargetAttentionConfig.fields"),
        ({"aux_loss_weight": -1.0}, "TargetAttentionConfig.aux_loss_weight"),
        ({"aux_loss_weight": float("nan")}, "TargetAttentionConfig.aux_loss_weight"),
    ],
)
def test_bad_target_attention_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        TargetAttentionConfig(**{"d_repr": 8, "d_att": 4, **overrides})
    assert info.value.field == field


class _Positional(torch.nn.Module):
    def __init__(self, module: TargetAttention) -> None:
        super().__init__()
        self.module = module

    def forward(self, history_ids, history_len, target_ids):
        return self.module(history_ids, history_len, target_ids)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore:.*jit.*:UserWarning")
def test_traced_and_exported_modules_equal_eager_on_other_shapes_than_the_example():
    from torch.export import Dim

    module = _Positional(_module("dare")).eval()
    example = (*_history([7, 2, 9], width=9), _targets(3, 5))
    traced = torch.jit.trace(module, example, check_trace=False)
    u, n, t = Dim("users", min=1, max=64), Dim("candidates", min=1, max=128), Dim("hist", min=1, max=64)
    exported = torch.export.export(module, example, dynamic_shapes=({0: u, 1: t}, {0: u}, {0: u, 1: n}))
    for lengths, width, candidates in (([1], 1, 1), ([3, 0, 12, 2], 12, 7), ([40, 0], 40, 2)):
        inputs = (*_history(lengths, width, seed=width), _targets(len(lengths), candidates, seed=width))
        with torch.no_grad():
            want = module(*inputs)
            assert torch.allclose(traced(*inputs), want, atol=ATOL)
            assert torch.allclose(exported.module()(*inputs), want, atol=ATOL)
        assert np.isfinite(want.numpy()).all()
