"""Target attention over a long raw history with decoupled embeddings (DARE; TWIN as the baseline).

Two stages per candidate, listwise (one user, N candidates; the user's history is embedded once):

1. **Search**: scaled dot product between the candidate and every valid behaviour in the attention
   space (``d_att`` wide), keep the ``top_k`` behaviours.
2. **Aggregation**: softmax over the retrieved behaviours' scores; the target-aware representation
   is ``TR = sum_i w_i (e_i * v_t)`` with behaviour and target embeddings ``e_i``, ``v_t`` from the
   representation space (``d_repr`` wide).

``dare`` uses two independent embedding tables (attention and representation), ``twin`` one shared
table, ``twin_proj`` one shared table with linear attention and representation projections.
Histories are left-padded (the most recent event last); only the most recent ``max_len`` events
count. An empty history gives TR = 0, never NaN. IDs are raw int64, hashed inside.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from duet_sdk.models.config import HashConfig, TargetAttentionConfig
from duet_sdk.models.embeddings import MultiHashEmbedding

# Score of a padded (invalid) behaviour: below any real score, finite so no softmax ever sees -inf.
MASKED_SCORE = -1e9


class TargetAttention(nn.Module):
    """DARE / TWIN target attention.

    Args:
        history_ids: (U, T, F) int64, F = len(config.fields), left-padded; history_len: (U,) int64.
        target_ids: (U, N, F) int64 candidate IDs.
    Returns:
        (U, N, d_repr) float32 target-aware representations.
    Example:
        >>> ta = TargetAttention(TargetAttentionConfig(max_len=8, top_k=2, d_repr=4, table_size=64))
        >>> ta(torch.randint(0, 99, (3, 8, 2)), torch.tensor([8, 2, 0]), torch.randint(0, 99, (3, 5, 2))).shape
        torch.Size([3, 5, 4])
    """

    def __init__(self, config: TargetAttentionConfig, seed: int = 31) -> None:
        super().__init__()
        self.config = config
        f, d_att, d_repr = len(config.fields), config.attention_dim, config.d_repr
        hashing = lambda dim: HashConfig(num_hashes=config.num_hashes, table_size=config.table_size, dim=dim // f)  # noqa: E731
        self.repr_table = MultiHashEmbedding(f, hashing(d_repr), seed=seed)
        # dare: its own attention table; twin / twin_proj: attention reads the representation table.
        self.att_table = MultiHashEmbedding(f, hashing(d_att), seed=seed + 1) if config.variant == "dare" else None
        self.att_proj = nn.Linear(d_repr, d_att, bias=False) if config.variant == "twin_proj" else None
        self.repr_proj = nn.Linear(d_repr, d_repr, bias=False) if config.variant == "twin_proj" else None
        self.scale = 1.0 / math.sqrt(d_att)

    def embed(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., F) int64 -> (attention (..., d_att), representation (..., d_repr))."""
        shared = self.repr_table(ids).flatten(-2)  # (..., d_repr)
        if self.att_table is not None:
            return self.att_table(ids).flatten(-2), shared
        if self.att_proj is not None and self.repr_proj is not None:
            return self.att_proj(shared), self.repr_proj(shared)
        return shared, shared

    def embed_attention(self, ids: torch.Tensor) -> torch.Tensor:
        """(..., F) int64 -> (..., d_att): the attention embedding alone (what the search stage reads)."""
        if self.att_table is not None:
            return self.att_table(ids).flatten(-2)
        shared = self.repr_table(ids).flatten(-2)
        return self.att_proj(shared) if self.att_proj is not None else shared

    def valid_mask(self, history_ids: torch.Tensor, history_len: torch.Tensor) -> torch.Tensor:
        """(U, T) bool: the real events among the most recent ``max_len`` columns (left padding and
        older events are masked, not sliced, so no shape-dependent branch reaches trace or export)."""
        width = history_ids.shape[1]
        slot = torch.arange(width, device=history_ids.device).unsqueeze(0)  # (1, T)
        kept = history_len.clamp(max=self.config.max_len)  # (U,)
        return slot >= (width - kept).unsqueeze(1)  # (U, T); len > T keeps all T

    def scores(self, att_history: torch.Tensor, valid: torch.Tensor, att_target: torch.Tensor) -> torch.Tensor:
        """(U, N, T) scaled dot products in the attention space; padding scores ``MASKED_SCORE``."""
        scores = torch.matmul(att_target, att_history.transpose(1, 2)) * self.scale  # (U, N, T)
        return scores.masked_fill(~valid.unsqueeze(1), MASKED_SCORE)

    def search(
        self, att_history: torch.Tensor, valid: torch.Tensor, att_target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k behaviours per candidate.

        Args:
            att_history: (U, T, d_att); valid: (U, T) bool; att_target: (U, N, d_att).
        Returns:
            scores (U, N, k), index (U, N, k) into the history, selected (U, N, k) bool (a real
            behaviour, not padding). Padding is prepended with k masked slots, so k behaviours always
            exist; their index is -1.
        """
        k = self.config.top_k
        scores = nn.functional.pad(
            self.scores(att_history, valid, att_target), (k, 0), value=MASKED_SCORE
        )  # (U, N, k + T)
        top, index = scores.topk(k, dim=-1)  # (U, N, k)
        selected = top > MASKED_SCORE / 2
        return top, torch.where(selected, index - k, -1), selected

    def full_attention(
        self, history_ids: torch.Tensor, history_len: torch.Tensor, target_ids: torch.Tensor
    ) -> torch.Tensor:
        """The auxiliary training view: TR with a softmax over *every* valid behaviour (no search).

        Same inputs as ``forward``; returns (U, N, d_repr); an empty history gives 0."""
        valid = self.valid_mask(history_ids, history_len)  # (U, T)
        att_history, repr_history = self.embed(history_ids)
        att_target, repr_target = self.embed(target_ids)
        scores = self.scores(att_history, valid, att_target)  # (U, N, T)
        weights = torch.softmax(scores, dim=-1) * valid.unsqueeze(1).to(scores.dtype)  # all-padding rows -> 0
        return torch.matmul(weights, repr_history) * repr_target  # (U, N, d_repr)

    def forward(self, history_ids: torch.Tensor, history_len: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        valid = self.valid_mask(history_ids, history_len)  # (U, T)
        att_history, repr_history = self.embed(history_ids)  # (U, T, d_att), (U, T, d_repr): once per user
        att_target, repr_target = self.embed(target_ids)  # (U, N, d_att), (U, N, d_repr)
        top, index, selected = self.search(att_history, valid, att_target)  # (U, N, k)
        weights = torch.softmax(top, dim=-1) * selected.to(top.dtype)  # (U, N, k); all-padding rows -> 0
        # Gather the retrieved rows from the users' flattened tables; row 0 of each user's block is zeros
        # for the index -1 (padding), so even an empty (T = 0) history gathers safely.
        table = nn.functional.pad(repr_history, (0, 0, 1, 0))  # (U, 1 + T, d_repr)
        offsets = torch.arange(table.shape[0], device=table.device).view(-1, 1, 1) * table.shape[1]  # (U, 1, 1)
        retrieved = nn.functional.embedding(index + 1 + offsets, table.flatten(0, 1))  # (U, N, k, d_repr)
        pooled = torch.matmul(weights.unsqueeze(-2), retrieved).squeeze(-2)  # (U, N, d_repr)
        return pooled * repr_target  # (U, N, d_repr): TR = sum_i w_i (e_i * v_t)
