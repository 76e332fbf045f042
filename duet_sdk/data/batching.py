"""Padded tensor batches from an ``EventTable`` + ``ExampleSet``.

Histories are left-padded: position ``T - 1`` holds the most recent event, padding sits at the front,
and a history longer than the stream's ``max_len`` keeps its most recent ``max_len`` events.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from duet_sdk._extras import missing_extra

try:
    import torch
except ModuleNotFoundError as exc:  # the [train] extra is not installed
    raise missing_extra(exc, __name__) from exc

from duet_sdk.data import schema as keys
from duet_sdk.data.events import EventTable, ExampleSet

Batch = dict[str, torch.Tensor]
ACTIVITY_BUCKET = "activity_bucket"


def count_feature(stream: str) -> str:
    """Name of the static dense feature holding log1p of the user's ``stream`` history length."""
    return f"log_{stream}_count"


def static_features(table: EventTable, user: np.ndarray, request_time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, S) int64 static sparse and (B, D) float32 static dense features of rows at ``request_time``.

    History-count features are what a client sends at that time: ``log_<stream>_count`` is
    log1p(events of ``stream`` before the request) and ``activity_bucket`` floor(log2(1 + events of
    every stream)). The table's stored values count up to the user's training request, which on a
    global temporal split is earlier than the validation request. Other columns come from the table.
    """
    sparse = table.static_sparse[user].astype(np.int64)
    dense = table.static_dense[user].astype(np.float32)
    schema = table.schema
    counted = [
        (i, name) for name in schema.stream_names if (i := _index(schema.static_dense, count_feature(name))) is not None
    ]
    bucket = _index(schema.static_sparse, ACTIVITY_BUCKET)
    if not counted and bucket is None:
        return sparse, dense
    total = np.zeros(len(user), dtype=np.int64)
    for name in schema.stream_names:
        count = table.history_end(name, user, request_time) - table.streams[name].offsets[user]
        total += count
        for i, stream in counted:
            if stream == name:
                dense[:, i] = np.log1p(count)
    if bucket is not None:
        sparse[:, bucket] = np.floor(np.log2(1.0 + total))
    return sparse, dense


def _index(names: tuple[str, ...], name: str) -> int | None:
    return names.index(name) if name in names else None


def pad_stream(
    ids: np.ndarray, timestamps: np.ndarray, start: np.ndarray, end: np.ndarray, width: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gather events ``[start, end)`` of each row into left-padded arrays.

    Args:
        ids: (N, F) int64 all events; timestamps: (N,) int64.
        start, end: (B,) int64 event ranges per row.
        width: T; defaults to the longest range (at least 1).
    Returns:
        ids (B, T, F) int64, timestamps (B, T) int64, lengths (B,) int64; padding is 0.
    """
    lengths = (end - start).astype(np.int64)
    width = max(1, int(lengths.max(initial=0))) if width is None else width
    lengths = np.minimum(lengths, width)
    slot = np.arange(width, dtype=np.int64)
    position = end[:, None] - width + slot[None, :]  # (B, T)
    valid = slot[None, :] >= (width - lengths)[:, None]  # (B, T)
    safe = np.where(valid, position, 0)
    out_ids = np.where(valid[..., None], ids[safe] if len(ids) else 0, 0)
    out_ts = np.where(valid, timestamps[safe] if len(timestamps) else 0, 0)
    return out_ids.astype(np.int64), out_ts.astype(np.int64), lengths


def collate(table: EventTable, examples: ExampleSet, index: np.ndarray, pad_to_max: bool = False) -> Batch:
    """Batch of rows ``index``: every stream's padded history plus static, item and label tensors.

    With ``pad_to_max`` each stream is padded to its ``max_len`` instead of the batch's longest.
    """
    user = examples.user_index[index]
    request_time = examples.request_time[index]
    static_sparse, static_dense = static_features(table, user, request_time)
    batch: Batch = {
        keys.REQUEST_TIME: torch.from_numpy(request_time.astype(np.int64)),
        keys.STATIC_SPARSE: torch.from_numpy(static_sparse),
        keys.STATIC_DENSE: torch.from_numpy(static_dense),
        keys.ITEM_SPARSE: torch.from_numpy(examples.item_sparse[index]),
        keys.ITEM_DENSE: torch.from_numpy(examples.item_dense[index].astype(np.float32)),
        "labels": torch.from_numpy(examples.labels[index].astype(np.float32)),
        "label_mask": torch.from_numpy(examples.label_mask[index].astype(np.float32)),
    }
    for spec in table.schema.streams:
        events = table.streams[spec.name]
        end = table.history_end(spec.name, user, request_time)
        start = np.maximum(events.offsets[user], end - spec.max_len)
        ids, ts, lengths = pad_stream(events.ids, events.timestamps, start, end, spec.max_len if pad_to_max else None)
        batch[keys.ids_key(spec.name)] = torch.from_numpy(ids)
        batch[keys.ts_key(spec.name)] = torch.from_numpy(ts)
        batch[keys.len_key(spec.name)] = torch.from_numpy(lengths)
    return batch


def iterate_batches(
    table: EventTable, examples: ExampleSet, batch_size: int, shuffle: bool = False, seed: int = 0
) -> Iterator[Batch]:
    """Yield batches covering every row once (shuffled deterministically by ``seed`` if asked)."""
    order = np.random.default_rng(seed).permutation(len(examples)) if shuffle else np.arange(len(examples))
    for lo in range(0, len(order), batch_size):
        yield collate(table, examples, order[lo : lo + batch_size])


@dataclass(frozen=True)
class HistorySpec:
    """The ranker's target-attention history: the last ``max_len`` events of ``stream`` before the
    request, ID columns ``columns`` of the stream's packed rows."""

    stream: str
    columns: tuple[int, ...]
    max_len: int


def history_tensors(
    table: EventTable, user: np.ndarray, request_time: np.ndarray, spec: HistorySpec, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded (B, T, len(columns)) int64 IDs and (B,) int64 lengths, T = ``width`` or the batch's
    longest (at most ``max_len``; at least 1)."""
    events = table.streams[spec.stream]
    end = table.history_end(spec.stream, user, request_time)
    start = np.maximum(events.offsets[user], end - spec.max_len)
    ids, _, lengths = pad_stream(events.ids, events.timestamps, start, end, width)
    return np.ascontiguousarray(ids[..., list(spec.columns)]), lengths


def collate_ranker(
    table: EventTable,
    examples: ExampleSet,
    index: np.ndarray,
    features: dict[str, np.ndarray],
    history: HistorySpec | None = None,
) -> Batch:
    """Pointwise ranker batch: static user features, one candidate per row (B, 1, ...), per-row
    upstream features (``features[key]`` (E, ...), e.g. SIDE codes or float embeddings) and, with
    ``history``, the user's recent history at the row's request time (``history_ids``, ``history_len``)."""
    user = examples.user_index[index]
    static_sparse, static_dense = static_features(table, user, examples.request_time[index])
    batch: Batch = {
        keys.STATIC_SPARSE: torch.from_numpy(static_sparse),
        keys.STATIC_DENSE: torch.from_numpy(static_dense),
        keys.ITEM_SPARSE: torch.from_numpy(examples.item_sparse[index][:, None, :]),
        keys.ITEM_DENSE: torch.from_numpy(examples.item_dense[index][:, None, :].astype(np.float32)),
        "labels": torch.from_numpy(examples.labels[index].astype(np.float32)),
        "label_mask": torch.from_numpy(examples.label_mask[index].astype(np.float32)),
    }
    batch.update({key: torch.from_numpy(values[index]) for key, values in features.items()})
    if history is not None:
        ids, lengths = history_tensors(table, user, examples.request_time[index], history)
        batch[keys.HISTORY_IDS], batch[keys.HISTORY_LEN] = torch.from_numpy(ids), torch.from_numpy(lengths)
    return batch
