"""MultiHeadAttention (MHA and MLA) against a naive per-example reference; masking; attention blocks."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from duet_sdk.models import AttentionConfig, CrossAttentionBlock, MultiHeadAttention, SelfAttentionBlock

D, HEADS = 16, 2
KINDS = ["mha", "mla"]


def _attention(kind, seed=0):
    torch.manual_seed(seed)
    attn = MultiHeadAttention(D, AttentionConfig(num_heads=HEADS, kind=kind, latent_dim=8)).eval()
    # Non-trivial RMSNorm gains, so the reference must really apply them.
    with torch.no_grad():
        for module in attn.modules():
            if module.__class__.__name__ == "RMSNorm":
                module.weight.uniform_(0.5, 1.5)
    return attn


def _linear(layer, x):
    out = x @ layer.weight.double().T
    return out + layer.bias.double() if layer.bias is not None else out


def _project(proj, x):
    """A projection of the module, re-done by hand in fp64 (MLA: LLaTTE A.3 down-proj, RMSNorm, up-proj)."""
    if isinstance(proj, torch.nn.Linear):
        return _linear(proj, x)
    down, norm, up = proj
    latent = _linear(down, x)  # X W_down (no bias)
    latent = latent / torch.sqrt((latent**2).mean(-1, keepdim=True) + norm.eps) * norm.weight.double()
    return _linear(up, latent)  # RMSNorm(X W_down) W_up


def _naive_attention(attn, query, context, key_valid):
    """Per batch row: keep ONLY the valid keys (no mask at all), per-head softmax(q k^T / sqrt(dh)) v, out_proj."""
    dh = D // HEADS
    rows = []
    for b in range(query.shape[0]):
        ctx = context[b][key_valid[b]].double()  # (n_valid, d)
        q = _project(attn.q_proj, query[b].double())  # (Lq, d)
        kv = _project(attn.kv_proj, ctx)  # (n_valid, 2d)
        k, v = kv[:, :D], kv[:, D:]
        heads = []
        for h in range(HEADS):
            sl = slice(h * dh, (h + 1) * dh)
            weights = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(dh), dim=-1)
            heads.append(weights @ v[:, sl])
        rows.append(_linear(attn.out_proj, torch.cat(heads, dim=-1)))
    return torch.stack(rows)


def _random_mask(generator, b, lk):
    valid = torch.rand(b, lk, generator=generator) < 0.6
    valid[torch.arange(b), torch.randint(0, lk, (b,), generator=generator)] = True  # >= 1 valid key per row
    return valid


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 4), lq=st.integers(1, 5), lk=st.integers(1, 9), seed=st.integers(0, 2**31 - 1))
def test_attention_matches_naive_per_example_reference_over_valid_keys_only(kind, b, lq, lk, seed):
    attn = _attention(kind)
    g = torch.Generator().manual_seed(seed)
    query, context = torch.randn(b, lq, D, generator=g), torch.randn(b, lk, D, generator=g)
    valid = _random_mask(g, b, lk)
    out = attn(query, context, valid)
    assert out.shape == (b, lq, D)
    # fp32 module vs fp64 reference on O(1) activations with d=16: fp32 rounding is ~1e-7, so 1e-5 is safe
    # while any masking/scaling/head-split mistake moves outputs by >1e-2.
    torch.testing.assert_close(out.double(), _naive_attention(attn, query, context, valid), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("garbage", [0.0, 1.0e4, -1.0e4, 1.0e6])
def test_masked_key_content_has_no_effect_even_when_huge(kind, garbage):
    attn = _attention(kind)
    g = torch.Generator().manual_seed(3)
    query, context = torch.randn(3, 4, D, generator=g), torch.randn(3, 7, D, generator=g)
    valid = _random_mask(g, 3, 7)
    changed = context.clone()
    changed[~valid] = garbage * torch.sign(torch.randn(int((~valid).sum()), D, generator=g))
    # Masked keys must get exactly zero weight, so the outputs must be bit-identical.
    assert torch.equal(attn(query, context, valid), attn(query, changed, valid))


@pytest.mark.parametrize("kind", KINDS)
def test_masked_keys_get_exactly_zero_softmax_weight(kind, monkeypatch):
    attn = _attention(kind)
    g = torch.Generator().manual_seed(4)
    query, context = torch.randn(2, 3, D, generator=g), torch.randn(2, 6, D, generator=g)
    valid = torch.tensor([[True, False, True, False, False, True], [False, False, False, False, False, True]])
    captured = {}
    original_softmax = torch.softmax

    def spy(x, dim):
        captured["weights"] = original_softmax(x, dim=dim)
        return captured["weights"]

    monkeypatch.setattr(torch, "softmax", spy)
    attn(query, context, valid)
    monkeypatch.undo()
    weights = captured["weights"]  # (B, H, Lq, Lk)
    assert torch.equal(weights.masked_select(~valid[:, None, None, :]), torch.zeros(int((~valid).sum()) * HEADS * 3))
    # The valid keys carry all the mass: fp32 sum of <= 6 probabilities is within 1e-6 of 1.
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, HEADS, 3), atol=1e-6, rtol=0)


def test_masked_keys_get_zero_weight_even_when_valid_scores_are_very_negative():
    # The module promises "masked keys get exactly zero weight" whenever a row has >= 1 valid key. A fixed
    # finite fill such as -1e4 breaks that once every valid score is below it: here the only valid key
    # scores about -2.8e4, so masked keys filled with -1e4 would win the softmax.
    attn = MultiHeadAttention(D, AttentionConfig(num_heads=HEADS))
    with torch.no_grad():
        for layer in (attn.q_proj, attn.out_proj):
            layer.weight.copy_(torch.eye(D))
            layer.bias.zero_()
        attn.kv_proj.weight.copy_(torch.cat([torch.eye(D), torch.eye(D)]))
        attn.kv_proj.bias.zero_()
    query = torch.full((1, 1, D), 100.0)
    context = torch.cat([torch.full((1, 1, D), -100.0), torch.full((1, 2, D), 5.0)], dim=1)  # key 0 valid
    valid = torch.tensor([[True, False, False]])
    assert (100.0 * -100.0 * (D // HEADS)) / math.sqrt(D // HEADS) < -1e4  # the regime this test probes
    out = attn(query, context, valid)
    # With one valid key, attention must return exactly that key's value (-100 everywhere): 1e-3 absolute.
    torch.testing.assert_close(out, torch.full((1, 1, D), -100.0), atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------------------------- blocks


def _block(cls, kind="mha", seed=0):
    torch.manual_seed(seed)
    block = cls(D, AttentionConfig(num_heads=HEADS, kind=kind, latent_dim=8)).eval()
    if cls is CrossAttentionBlock:
        with torch.no_grad():
            block.null.normal_()  # a non-zero learned null token
    return block


def _left_padded_valid(lengths, width):
    return torch.arange(width)[None, :] >= (width - torch.tensor(lengths))[:, None]


@pytest.mark.parametrize("kind", KINDS)
def test_self_attention_block_static_and_valid_outputs_ignore_padded_content(kind):
    block = _block(SelfAttentionBlock, kind)
    g = torch.Generator().manual_seed(5)
    static, seq = torch.randn(3, 2, D, generator=g), torch.randn(3, 6, D, generator=g)
    valid = _left_padded_valid([0, 2, 6], 6)
    changed = seq.clone()
    changed[~valid] = 1.0e4 * torch.randn(int((~valid).sum()), D, generator=g)
    s1, x1 = block(static, seq, valid)
    s2, x2 = block(static, changed, valid)
    assert torch.equal(s1, s2)
    assert torch.equal(x1[valid], x2[valid])


@pytest.mark.parametrize("kind", KINDS)
def test_self_attention_block_equals_running_each_row_on_its_valid_events_only(kind):
    block = _block(SelfAttentionBlock, kind)
    g = torch.Generator().manual_seed(6)
    lengths = [0, 3, 5]
    static, seq = torch.randn(3, 2, D, generator=g), torch.randn(3, 5, D, generator=g)
    valid = _left_padded_valid(lengths, 5)
    s_out, x_out = block(static, seq, valid)
    for b, n in enumerate(lengths):
        width = max(n, 1)  # a row with no events still needs one (masked) slot
        row_seq = seq[b : b + 1, 5 - width :]
        row_valid = _left_padded_valid([n], width)
        s_ref, x_ref = block(static[b : b + 1], row_seq, row_valid)
        # Same math over a different key count: fp32 reduction-order noise only (~1e-7), 1e-5 absolute.
        torch.testing.assert_close(s_out[b : b + 1], s_ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(x_out[b, 5 - n :], x_ref[0, width - n :], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_cross_attention_block_passes_seq_through_unchanged(kind):
    block = _block(CrossAttentionBlock, kind)
    static, seq = torch.randn(2, 3, D), torch.randn(2, 4, D)
    _, seq_out = block(static, seq, _left_padded_valid([1, 4], 4))
    assert torch.equal(seq_out, seq)


@pytest.mark.parametrize("kind", KINDS)
def test_cross_attention_block_ignores_padded_content(kind):
    block = _block(CrossAttentionBlock, kind)
    g = torch.Generator().manual_seed(7)
    static, seq = torch.randn(3, 2, D, generator=g), torch.randn(3, 5, D, generator=g)
    valid = _left_padded_valid([0, 1, 5], 5)
    changed = seq.clone()
    changed[~valid] = -1.0e4
    assert torch.equal(block(static, seq, valid)[0], block(static, changed, valid)[0])


@pytest.mark.parametrize("kind", KINDS)
def test_cross_attention_block_on_empty_stream_attends_only_to_the_null_token(kind):
    block = _block(CrossAttentionBlock, kind)
    g = torch.Generator().manual_seed(8)
    static, seq = torch.randn(2, 3, D, generator=g), 1.0e4 * torch.randn(2, 4, D, generator=g)
    valid = torch.zeros(2, 4, dtype=torch.bool)
    out, _ = block(static, seq, valid)
    assert torch.isfinite(out).all()
    layer = block.layer
    with torch.no_grad():
        # Softmax over the single null key is exactly 1, so attention returns out_proj(V(null)) for every query.
        v_null = layer.attn.kv_proj(block.null).chunk(2, dim=-1)[1]  # (1, 1, d)
        attended = layer.attn.out_proj(v_null).expand_as(static)
        z = layer.norm_attn(static + attended)
        expected = layer.norm_ffn(z + layer.ffn(z))
    # Identical fp32 ops except the softmax/matmul with a single weight of 1.0: 1e-5 absolute is plenty.
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", [CrossAttentionBlock, SelfAttentionBlock])
def test_blocks_accept_a_zero_width_sequence_like_an_all_masked_one(cls):
    # An all-empty stream may arrive with zero sequence slots (B, 0, d). Both blocks build their "always
    # valid" mask entries as ones_like(seq_valid[:, :1]), which has 0 columns when T == 0, so the null key
    # (cross) / the static keys (self) lose their mask entries and the block crashes instead of returning
    # the same result as an all-masked stream.
    block = _block(cls)
    g = torch.Generator().manual_seed(9)
    static, seq = torch.randn(2, 3, D, generator=g), torch.randn(2, 4, D, generator=g)
    masked = block(static, seq, torch.zeros(2, 4, dtype=torch.bool))[0]
    empty = block(static, seq[:, :0], torch.zeros(2, 0, dtype=torch.bool))[0]
    torch.testing.assert_close(empty, masked, atol=1e-5, rtol=0)  # same math, fp32 noise only


@pytest.mark.parametrize("kind", KINDS)
def test_self_attention_block_on_empty_stream_gives_finite_static_output(kind):
    block = _block(SelfAttentionBlock, kind)
    static, seq = torch.randn(2, 3, D), 1.0e4 * torch.randn(2, 4, D)
    s_out, _ = block(static, seq, torch.zeros(2, 4, dtype=torch.bool))
    assert torch.isfinite(s_out).all()
    # Only the static tokens are keys, so it equals the block run with a single masked slot.
    s_ref, _ = block(static, torch.zeros(2, 1, D), torch.zeros(2, 1, dtype=torch.bool))
    torch.testing.assert_close(s_out, s_ref, atol=1e-5, rtol=0)  # fp32 noise only
