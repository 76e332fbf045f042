"""Frequency-aware handling of rare IDs during training.

IDs seen fewer than ``min_count`` times in the training data are, with probability ``dropout`` per
occurrence in a training batch, replaced by the reserved raw ID ``UNKNOWN_ID``. The model then learns
one "rare/unknown ID" embedding instead of memorising a row per rare ID from a handful of labels, and
leans on behaviour and coarse attributes for the long tail. Nothing changes at serving: no vocabulary
is needed, and an ID never seen in training hashes into table rows that embedding weight decay keeps
small. Only training batches are touched; validation sees the raw IDs, as serving does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from duet_sdk.data import schema as keys
from duet_sdk.data.events import EventTable, ExampleSet

UNKNOWN_ID = -1


@dataclass
class IdCounts:
    """Occurrences of each raw ID of one field: ``ids`` (M,) sorted unique int64, ``counts`` (M,)."""

    ids: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> IdCounts:
        ids, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
        return cls(ids, counts)

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """(...,) counts of ``values`` (...,); 0 for IDs never seen."""
        if not len(self.ids):
            return np.zeros(values.shape, dtype=np.int64)
        where = np.clip(np.searchsorted(self.ids, values), 0, len(self.ids) - 1)
        return np.where(self.ids[where] == values, self.counts[where], 0)


class RareIdDropout:
    """Batch transform: replaces rare IDs of ``fields`` by ``UNKNOWN_ID`` with probability ``dropout``.

    Counts come from the training rows: their candidates' IDs, their users' static IDs, and the events
    of their users before the last training request time (what a trainer could have seen).

    Args:
        table, examples: the training data; fields: ID field names (event, item and static fields share
        one count per name, e.g. ``item_id`` in histories and candidates).
    """

    def __init__(
        self,
        table: EventTable,
        examples: ExampleSet,
        fields: tuple[str, ...],
        min_count: int,
        dropout: float,
        seed: int = 0,
    ) -> None:
        schema = table.schema
        self.min_count, self.dropout = min_count, dropout
        self.rng = np.random.default_rng(seed)
        cutoff = int(examples.request_time.max(initial=0))
        users = np.unique(examples.user_index)
        self.event_columns = {f: schema.event_fields.index(f) for f in fields if f in schema.event_fields}
        self.item_columns = {f: schema.item_sparse.index(f) for f in fields if f in schema.item_sparse}
        self.static_columns = {f: schema.static_sparse.index(f) for f in fields if f in schema.static_sparse}
        values: dict[str, list[np.ndarray]] = {f: [] for f in fields}
        for f, c in self.item_columns.items():
            values[f].append(examples.item_sparse[:, c])
        for f, c in self.static_columns.items():
            values[f].append(table.static_sparse[users, c])
        for events in table.streams.values():
            owner = np.repeat(np.arange(table.num_users), np.diff(events.offsets))
            seen = np.isin(owner, users) & (events.timestamps < cutoff)
            for f, c in self.event_columns.items():
                values[f].append(events.ids[seen, c])
        self.counts = {f: IdCounts.of(np.concatenate(v)) for f, v in values.items() if v}

    def rare_fraction(self, field: str) -> float:
        """Fraction of ``field``'s distinct training IDs that count as rare."""
        counts = self.counts[field].counts
        return float(np.mean(counts < self.min_count)) if len(counts) else 0.0

    def _drop(self, values: torch.Tensor, field: str) -> torch.Tensor:
        raw = values.numpy()
        rare = self.counts[field].lookup(raw) < self.min_count
        hit = rare & (self.rng.random(raw.shape) < self.dropout)
        return torch.from_numpy(np.where(hit, UNKNOWN_ID, raw))

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(batch)
        for name, columns in ((keys.ITEM_SPARSE, self.item_columns), (keys.STATIC_SPARSE, self.static_columns)):
            if name in out and columns:
                tensor = out[name].clone()
                for f, c in columns.items():
                    tensor[..., c] = self._drop(tensor[..., c], f)
                out[name] = tensor
        for key in [k for k in out if k.endswith("_ids")]:
            tensor = out[key].clone()
            for f, c in self.event_columns.items():
                tensor[..., c] = self._drop(tensor[..., c], f)
            out[key] = tensor
        return out
