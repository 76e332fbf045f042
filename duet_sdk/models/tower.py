"""Event tower: one stream's events and the static tokens through self/cross-attention blocks."""

from __future__ import annotations

import torch
from torch import nn

from duet_sdk.models.blocks import CrossAttentionBlock, SelfAttentionBlock
from duet_sdk.models.config import UpstreamConfig
from duet_sdk.models.embeddings import TimeEncoding
from duet_sdk.models.layers import MLP, RMSNorm


def valid_from_lengths(lengths: torch.Tensor, width: int | torch.SymInt) -> torch.Tensor:
    """(B, T) bool mask of left-padded rows: slot t is real iff t >= T - length (in ``lengths``' dtype)."""
    slot = torch.arange(width, device=lengths.device, dtype=lengths.dtype)
    return slot.unsqueeze(0) >= (width - lengths).unsqueeze(1)


def keep_recent(seq: torch.Tensor, valid: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pyramidal trimming: the ``keep`` most recent slots of (B, T, d) / (B, T), without shape branches.

    A masked slot is put in front first (so T = 0 works); when T < keep, slots before the start
    repeat it and are marked invalid.
    """
    b = seq.shape[0]
    seq = torch.cat([seq.new_zeros(b, 1, seq.shape[2]), seq], dim=1)  # (B, 1+T, d)
    valid = torch.cat([valid.new_zeros(b, 1), valid], dim=1)  # (B, 1+T)
    position = torch.arange(keep, device=seq.device) + (seq.shape[1] - keep)  # (keep,)
    in_range = position >= 0
    position = position.clamp(min=0)
    return seq.index_select(1, position), valid.index_select(1, position) & in_range


class EventTower(nn.Module):
    """One stream's tower: event tokens + time encoding, then blocks, then a readout of the static tokens.

    Args:
        static: (B, Q, d) static/query tokens; event_features: (B, T, F*hash_dim) ID embeddings;
        request_time: (B,) int64; timestamps: (B, T) int64; lengths: (B,) int64.
    Returns:
        (B, tower_out_dim).
    """

    def __init__(self, config: UpstreamConfig) -> None:
        super().__init__()
        d = config.d_model
        event_in = len(config.schema.event_fields) * config.hashing.dim
        self.event_proj = nn.Sequential(MLP((event_in, d, d)), RMSNorm(d))
        self.time = TimeEncoding(config.time_frequencies, d)
        block_types = {"self": SelfAttentionBlock, "cross": CrossAttentionBlock}
        self.blocks = nn.ModuleList(
            block_types[kind](d, config.attention, config.ffn_mult, config.dropout) for kind in config.blocks
        )
        self.pyramid = tuple(config.pyramid) or (0,) * len(config.blocks)
        self.readout = nn.Linear(config.num_query_tokens * d, config.tower_out_dim)

    def forward(
        self,
        static: torch.Tensor,
        event_features: torch.Tensor,
        request_time: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        return self.encode(static, event_features, self.time.features(request_time, timestamps), lengths)

    def encode(self, static: torch.Tensor, event_features: torch.Tensor, time_features: torch.Tensor,
               lengths: torch.Tensor) -> torch.Tensor:
        """``forward`` after the int64 time arithmetic: time_features (B, T, time.num_features) float32,
        lengths (B,) int32 or int64."""
        seq = self.event_proj(event_features) + self.time.proj(time_features)  # (B, T, d)
        valid = valid_from_lengths(lengths, seq.shape[1])  # (B, T)
        for keep, block in zip(self.pyramid, self.blocks):
            if keep:
                seq, valid = keep_recent(seq, valid, keep)
            static, seq = block(static, seq, valid)
        return self.readout(static.flatten(1))  # (B, tower_out_dim)
