"""Downstream ranker (DLRM style) that consumes ClickAUE / ConvAUE as SIDE codes (DUET §3.3, §4.3).

Listwise: one row per user with N candidates. The batch dict holds
``static_sparse`` (U, S) int64, ``static_dense`` (U, D) float32, ``item_sparse`` (U, N, I) int64,
``item_dense`` (U, N, J) float32 and, per consumed embedding ``e``, either ``<e>_codes`` (U, L) int64
(decoded by the rule ``sum of codewords`` with frozen codebooks) or ``<e>_embedding`` (U, E) float32.
User-side features are computed once per user and broadcast over the N candidates.
With ``config.target_attention`` the batch also holds the user's recent raw history
``history_ids`` (U, T, F') int64 (the target-attention fields, left-padded) and ``history_len`` (U,)
int64; each candidate then gets one more feature vector, its target-aware representation.
"""

from __future__ import annotations

import torch
from torch import nn

from duet_sdk.data import schema as keys
from duet_sdk.models.config import RankerConfig
from duet_sdk.models.embeddings import MultiHashEmbedding
from duet_sdk.models.layers import MLP, CrossNetV2, RMSNorm
from duet_sdk.models.target_attention import TargetAttention
from duet_sdk.side import SideDecoder


def codes_key(name: str) -> str:
    """Batch key of an embedding's SIDE codes (U, L)."""
    return f"{name}_codes"


def embedding_key(name: str) -> str:
    """Batch key of an embedding's float vector (U, E)."""
    return f"{name}_embedding"


class Ranker(nn.Module):
    """DLRM: feature vectors of static user features, decoded and projected user embeddings and the
    candidate; their pairwise dot products; then RMSNorm -> DCNv2 -> overarch -> heads.

    Args:
        batch: dict as in the module docstring. Returns logits (U, N, K), K = len(config.tasks).
    Example:
        >>> ranker = Ranker(config)  # doctest: +SKIP
        >>> ranker(batch).shape  # doctest: +SKIP
        torch.Size([U, N, K])
    """

    def __init__(self, config: RankerConfig) -> None:
        super().__init__()
        self.config = config
        schema, d = config.schema, config.d_feature
        self.embedding_names = tuple(e.name for e in config.embeddings)
        self.use_codes = config.embedding_input == "codes"
        self.user_sparse = MultiHashEmbedding(len(schema.static_sparse), config.hashing, seed=11)
        self.user_sparse_proj = nn.Linear(config.hashing.dim, d)
        self.user_dense = nn.Linear(len(schema.static_dense), d) if schema.static_dense else None
        self.decoders = nn.ModuleDict(
            {e.name: SideDecoder(torch.zeros(e.levels, e.codebook_size, e.dim)) for e in config.embeddings}
            if self.use_codes
            else {}
        )
        self.projections = nn.ModuleDict(
            {e.name: MLP((e.dim, *config.projection_hidden, d)) for e in config.embeddings}
        )
        self.item_sparse = MultiHashEmbedding(len(schema.item_sparse), config.hashing, seed=12)
        self.item_sparse_proj = nn.Linear(config.hashing.dim, d)
        self.item_dense = nn.Linear(len(schema.item_dense), d) if schema.item_dense else None
        ta = config.target_attention
        self.target_attention = TargetAttention(ta) if ta is not None else None
        self.target_attention_proj = nn.Linear(ta.d_repr, d) if ta is not None else None
        # Columns of item_sparse that hold the candidate's target-attention fields.
        columns = [schema.item_sparse.index(f) for f in ta.fields] if ta is not None else []
        self.register_buffer("target_columns", torch.tensor(columns, dtype=torch.int64), persistent=False)
        num_user = len(schema.static_sparse) + (1 if schema.static_dense else 0) + len(config.embeddings)
        num_tokens = num_user + len(schema.item_sparse) + (1 if schema.item_dense else 0) + (1 if ta is not None else 0)
        pairs = torch.triu_indices(num_tokens, num_tokens, offset=1)
        self.register_buffer("pair_index", pairs[0] * num_tokens + pairs[1], persistent=False)  # (P,)
        width = num_tokens * d + pairs.shape[1]
        self.norm = RMSNorm(width)
        self.interaction = CrossNetV2(width, config.dcn_layers)
        self.overarch = MLP((width, *config.overarch_hidden))
        self.heads = nn.Linear(config.overarch_hidden[-1], len(config.tasks))
        # Training-only head of the auxiliary full-history attention (last, so the other layers'
        # initialisation does not depend on it).
        aux = ta is not None and ta.aux_loss_weight > 0
        self.target_attention_aux = nn.Linear(ta.d_repr, len(config.tasks)) if aux else None

    def user_embedding(self, batch: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """The (U, E) float embedding ``name``: decoded from SIDE codes, or as given."""
        if self.use_codes:
            return self.decoders[name](batch[codes_key(name)])
        return batch[embedding_key(name)]

    def user_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(U, num_user, d) feature vectors: computed once per user."""
        tokens = [self.user_sparse_proj(self.user_sparse(batch[keys.STATIC_SPARSE]))]  # (U, S, d)
        if self.user_dense is not None:
            tokens.append(self.user_dense(batch[keys.STATIC_DENSE]).unsqueeze(1))  # (U, 1, d)
        for name, projection in self.projections.items():
            tokens.append(projection(self.user_embedding(batch, name)).unsqueeze(1))  # (U, 1, d)
        return torch.cat(tokens, dim=1)

    def item_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(U, N, num_item, d) feature vectors."""
        tokens = [self.item_sparse_proj(self.item_sparse(batch[keys.ITEM_SPARSE]))]  # (U, N, I, d)
        if self.item_dense is not None:
            tokens.append(self.item_dense(batch[keys.ITEM_DENSE]).unsqueeze(2))  # (U, N, 1, d)
        if self.target_attention is not None and self.target_attention_proj is not None:
            targets = batch[keys.ITEM_SPARSE].index_select(-1, self.target_columns)  # (U, N, F')
            tr = self.target_attention(batch[keys.HISTORY_IDS], batch[keys.HISTORY_LEN], targets)  # (U, N, d_repr)
            tokens.append(self.target_attention_proj(tr).unsqueeze(2))  # (U, N, 1, d)
        return torch.cat(tokens, dim=2)

    def auxiliary_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(U, N, K) logits of the auxiliary head on the full-history attention (training only)."""
        if self.target_attention is None or self.target_attention_aux is None:
            raise ValueError("this ranker has no auxiliary target-attention head (aux_loss_weight is 0)")
        targets = batch[keys.ITEM_SPARSE].index_select(-1, self.target_columns)  # (U, N, F')
        tr = self.target_attention.full_attention(batch[keys.HISTORY_IDS], batch[keys.HISTORY_LEN], targets)
        return self.target_attention_aux(tr)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        user = self.user_features(batch)  # (U, n_u, d)
        items = self.item_features(batch)  # (U, N, n_i, d)
        tokens = torch.cat([user.unsqueeze(1).expand(-1, items.shape[1], -1, -1), items], dim=2)  # (U, N, n, d)
        dots = torch.matmul(tokens, tokens.transpose(-1, -2)).flatten(-2).index_select(-1, self.pair_index)  # (U, N, P)
        x = torch.cat([tokens.flatten(-2), dots], dim=-1)  # (U, N, n*d + P)
        hidden = self.overarch(self.interaction(self.norm(x)))  # (U, N, H)
        return self.heads(torch.relu(hidden))  # (U, N, K)


class Pointwise(nn.Module):
    """Training view of a ranker: one candidate per row. (B, 1, ...) inputs -> (B, K) logits."""

    def __init__(self, ranker: Ranker) -> None:
        super().__init__()
        self.ranker = ranker

    @property
    def auxiliary_weight(self) -> float:
        """Weight of the auxiliary loss in training (0: none)."""
        ta = self.ranker.config.target_attention
        return ta.aux_loss_weight if ta is not None else 0.0

    def auxiliary_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, K) logits of the ranker's auxiliary head."""
        return self.ranker.auxiliary_logits(batch)[:, 0]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.ranker(batch)[:, 0]
