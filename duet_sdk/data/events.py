"""Columnar containers for users' event histories and for labelled training examples.

``EventTable`` holds every user's streams as ragged arrays (one flat array per stream plus
per-user offsets, events sorted by time within a user). ``ExampleSet`` holds (user, request time,
candidate item, labels) rows that point into an ``EventTable``; a batch's history for a row is the
user's events strictly before its request time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duet_sdk.data.schema import EventSchema
from duet_sdk.data.spill import release
from duet_sdk.errors import DataError

MAX_TIMESTAMP = 2**32  # timestamps are Unix seconds in [0, 2**32)
_BLOCK = 1 << 22


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise DataError(message)


@dataclass
class StreamEvents:
    """One stream for all users: ``offsets`` (U+1,), ``timestamps`` (N,) int64, ``ids`` (N, F) int64."""

    offsets: np.ndarray
    timestamps: np.ndarray
    ids: np.ndarray

    def validate(self, name: str, num_users: int, num_fields: int) -> None:
        n = len(self.timestamps)
        _require(
            self.offsets.shape == (num_users + 1,),
            f"{name}.offsets: expected shape ({num_users + 1},), got {self.offsets.shape}",
        )
        _require(self.offsets[0] == 0 and self.offsets[-1] == n, f"{name}.offsets: expected to span 0..{n}")
        _require(bool(np.all(np.diff(self.offsets) >= 0)), f"{name}.offsets: expected non-decreasing")
        _require(
            self.ids.shape == (n, num_fields), f"{name}.ids: expected shape ({n}, {num_fields}), got {self.ids.shape}"
        )
        _require(
            self.timestamps.dtype == np.int64 and self.ids.dtype == np.int64,
            f"{name}: expected int64 timestamps and ids",
        )
        ends = self.offsets[1:-1] - 1  # the last event of each user but the final one
        for lo in range(0, n, _BLOCK):  # in blocks: the arrays may be memory-mapped and large
            ts = np.asarray(self.timestamps[lo : min(n, lo + _BLOCK + 1)])
            _require(
                bool(ts.min() >= 0 and ts.max() < MAX_TIMESTAMP),
                f"{name}.timestamps: expected Unix seconds in [0, 2**32)",
            )
            descending = lo + np.flatnonzero(np.diff(ts) < 0)
            _require(
                bool(np.isin(descending, ends).all()), f"{name}.timestamps: expected sorted by time within each user"
            )
        release(self.timestamps)  # a memory-mapped stream keeps no pages resident for this check

    @classmethod
    def from_lists(cls, per_user: list[list[tuple[int, list[int]]]], num_fields: int) -> StreamEvents:
        """Build from ``per_user[u] = [(timestamp, id_row), ...]`` (sorted here, stable)."""
        counts = [len(events) for events in per_user]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        rows = [sorted(events, key=lambda e: e[0]) for events in per_user]
        flat = [e for events in rows for e in events]
        timestamps = np.array([e[0] for e in flat], dtype=np.int64)
        ids = np.array([e[1] for e in flat], dtype=np.int64).reshape(len(flat), num_fields)
        return cls(offsets, timestamps, ids)


@dataclass
class EventTable:
    """Users' static features and event streams.

    Args:
        user_ids: (U,) int64 raw user IDs.
        static_sparse: (U, S) int64 raw IDs, S = len(schema.static_sparse).
        static_dense: (U, D) float32, D = len(schema.static_dense).
        streams: stream name -> ``StreamEvents`` for every stream of the schema.
    """

    schema: EventSchema
    user_ids: np.ndarray
    static_sparse: np.ndarray
    static_dense: np.ndarray
    streams: dict[str, StreamEvents]

    def __post_init__(self) -> None:
        u = len(self.user_ids)
        s = self.schema
        _require(
            self.static_sparse.shape == (u, len(s.static_sparse)),
            f"static_sparse: expected shape ({u}, {len(s.static_sparse)}), got {self.static_sparse.shape}",
        )
        _require(
            self.static_dense.shape == (u, len(s.static_dense)),
            f"static_dense: expected shape ({u}, {len(s.static_dense)}), got {self.static_dense.shape}",
        )
        _require(
            set(self.streams) == set(s.stream_names),
            f"streams: expected {sorted(s.stream_names)}, got {sorted(self.streams)}",
        )
        for name, events in self.streams.items():
            events.validate(name, u, len(s.event_fields))

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    def history_end(self, stream: str, user_index: np.ndarray, request_time: np.ndarray) -> np.ndarray:
        """(E,) index one past each user's last ``stream`` event strictly before ``request_time``.

        A binary search within each user's range, vectorised over rows: no array of the stream's length
        is built, so a memory-mapped stream is only read where the search looks."""
        events = self.streams[stream]
        lo = events.offsets[user_index].astype(np.int64)
        hi = events.offsets[np.asarray(user_index) + 1].astype(np.int64)
        while True:
            active = lo < hi
            if not active.any():
                return lo
            mid = (lo + hi) // 2
            before = active & (events.timestamps[np.where(active, mid, 0)] < request_time)
            lo = np.where(before, mid + 1, lo)
            hi = np.where(active & ~before, mid, hi)


@dataclass
class ExampleSet:
    """Labelled (user, candidate) rows.

    Args:
        tasks: task names, one label column each.
        user_index: (E,) int64 rows of the ``EventTable``.
        request_time: (E,) int64 Unix seconds; history is what happened strictly before.
        item_sparse: (E, I) int64 raw candidate IDs; item_dense: (E, J) float32.
        labels: (E, K) float32 in {0, 1}; label_mask: (E, K) float32, 1 where the task applies.
        synthetic: (E,) bool, rows made from unattributed conversions.
        downsample_rate: w, the fraction of negatives kept (1.0 = none dropped).
    """

    tasks: tuple[str, ...]
    user_index: np.ndarray
    request_time: np.ndarray
    item_sparse: np.ndarray
    item_dense: np.ndarray
    labels: np.ndarray
    label_mask: np.ndarray
    synthetic: np.ndarray
    downsample_rate: float = 1.0

    def __post_init__(self) -> None:
        e, k = len(self.user_index), len(self.tasks)
        for name in ("request_time", "item_sparse", "item_dense", "synthetic"):
            _require(len(getattr(self, name)) == e, f"{name}: expected {e} rows, got {len(getattr(self, name))}")
        _require(self.labels.shape == (e, k), f"labels: expected shape ({e}, {k}), got {self.labels.shape}")
        _require(self.label_mask.shape == (e, k), f"label_mask: expected shape ({e}, {k}), got {self.label_mask.shape}")
        _require(0.0 < self.downsample_rate <= 1.0, f"downsample_rate: expected in (0, 1], got {self.downsample_rate}")

    def __len__(self) -> int:
        return len(self.user_index)

    def subset(self, index: np.ndarray) -> ExampleSet:
        """The rows at ``index`` (same tasks and downsample rate)."""
        return ExampleSet(
            tasks=self.tasks,
            user_index=self.user_index[index],
            request_time=self.request_time[index],
            item_sparse=self.item_sparse[index],
            item_dense=self.item_dense[index],
            labels=self.labels[index],
            label_mask=self.label_mask[index],
            synthetic=self.synthetic[index],
            downsample_rate=self.downsample_rate,
        )

    def positive_rate(self) -> dict[str, float]:
        """Per task, the fraction of applicable rows with label 1."""
        denom = np.maximum(self.label_mask.sum(0), 1.0)
        return {t: float(r) for t, r in zip(self.tasks, (self.labels * self.label_mask).sum(0) / denom)}


@dataclass
class EventDataset:
    """Every user's streams (``table``), the routed train/validation examples of both training streams,
    and the downstream ranker's train/validation rows."""

    schema: EventSchema
    table: EventTable
    click_train: ExampleSet
    click_val: ExampleSet
    conv_train: ExampleSet
    conv_val: ExampleSet
    ranker_train: ExampleSet
    ranker_val: ExampleSet
