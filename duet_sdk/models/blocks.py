"""Transformer blocks over static (query) tokens S (B, Q, d) and sequence tokens X (B, T, d).

Both use post-norm residuals (LLaTTE eq. 10-11): ``Z = RMSNorm(R + Attn(R))``, ``Y = RMSNorm(Z + FFN(Z))``.
"""

from __future__ import annotations

import torch
from torch import nn

from duet_sdk.models.attention import MultiHeadAttention
from duet_sdk.models.config import AttentionConfig
from duet_sdk.models.layers import FeedForward, RMSNorm


class _Residual(nn.Module):
    """Attention then FFN, each with a post-norm residual."""

    def __init__(self, d_model: int, attention: AttentionConfig, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d_model, attention)
        self.norm_attn = RMSNorm(d_model)
        self.ffn = FeedForward(d_model, ffn_mult, dropout)
        self.norm_ffn = RMSNorm(d_model)

    def forward(self, query: torch.Tensor, context: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        z = self.norm_attn(query + self.attn(query, context, key_valid))  # (B, Lq, d)
        return self.norm_ffn(z + self.ffn(z))


class SelfAttentionBlock(nn.Module):
    """DUET eq. 1-3: ``[S ; X]`` attends to itself; padded events are masked as keys.

    Args:
        static: (B, Q, d); seq: (B, T, d); seq_valid: (B, T) bool.
    Returns:
        (static (B, Q, d), seq (B, T, d)).
    """

    def __init__(self, d_model: int, attention: AttentionConfig, ffn_mult: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.layer = _Residual(d_model, attention, ffn_mult, dropout)

    def forward(
        self, static: torch.Tensor, seq: torch.Tensor, seq_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q = static.shape[1]
        tokens = torch.cat([static, seq], dim=1)  # (B, Q+T, d)
        valid = torch.cat([seq_valid.new_ones(seq_valid.shape[0], q), seq_valid], dim=1)  # (B, Q+T)
        out = self.layer(tokens, tokens, valid)
        return out[:, :q], out[:, q:]


class CrossAttentionBlock(nn.Module):
    """DUET eq. 4-5: static tokens query the sequence; the sequence passes through unchanged.

    A learned null key/value is always present, so a user with an empty stream is valid input.

    Args:
        static: (B, Q, d); seq: (B, T, d); seq_valid: (B, T) bool.
    Returns:
        (static (B, Q, d), seq (B, T, d)).
    """

    def __init__(self, d_model: int, attention: AttentionConfig, ffn_mult: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.layer = _Residual(d_model, attention, ffn_mult, dropout)
        self.null = nn.Parameter(torch.zeros(1, 1, d_model))

    def forward(
        self, static: torch.Tensor, seq: torch.Tensor, seq_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = seq.shape[0]
        context = torch.cat([self.null.expand(b, -1, -1), seq], dim=1)  # (B, 1+T, d)
        valid = torch.cat([seq_valid.new_ones(b, 1), seq_valid], dim=1)  # (B, 1+T)
        return self.layer(static, context, valid), seq
