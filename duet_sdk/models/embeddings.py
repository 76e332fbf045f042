"""Embeddings of raw int64 IDs (multi-hash, no vocabulary files) and of event time."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from duet_sdk.models.config import HashConfig

HASH_PRIME = 2_147_483_647  # 2**31 - 1: ids are reduced mod this, so (x * a + b) stays below 2**62
SECONDS_PER_DAY = 86_400


class MultiHashEmbedding(nn.Module):
    """Embeds F raw int64 ID fields, each by ``num_hashes`` universal hashes into small tables (summed).

    Any int64 is valid input (negative and never-seen IDs included); hash parameters are buffers so a
    checkpoint or exported model carries them.

    Args:
        ids: (..., F) int64. Returns (..., F, dim).
    Example:
        >>> emb = MultiHashEmbedding(2, HashConfig(num_hashes=2, table_size=64, dim=4), seed=0)
        >>> emb(torch.tensor([[7, -3]])).shape
        torch.Size([1, 2, 4])
    """

    def __init__(self, num_fields: int, config: HashConfig, seed: int) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        shape = (num_fields, config.num_hashes)
        self.table_size = config.table_size
        self.register_buffer("mult", torch.from_numpy(rng.integers(1, HASH_PRIME, size=shape, dtype=np.int64)))
        self.register_buffer("add", torch.from_numpy(rng.integers(0, HASH_PRIME, size=shape, dtype=np.int64)))
        offsets = np.arange(num_fields * config.num_hashes, dtype=np.int64).reshape(shape) * config.table_size
        self.register_buffer("offsets", torch.from_numpy(offsets))
        self.table = nn.Embedding(num_fields * config.num_hashes * config.table_size, config.dim)
        nn.init.normal_(self.table.weight, std=0.05)

    @property
    def num_rows(self) -> int:
        """Rows of the shared table: every slot is in [0, num_rows)."""
        return self.table.num_embeddings

    def slots(self, ids: torch.Tensor, fields: torch.Tensor | None = None) -> torch.Tensor:
        """The int64 arithmetic of the hashes: ids (..., F) int64 -> table rows (..., F, H) int64.

        ``fields`` (F',) int64 optionally says which of the F fields the columns of ``ids`` are.
        """
        mult, add, offsets = self.mult, self.add, self.offsets
        if fields is not None:
            mult, add, offsets = mult[fields], add[fields], offsets[fields]
        x = torch.remainder(ids, HASH_PRIME).unsqueeze(-1)  # (..., F, 1)
        slot = torch.remainder(torch.remainder(x * mult + add, HASH_PRIME), self.table_size)  # (..., F, H)
        return slot + offsets

    def lookup(self, slots: torch.Tensor) -> torch.Tensor:
        """Table rows (..., F, H) of any integer dtype -> summed embeddings (..., F, dim); no arithmetic.

        One gather per hash, added in order: the same sum as ``table(slots).sum(-2)``, but ONNX Runtime
        runs no ReduceSum over the small middle axis (a fixed ~0.3 ms per ranker request at L = 1000,
        ``benchmarks/dare_search.py --ort-profile``)."""
        total = self.table(slots[..., 0])
        for h in range(1, slots.shape[-1]):  # H is the config's num_hashes, fixed per model
            total = total + self.table(slots[..., h])
        return total

    def forward(self, ids: torch.Tensor, fields: torch.Tensor | None = None) -> torch.Tensor:
        """``lookup(slots(ids, fields))``."""
        return self.lookup(self.slots(ids, fields))


class TimeEncoding(nn.Module):
    """Dense encoding of event age relative to the request time, plus time of day.

    Features (``features``): log-age in minutes / 10, its sines/cosines at ``num_frequencies`` scales,
    and the sine and cosine of the event's time of day; all within [-5, 5] for any int64 input, so
    they hold in fp16. ``forward`` projects them linearly to ``d_model``.

    Args:
        request_time: (B,) int64 Unix seconds; timestamps: (B, T) int64. Returns (B, T, d_model).
    """

    def __init__(self, num_frequencies: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.logspace(-1.0, 1.0, num_frequencies))
        self.proj = nn.Linear(2 * num_frequencies + 3, d_model)

    @property
    def num_features(self) -> int:
        return self.proj.in_features

    def features(self, request_time: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        """The int64 arithmetic on time: (B,) and (B, T) int64 -> (B, T, num_features) float32."""
        age = (request_time.unsqueeze(1) - timestamps).clamp(min=0).to(torch.float32)  # (B, T)
        log_age = torch.log1p(age / 60.0).unsqueeze(-1)  # (B, T, 1), <= 40 for any int64 age
        phase = log_age * self.frequencies  # (B, T, K)
        day = torch.remainder(timestamps, SECONDS_PER_DAY).to(torch.float32).unsqueeze(-1) * (
            2 * torch.pi / SECONDS_PER_DAY
        )
        return torch.cat([log_age / 10.0, phase.sin(), phase.cos(), day.sin(), day.cos()], dim=-1)

    def forward(self, request_time: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(request_time, timestamps))
