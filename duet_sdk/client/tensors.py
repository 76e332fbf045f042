"""Turn validated requests into the ensembles' numpy inputs, and scores back into per-user arrays.

Layout (``ServingInterface``; B = users, T = a stream's bucketed length, N = bucketed candidates):
    request_time (B,); static_sparse (B, Fs) int64; static_dense (B, Ds) fp32;
    ``<s>_ids`` (B, T, F) int64, ``<s>_ts`` (B, T) int64, ``<s>_len`` (B,) int64, left-padded with 0
    (most recent event last); item_sparse (B, N, Fi) int64, item_dense (B, N, Di) fp32, right-padded
    with zero rows; ``<e>_codes`` (B, levels) int64; a ranker with target attention also takes
    ``history_ids`` (B, T, F') int64 and ``history_len`` (B,), left-padded like a stream.

Lengths are bucketed to powers of two (capped at ``max_len`` / ``max_candidates``) so the server sees
few distinct shapes. Pure numpy: no checks here (``validate`` runs first).

Example:
    >>> bucket(5, cap=100), bucket(0, cap=100), bucket(70, cap=100)
    (8, 1, 100)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

from duet_sdk.interface import Candidates, Event, HistoryInfo, ServingInterface, StreamInfo, UserHistory

T = TypeVar("T")


def bucket(n: int, cap: int) -> int:
    """The smallest power of two >= ``n`` (at least 1), capped at ``cap``."""
    return min(cap, 1 << max(0, n - 1).bit_length())


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` split in order into slices of at most ``size`` (one request per slice)."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def recent(events: Sequence[Event], max_len: int) -> Sequence[Event]:
    """The most recent ``max_len`` events (events are oldest first); older ones are dropped."""
    return events[len(events) - max_len:] if len(events) > max_len else events


def stream_tensors(histories: Sequence[UserHistory], name: str, info: StreamInfo) -> dict[str, np.ndarray]:
    """``<name>_ids`` (B, T, F), ``<name>_ts`` (B, T), ``<name>_len`` (B,); T = bucket of the longest kept history."""
    kept = [recent(h.streams.get(name, ()), info.max_len) for h in histories]
    t = bucket(max(len(events) for events in kept), info.max_len)
    ids = np.zeros((len(kept), t, info.event_fields), np.int64)  # (B, T, F)
    ts = np.zeros((len(kept), t), np.int64)  # (B, T)
    for b, events in enumerate(kept):
        if events:
            ids[b, t - len(events):] = [e.ids for e in events]  # left-pad: most recent event last
            ts[b, t - len(events):] = [e.ts for e in events]
    lengths = np.array([len(events) for events in kept], np.int64)  # (B,)
    return {f"{name}_ids": ids, f"{name}_ts": ts, f"{name}_len": lengths}


def recent_history_tensors(rows: Sequence[Sequence[Sequence[int]]], info: HistoryInfo) -> dict[str, np.ndarray]:
    """The ranker's ``history_ids`` (B, T, F') int64 left-padded with 0 and ``history_len`` (B,) from each
    user's rows (oldest first): the most recent ``info.max_len`` kept, T = bucket of the longest (>= 1)."""
    kept = [r[len(r) - info.max_len:] if len(r) > info.max_len else r for r in rows]
    t = bucket(max(len(r) for r in kept), info.max_len)
    ids = np.zeros((len(kept), t, len(info.fields)), np.int64)  # (B, T, F')
    for b, r in enumerate(kept):
        if len(r):
            ids[b, t - len(r):] = np.asarray(r, np.int64).reshape(len(r), len(info.fields))  # most recent last
    return {"history_ids": ids, "history_len": np.array([len(r) for r in kept], np.int64)}


def static_tensors(sparse: Sequence[Sequence[int]], dense: Sequence[Sequence[float]],
                   interface: ServingInterface) -> dict[str, np.ndarray]:
    """``static_sparse`` (B, Fs) int64 and ``static_dense`` (B, Ds) fp32."""
    return {
        "static_sparse": np.asarray(sparse, np.int64).reshape(len(sparse), interface.static_sparse),
        "static_dense": np.asarray(dense, np.float32).reshape(len(dense), interface.static_dense),
    }


def history_tensors(histories: Sequence[UserHistory], interface: ServingInterface) -> dict[str, np.ndarray]:
    """``duet_upstream``'s inputs: request_time (B,), static features and every stream of the interface."""
    tensors = {"request_time": np.array([h.request_time for h in histories], np.int64)}
    tensors |= static_tensors([h.static_sparse for h in histories], [h.static_dense for h in histories], interface)
    for name, info in interface.streams.items():
        tensors |= stream_tensors(histories, name, info)
    return tensors


def candidate_tensors(candidates: Sequence[Candidates], interface: ServingInterface
                      ) -> tuple[dict[str, np.ndarray], list[int]]:
    """``item_sparse`` (B, N, Fi) int64 and ``item_dense`` (B, N, Di) fp32 padded with zero rows, and each N_b."""
    counts = [len(c) for c in candidates]
    n = bucket(max(counts), interface.max_candidates)
    sparse = np.zeros((len(candidates), n, interface.item_sparse), np.int64)  # (B, N, Fi)
    dense = np.zeros((len(candidates), n, interface.item_dense), np.float32)  # (B, N, Di)
    for b, c in enumerate(candidates):
        sparse[b, :counts[b]] = np.asarray(c.item_sparse, np.int64).reshape(counts[b], interface.item_sparse)
        dense[b, :counts[b]] = np.asarray(c.item_dense, np.float32).reshape(counts[b], interface.item_dense)
    return {"item_sparse": sparse, "item_dense": dense}, counts


def code_tensors(codes: Sequence[Mapping[str, Sequence[int]]], interface: ServingInterface) -> dict[str, np.ndarray]:
    """``<e>_codes`` (B, levels) int64 for every embedding of the interface."""
    return {f"{name}_codes": np.asarray([c[name] for c in codes], np.int64).reshape(len(codes), info.levels)
            for name, info in interface.embeddings.items()}


def split_scores(scores: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """Scores (B, N, K) of padded candidates -> per user (N_b, K), dropping the padding rows."""
    return [scores[b, :n] for b, n in enumerate(counts)]
