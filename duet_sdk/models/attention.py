"""Multi-head attention with a key-padding mask; optional multi-head latent attention (MLA).

MLA (LLaTTE appendix A.3): ``Q = RMSNorm(X W_down^Q) W_up^Q`` and
``K, V = split(RMSNorm(X W_down^KV) W_up^KV)``, so keys and values pass through a shared latent.
Masked scores are filled with the most negative finite value of the score dtype (no additive mask
constant that could overflow in fp16); callers always leave at least one valid key per row, so masked
keys get exactly zero weight.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from duet_sdk.models.config import AttentionConfig
from duet_sdk.models.layers import RMSNorm


def _latent_projection(d_in: int, latent: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, latent, bias=False), RMSNorm(latent), nn.Linear(latent, d_out))


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention of ``query`` tokens over ``context`` tokens.

    Args:
        query: (B, Lq, d); context: (B, Lk, d); key_valid: (B, Lk) bool, True where a key is real.
    Returns:
        (B, Lq, d).
    Example:
        >>> attn = MultiHeadAttention(16, AttentionConfig(num_heads=2))
        >>> attn(torch.randn(3, 4, 16), torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.bool)).shape
        torch.Size([3, 4, 16])
    """

    def __init__(self, d_model: int, config: AttentionConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = d_model // config.num_heads
        if config.kind == "mla":
            self.q_proj = _latent_projection(d_model, config.latent_dim, d_model)
            self.kv_proj = _latent_projection(d_model, config.latent_dim, 2 * d_model)
        else:
            self.q_proj = nn.Linear(d_model, d_model)
            self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, n, dh)

    def forward(self, query: torch.Tensor, context: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.q_proj(query))  # (B, H, Lq, dh)
        k, v = self.kv_proj(context).chunk(2, dim=-1)
        k, v = self._heads(k), self._heads(v)  # (B, H, Lk, dh)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, Lq, Lk)
        scores = scores.masked_fill(~key_valid[:, None, None, :], torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(weights, v)  # (B, H, Lq, dh)
        b, _, lq, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, -1))  # (B, Lq, d)
