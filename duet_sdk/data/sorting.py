"""Sort validated events by (user, time) and index users and items, in bounded memory.

Raw ids become dense codes (rows of the sorted unique ``user_ids`` / ``item_ids``); the sort is stable,
so events tied in time keep their order in the file. Columns are walked in blocks; the permutation
and the sort key are the only arrays of the log's length held in memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duet_sdk.data.events import MAX_TIMESTAMP
from duet_sdk.data.reader import EventColumns
from duet_sdk.data.spill import ArraySink, chunks, release
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
        distinct = pc.unique(pa.array(values[c])).to_numpy(zero_copy_only=False)  # a hash pass, then a small sort
        out = np.union1d(out, distinct)
    return out


def codes_of(values: np.ndarray, ids: pa.Array) -> np.ndarray:
    """(N,) int32 position of each value in ``ids`` (every value must be present): a hash lookup."""
    return pc.index_in(pa.array(values), value_set=ids).to_numpy(zero_copy_only=False).astype(np.int32)


def _item_codes(columns: EventColumns, item_ids: np.ndarray, directory: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(N,) int32 item codes in file order and (I, X) each item's extra ids from its first row."""
    extras = np.zeros((len(item_ids), columns.extras.shape[1]), dtype=np.int64)
    seen = np.zeros(len(item_ids), dtype=bool)
    sink, lookup = ArraySink(directory, "read_item_code", np.int32), pa.array(item_ids)
    for c in chunks(len(columns)):
        codes = codes_of(columns.item[c], lookup)
        sink.append(codes)
        if extras.shape[1]:
            first_codes, first = np.unique(codes, return_index=True)
            new = ~seen[first_codes]
            extras[first_codes[new]] = columns.extras[c][first[new]]
            seen[first_codes[new]] = True
        release(columns.item, columns.extras)
    return sink.finish(), extras


def sort_events(columns: EventColumns, directory: Path | None) -> SortedEvents:
    """Index and sort ``columns`` (valid rows in file order); spill the sorted columns to ``directory``."""
    user_ids, item_ids = sorted_unique(columns.user), sorted_unique(columns.item)
    if len(user_ids) >= 2**31 or len(item_ids) >= 2**31:
        raise DataError(
            f"events: expected fewer than 2**31 distinct users and items, got {len(user_ids)} and {len(item_ids)}"
        )
    item_codes, item_extras = _item_codes(columns, item_ids, directory)
    n, lookup = len(columns), pa.array(user_ids)
    key = np.empty(n, dtype=np.int64)  # user code in the high 32 bits, timestamp (< 2**32) in the low
    for c in chunks(n):
        key[c] = (codes_of(columns.user[c], lookup).astype(np.int64) << 32) | columns.timestamp[c]
        release(columns.user, columns.timestamp)
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
    for name, source in (("item", item_codes), ("extras", columns.extras), ("behavior", columns.behavior)):
        for c in chunks(n):  # one column at a time: only its pages are resident during the gather
            sinks[name].append(source[order[c]])
        release(source)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    done = {name: sink.finish() for name, sink in sinks.items()}
    return SortedEvents(offsets=offsets, user_ids=user_ids, item_ids=item_ids, item_extras=item_extras, **done)
