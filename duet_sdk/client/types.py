"""What a caller sends and gets back: one user's ragged event histories, candidates, results.

These are plain data; ``duet_sdk.client.validate`` checks them against a ``ServingInterface`` and
``duet_sdk.client.tensors`` pads/buckets them into the ensembles' input tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    """One event of a stream: Unix seconds and its packed ID row (``event_fields`` ints)."""

    ts: int
    ids: tuple[int, ...]


@dataclass(frozen=True)
class UserHistory:
    """One user at ``request_time``: static features and, per stream, events oldest first.

    A stream may be empty or missing (treated as empty). Events after ``request_time`` are invalid.
    """

    user_id: str
    request_time: int
    static_sparse: Sequence[int]
    static_dense: Sequence[float]
    streams: Mapping[str, Sequence[Event]] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidates:
    """Candidate items of one user: ``item_sparse`` (N, item_sparse) ints, ``item_dense`` (N, item_dense)."""

    item_sparse: Sequence[Sequence[int]]
    item_dense: Sequence[Sequence[float]]

    def __len__(self) -> int:
        return len(self.item_sparse)


@dataclass(frozen=True)
class Embedding:
    """``embed`` result of one user: per embedding (``click``, ``conv``) its SIDE codes and float vector."""

    user_id: str
    codes: dict[str, tuple[int, ...]]
    vectors: dict[str, tuple[float, ...]]
    model_version: str


@dataclass(frozen=True)
class Scores:
    """Scores (N, K) of one user's candidates, K = the interface's tasks, and which path served them."""

    user_id: str
    scores: tuple[tuple[float, ...], ...]
    path: str  # "stored" | "fresh" | "default"
    model_version: str


@dataclass(frozen=True)
class ScoreRequest:
    """One user on the stored path (``duet_downstream``): static features, stored SIDE codes, candidates.

    ``codes`` holds one code tuple per embedding of the interface (``levels`` ints in [0, codebook_size)),
    as returned by ``embed`` or ``score_fresh`` and kept in a feature store.
    """

    user_id: str
    static_sparse: Sequence[int]
    static_dense: Sequence[float]
    codes: Mapping[str, Sequence[int]]
    candidates: Candidates


@dataclass(frozen=True)
class FreshRequest:
    """One user on the fresh path (``duet_fresh``): the full history and the candidates to score."""

    history: UserHistory
    candidates: Candidates


@dataclass(frozen=True)
class FreshResult:
    """``score_fresh`` result of one user: the scores and the SIDE codes computed on the way (to store)."""

    scores: Scores
    codes: dict[str, tuple[int, ...]]
