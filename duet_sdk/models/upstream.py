"""Upstream networks: ``UserEncoder`` (the serving part) and ``UpstreamNet`` (encoder + training-only parts).

ClickAUN stacks self-attention blocks; ConvAUN interleaves cross- and self-attention (DUET §3.2).
The encoder reads a batch dict with, per stream s in ``config.streams``, ``s_ids`` (B, T, F) int64,
``s_ts`` (B, T) int64 and ``s_len`` (B,) int64, plus ``static_sparse`` (B, S) int64,
``static_dense`` (B, D) float32 and ``request_time`` (B,) int64.

``UserEncoder.forward`` is ``encode(prepare(batch))``: ``prepare`` holds all int64 arithmetic (ID
hashing into table rows, event ages and time of day), ``encode`` only looks rows up and runs float
layers. The gpu target exports the two halves as separate models (``duet_sdk.export.prep``).
"""

from __future__ import annotations

import torch
from torch import nn

from duet_sdk.data import schema as keys
from duet_sdk.models.config import UpstreamConfig
from duet_sdk.models.embeddings import MultiHashEmbedding
from duet_sdk.models.layers import MLP, CrossNetV2, RMSNorm
from duet_sdk.models.tower import EventTower, valid_from_lengths

STATIC_SLOTS = "static_slots"


def slots_key(stream: str) -> str:
    """Prepared key: table rows of a stream's event IDs (B, T, F, H)."""
    return f"{stream}_slots"


def time_key(stream: str) -> str:
    """Prepared key: a stream's time features (B, T, time_features) float32."""
    return f"{stream}_time"


def count_key(stream: str) -> str:
    """Prepared key: a stream's number of real events (B,), in [0, T]."""
    return f"{stream}_count"


class StaticTokens(nn.Module):
    """Static user features as query tokens: one per sparse ID, one for the dense vector, learned seeds.

    Args:
        sparse: (B, S) int64; dense: (B, D) float32. Returns (B, Q, d), Q = config.num_query_tokens.
    """

    def __init__(self, config: UpstreamConfig) -> None:
        super().__init__()
        d, schema = config.d_model, config.schema
        self.embedding = MultiHashEmbedding(len(schema.static_sparse), config.hashing, seed=2)
        self.sparse_proj = nn.Linear(config.hashing.dim, d)
        self.field = nn.Parameter(torch.zeros(len(schema.static_sparse), d))
        self.dense_proj = nn.Linear(len(schema.static_dense), d) if schema.static_dense else None
        self.seeds = nn.Parameter(torch.randn(config.num_seed_tokens, d) * 0.02)
        self.norm = RMSNorm(d)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.from_slots(self.embedding.slots(sparse), dense)

    def from_slots(self, slots: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """``forward`` after hashing: slots (B, S, H) table rows (int32 or int64), dense (B, D)."""
        b = slots.shape[0]
        tokens = [self.sparse_proj(self.embedding.lookup(slots)) + self.field]  # (B, S, d)
        if self.dense_proj is not None:
            tokens.append(self.dense_proj(dense).unsqueeze(1))  # (B, 1, d)
        tokens.append(self.seeds.unsqueeze(0).expand(b, -1, -1))  # (B, n_seed, d)
        return self.norm(torch.cat(tokens, dim=1))


class UserSummarizer(nn.Module):
    """DCN user summarization: concatenated tower outputs -> cross layers -> MLP -> user embedding.

    Args:
        towers: (B, n_towers * tower_out_dim). Returns (B, embedding_dim).
    """

    def __init__(self, in_dim: int, num_layers: int, embedding_dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(in_dim)
        self.cross = CrossNetV2(in_dim, num_layers)
        self.mlp = MLP((in_dim, max(in_dim, embedding_dim), embedding_dim))

    def forward(self, towers: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.cross(self.norm(towers)))


class UserEncoder(nn.Module):
    """Static embeddings + event towers + DCN summarizer: events -> user embedding (ClickAUE / ConvAUE).

    Args:
        batch: dict of tensors as in the module docstring. Returns (B, embedding_dim).
    Example:
        >>> encoder = UserEncoder(config)  # doctest: +SKIP
        >>> encoder(batch).shape  # doctest: +SKIP
        torch.Size([B, config.embedding_dim])
    """

    def __init__(self, config: UpstreamConfig) -> None:
        super().__init__()
        self.streams = tuple(config.streams)
        self.static = StaticTokens(config)
        self.event_embedding = MultiHashEmbedding(len(config.schema.event_fields), config.hashing, seed=1)
        self.towers = nn.ModuleDict({name: EventTower(config) for name in config.streams})
        self.summarizer = UserSummarizer(
            len(config.streams) * config.tower_out_dim, config.dcn_layers, config.embedding_dim
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encode(self.prepare(batch) | {keys.STATIC_DENSE: batch[keys.STATIC_DENSE]})  # (B, embedding_dim)

    def prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """All int64 arithmetic of the encoder (``static_dense`` is not needed): raw inputs ->
        ``static_slots`` (B, S, H) and per stream ``<s>_slots`` (B, T, F, H) int64 rows in [0, table
        rows), ``<s>_time`` (B, T, K) float32 in [-5, 5], ``<s>_count`` (B,) int64 in [0, T]."""
        request_time = batch[keys.REQUEST_TIME]
        out = {STATIC_SLOTS: self.static.embedding.slots(batch[keys.STATIC_SPARSE])}
        for name, tower in self.towers.items():
            ids = batch[keys.ids_key(name)]  # (B, T, F)
            out[slots_key(name)] = self.event_embedding.slots(ids)  # (B, T, F, H)
            out[time_key(name)] = tower.time.features(request_time, batch[keys.ts_key(name)])  # (B, T, K)
            out[count_key(name)] = valid_from_lengths(batch[keys.len_key(name)], ids.shape[1]).sum(1)  # (B,)
        return out

    def encode(self, prepared: dict[str, torch.Tensor]) -> torch.Tensor:
        """``prepare``'s outputs (slots and counts int32 or int64) plus ``static_dense`` -> (B, embedding_dim);
        lookups and float layers only."""
        static = self.static.from_slots(prepared[STATIC_SLOTS], prepared[keys.STATIC_DENSE])  # (B, Q, d)
        outputs = []
        for name, tower in self.towers.items():
            events = self.event_embedding.lookup(prepared[slots_key(name)]).flatten(2)  # (B, T, F*hash_dim)
            outputs.append(tower.encode(static, events, prepared[time_key(name)], prepared[count_key(name)]))
        return self.summarizer(torch.cat(outputs, dim=1))  # (B, embedding_dim)


class ItemBranch(nn.Module):
    """Training-only non-sequence branch: candidate item IDs + dense features -> (B, item_hidden[-1]).

    Candidate ID fields that events also carry (item, author, semantic codes, ...) are embedded with
    the encoder's event tables, so history and candidate share one ID space; other fields get their own.
    """

    def __init__(self, config: UpstreamConfig) -> None:
        super().__init__()
        schema = config.schema
        shared = [i for i, f in enumerate(schema.item_sparse) if f in schema.event_fields]
        own = [i for i, f in enumerate(schema.item_sparse) if f not in schema.event_fields]
        self.register_buffer("shared_columns", torch.tensor(shared, dtype=torch.int64))
        self.register_buffer(
            "shared_fields",
            torch.tensor([schema.event_fields.index(schema.item_sparse[i]) for i in shared], dtype=torch.int64),
        )
        self.register_buffer("own_columns", torch.tensor(own, dtype=torch.int64))
        self.own_embedding = MultiHashEmbedding(len(own), config.hashing, seed=3) if own else None
        in_dim = len(schema.item_sparse) * config.hashing.dim + len(schema.item_dense)
        self.mlp = MLP((in_dim, *config.item_hidden))

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor, event_embedding: MultiHashEmbedding) -> torch.Tensor:
        parts = [
            event_embedding(sparse.index_select(1, self.shared_columns), self.shared_fields).flatten(1)
        ]  # (B, I_s*dim)
        if self.own_embedding is not None:
            parts.append(self.own_embedding(sparse.index_select(1, self.own_columns)).flatten(1))
        return self.mlp(torch.cat([*parts, dense], dim=1))


class UpstreamNet(nn.Module):
    """ClickAUN / ConvAUN for pre-training: encoder + item branch + overarch + one logit per task.

    Args:
        batch: the encoder's tensors plus ``item_sparse`` (B, I) int64 and ``item_dense`` (B, J) float32.
    Returns:
        logits (B, K), K = len(config.tasks), in ``config.task_names`` order.
    """

    def __init__(self, config: UpstreamConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = UserEncoder(config)
        self.item_branch = ItemBranch(config)
        joint = config.embedding_dim + config.item_hidden[-1]
        self.overarch = nn.Sequential(
            RMSNorm(joint), CrossNetV2(joint, config.dcn_layers), MLP((joint, *config.overarch_hidden))
        )
        self.heads = nn.Linear(config.overarch_hidden[-1], len(config.tasks))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        user = self.encoder(batch)  # (B, E)
        item = self.item_branch(
            batch[keys.ITEM_SPARSE], batch[keys.ITEM_DENSE], self.encoder.event_embedding
        )  # (B, H_item)
        return self.heads(torch.relu(self.overarch(torch.cat([user, item], dim=1))))  # (B, K)
