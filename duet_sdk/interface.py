"""What client, serving and online share: the served interface of a DUET release, the names of its
ensembles, and the plain request/result types (no imports of client, serving or online here).

The writer stores the interface as JSON in the ``duet_interface`` parameter of every ensemble's config,
so a client learns stream lengths, feature widths, code shapes and task names from the server itself.

Releases: one publish is release ``V``. Its models are served under release names (``ranker_v3``,
``duet_fresh_v3``, version directory ``3``); the unversioned ensembles (``duet_fresh``) are aliases of
the current release. Every response's model version is the release that produced it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from duet_sdk.errors import ConfigError

PARAMETER = "duet_interface"
UPSTREAM, DOWNSTREAM, FRESH = "duet_upstream", "duet_downstream", "duet_fresh"
ENSEMBLES = (UPSTREAM, DOWNSTREAM, FRESH)
_RELEASE_NAME = re.compile(r"^(?P<model>[A-Za-z0-9_]+)_v(?P<release>[1-9][0-9]*)$")


def release_model(model: str, release: int | str) -> str:
    """The Triton name of ``model`` (a component or an ensemble) in ``release``: ``ranker_v3``."""
    return f"{model}_v{int(release)}"


def split_release_model(name: str) -> tuple[str, int] | None:
    """``"duet_fresh_v3"`` -> ``("duet_fresh", 3)``; None for a name that is not a release name."""
    match = _RELEASE_NAME.match(name)
    return (match["model"], int(match["release"])) if match else None


@dataclass(frozen=True)
class StreamInfo:
    """One event stream: the most events a model sees and the width of the packed ID row."""

    max_len: int
    event_fields: int


@dataclass(frozen=True)
class EmbeddingInfo:
    """One user embedding: SIDE levels and codebook size (codes lie in [0, codebook_size)), float dim."""

    levels: int
    codebook_size: int
    dim: int


@dataclass(frozen=True)
class HistoryInfo:
    """The ranker's target-attention history: the ``max_len`` (L) most recent events of ``stream``, each
    event's IDs ``fields`` (columns ``columns`` of the stream's packed ID row, ``event_fields`` wide)."""

    stream: str
    fields: tuple[str, ...]
    columns: tuple[int, ...]
    event_fields: int
    max_len: int

    def rows(self, events: Sequence[Event]) -> list[tuple[int, ...]]:
        """The ``fields`` of the most recent ``max_len`` of ``events`` (oldest first), oldest first."""
        kept = events[len(events) - self.max_len:] if len(events) > self.max_len else events
        return [tuple(e.ids[c] for c in self.columns) for e in kept]


@dataclass(frozen=True)
class ServingInterface:
    """Everything a client needs to build valid requests for the three ensembles.

    Tensors (B = users, T = a stream's padded length, N = candidates):
        request_time (B,) int64; static_sparse (B, static_sparse) int64; static_dense (B, static_dense) fp32;
        per stream ``<s>_ids`` (B, T, event_fields) int64, ``<s>_ts`` (B, T) int64, ``<s>_len`` (B,) int64,
        left-padded (most recent event last), 1 <= T <= max_len, 0 <= len <= T;
        item_sparse (B, N, item_sparse) int64; item_dense (B, N, item_dense) fp32;
        ``<e>_codes`` (B, levels) int64; ``<e>_embedding`` (B, dim) fp32; scores (B, N, len(tasks)) fp32.
    With ``history`` (a ranker with target attention), ``duet_downstream`` and ``duet_fresh`` also take
        ``history_ids`` (B, T, len(history.fields)) int64, ``history_len`` (B,) int64, left-padded,
        1 <= T <= history.max_len (the server trims a longer T to its most recent ``max_len`` events).
    """

    streams: dict[str, StreamInfo]
    embeddings: dict[str, EmbeddingInfo]
    static_sparse: int
    static_dense: int
    item_sparse: int
    item_dense: int
    tasks: tuple[str, ...]
    max_batch: int
    max_candidates: int
    version: str
    history: HistoryInfo | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServingInterface:
        try:
            data = json.loads(text)
            history = data.get("history")
            return cls(
                streams={k: StreamInfo(**v) for k, v in data["streams"].items()},
                history=None if history is None else HistoryInfo(**(history | {
                    "fields": tuple(history["fields"]), "columns": tuple(history["columns"])})),
                embeddings={k: EmbeddingInfo(**v) for k, v in data["embeddings"].items()},
                tasks=tuple(data["tasks"]),
                **{k: data[k] for k in ("static_sparse", "static_dense", "item_sparse", "item_dense",
                                        "max_batch", "max_candidates", "version")},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(PARAMETER, "the JSON of a ServingInterface", f"{text[:80]!r} ({exc})") from exc


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
    """``embed`` result of one user: per embedding (``click``, ``conv``) its SIDE codes and float vector,
    and the release that produced them (the model version of Triton's response)."""

    user_id: str
    codes: dict[str, tuple[int, ...]]
    vectors: dict[str, tuple[float, ...]]
    model_version: str


@dataclass(frozen=True)
class Scores:
    """Scores (N, K) of one user's candidates, K = the interface's tasks, which path served them and the
    release that produced them (the model version of Triton's response; the interface's for "default")."""

    user_id: str
    scores: tuple[tuple[float, ...], ...]
    path: str  # "stored" | "fresh" | "default"
    model_version: str


@dataclass(frozen=True)
class ScoreRequest:
    """One user on the stored path (``duet_downstream``): static features, stored SIDE codes, candidates.

    ``codes`` holds one code tuple per embedding of the interface (``levels`` ints in [0, codebook_size)),
    as returned by ``embed`` or ``score_fresh`` and kept in a feature store. ``recent_history``: when the
    ranker takes a history (``interface.history``), the user's recent behaviours, oldest first, one row of
    ``history.fields`` IDs (any int64) each; ``()`` for none. Only the most recent ``max_len`` are sent.
    Required (not None) by a ranker with target attention, ignored by one without.
    """

    user_id: str
    static_sparse: Sequence[int]
    static_dense: Sequence[float]
    codes: Mapping[str, Sequence[int]]
    candidates: Candidates
    recent_history: Sequence[Sequence[int]] | None = None


@dataclass(frozen=True)
class FreshRequest:
    """One user on the fresh path (``duet_fresh``): the full history and the candidates to score.

    ``recent_history`` as in ``ScoreRequest``; None (default) takes it from ``history.streams`` (the
    ``interface.history.stream`` events' ``history.fields`` columns).
    """

    history: UserHistory
    candidates: Candidates
    recent_history: Sequence[Sequence[int]] | None = None


@dataclass(frozen=True)
class FreshResult:
    """``score_fresh`` result of one user: the scores and the SIDE codes computed on the way (to store)."""

    scores: Scores
    codes: dict[str, tuple[int, ...]]
