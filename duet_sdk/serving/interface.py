"""The served interface of a DUET repository, shared by the repository writer and the clients.

The writer stores it as JSON in the ``duet_interface`` parameter of every ensemble's config, so a
client learns stream lengths, feature widths, code shapes and task names from the server itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from duet_sdk.errors import ConfigError

PARAMETER = "duet_interface"
UPSTREAM, DOWNSTREAM, FRESH = "duet_upstream", "duet_downstream", "duet_fresh"
ENSEMBLES = (UPSTREAM, DOWNSTREAM, FRESH)


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
class ServingInterface:
    """Everything a client needs to build valid requests for the three ensembles.

    Tensors (B = users, T = a stream's padded length, N = candidates):
        request_time (B,) int64; static_sparse (B, static_sparse) int64; static_dense (B, static_dense) fp32;
        per stream ``<s>_ids`` (B, T, event_fields) int64, ``<s>_ts`` (B, T) int64, ``<s>_len`` (B,) int64,
        left-padded (most recent event last), 1 <= T <= max_len, 0 <= len <= T;
        item_sparse (B, N, item_sparse) int64; item_dense (B, N, item_dense) fp32;
        ``<e>_codes`` (B, levels) int64; ``<e>_embedding`` (B, dim) fp32; scores (B, N, len(tasks)) fp32.
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

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServingInterface:
        try:
            data = json.loads(text)
            return cls(
                streams={k: StreamInfo(**v) for k, v in data["streams"].items()},
                embeddings={k: EmbeddingInfo(**v) for k, v in data["embeddings"].items()},
                tasks=tuple(data["tasks"]),
                **{k: data[k] for k in ("static_sparse", "static_dense", "item_sparse", "item_dense",
                                        "max_batch", "max_candidates", "version")},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(PARAMETER, "the JSON of a ServingInterface", f"{text[:80]!r} ({exc})") from exc
