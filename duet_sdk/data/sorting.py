"""Sort validated events by (user, time) and index users and items, in bounded memory.

Raw ids become dense codes (rows of the sorted unique ``user_ids`` / ``item_ids``); the sort is stable,
so events tied in time keep their order in the file. Columns are walked in blocks; the permutation
and the sort key are the only arrays of the log's length held in memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duet_sdk.data.events import MAX_TIMESTAMP
from duet_sdk.data.reader import EventColumns
from duet_sdk.data.spill import ArraySink, chunks
from duet_sdk.errors import DataError


@dataclass
class SortedEvents:
    """Events sorted by (user, time). Per event (N,): ``user`` / ``item`` int32 codes, ``extras`` (N, X)
    int64, ``behavior`` int8, ``ts`` int64 Unix s. ``offsets`` (U+1,) bound each user's events;
    ``user_ids`` (U,) and ``item_ids`` (I,) are the sorted raw ids; ``item_extras`` (I, X) holds each
    item's extra ids from its first row in the file."""

    user: np.ndarray
    item: np.ndarray
    extras: np.ndarray
    behavior: np.ndarray
    ts: np.ndarray
    offsets: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_extras: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """(K,) the distinct values of ``values`` (N,), sorted, computed block by block."""
    out = np.zeros(0, dtype=values.dtype)
    for c in chunks(len(values), 1 << 24):
        out = np.union1d(out, np.unique(values[c]))
    return out


def _first_extras(columns: EventColumns, item_ids: np.ndarray) -> np.ndarray:
    """(I, X) each item's extra ids from its first row in file order."""
    out = np.zeros((len(item_ids), columns.extras.shape[1]), dtype=np.int64)
    if out.shape[1] == 0:
        return out
    seen = np.zeros(len(item_ids), dtype=bool)
    for c in chunks(len(columns)):
        codes, first = np.unique(np.searchsorted(item_ids, columns.item[c]), return_index=True)
        new = ~seen[codes]
        out[codes[new]] = columns.extras[c][first[new]]
        seen[codes[new]] = True
    return out


def sort_events(columns: EventColumns, directory: Path | None) -> SortedEvents:
    """Index and sort ``columns`` (valid rows in file order); spill the sorted columns to ``directory``."""
    user_ids, item_ids = sorted_unique(columns.user), sorted_unique(columns.item)
    if len(user_ids) >= 2**31 or len(item_ids) >= 2**31:
        raise DataError(f"events: expected fewer than 2**31 distinct users and items, got {len(user_ids)} and {len(item_ids)}")
    item_extras = _first_extras(columns, item_ids)
    n = len(columns)
    key = np.empty(n, dtype=np.int64)  # user code in the high 32 bits, timestamp (< 2**32) in the low
    for c in chunks(n):
        key[c] = (np.searchsorted(user_ids, columns.user[c]).astype(np.int64) << 32) | columns.timestamp[c]
    order = np.argsort(key, kind="stable")
    sinks = {
        "user": ArraySink(directory, "sorted_user", np.int32),
        "ts": ArraySink(directory, "sorted_ts", np.int64),
        "item": ArraySink(directory, "sorted_item", np.int32),
        "extras": ArraySink(directory, "sorted_extras", np.int64, (columns.extras.shape[1],)),
        "behavior": ArraySink(directory, "sorted_behavior", np.int8),
    }
    counts = np.zeros(len(user_ids), dtype=np.int64)
    for c in chunks(n):
        k = key[order[c]]
        user = k >> 32
        sinks["user"].append(user)
        sinks["ts"].append(k & (MAX_TIMESTAMP - 1))
        counts += np.bincount(user, minlength=len(user_ids))
    del key
    for c in chunks(n):
        rows = order[c]
        sinks["item"].append(np.searchsorted(item_ids, columns.item[rows]))
        sinks["extras"].append(columns.extras[rows])
        sinks["behavior"].append(columns.behavior[rows])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    done = {name: sink.finish() for name, sink in sinks.items()}
    return SortedEvents(offsets=offsets, user_ids=user_ids, item_ids=item_ids, item_extras=item_extras, **done)
