"""Event-based-feature (EBF) schema: which streams a user has and what each event carries.

Every event of every stream carries a timestamp (Unix seconds) and the same packed int64 ID row:
``id_fields`` (item, author, media type, position, action type) followed by ``num_semantic_codes`` semantic-ID
codes. Batches name their tensors after the stream: ``<stream>_ids`` (B, T, F) int64,
``<stream>_ts`` (B, T) int64 and ``<stream>_len`` (B,) int64, left-padded (the most recent event
last).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from duet_sdk.errors import ConfigError
from duet_sdk.validation import require_int

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

REQUEST_TIME = "request_time"
STATIC_SPARSE = "static_sparse"
STATIC_DENSE = "static_dense"
ITEM_SPARSE = "item_sparse"
ITEM_DENSE = "item_dense"
# The ranker's target-attention history: (U, L, F) int64 ID fields, left-padded, and (U,) int64 lengths.
HISTORY_IDS = "history_ids"
HISTORY_LEN = "history_len"


def ids_key(stream: str) -> str:
    """Batch key of a stream's packed ID tensor (B, T, F)."""
    return f"{stream}_ids"


def ts_key(stream: str) -> str:
    """Batch key of a stream's timestamp tensor (B, T)."""
    return f"{stream}_ts"


def len_key(stream: str) -> str:
    """Batch key of a stream's length tensor (B,)."""
    return f"{stream}_len"


def _check_names(field: str, names: tuple[str, ...]) -> None:
    if len(set(names)) != len(names):
        raise ConfigError(field, "unique names", names)
    for name in names:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(field, "lower_snake_case names", name)


@dataclass(frozen=True)
class StreamSpec:
    """One event stream (e.g. ``click``) and the most events of it a model sees."""

    name: str
    max_len: int

    def __post_init__(self) -> None:
        _check_names("StreamSpec.name", (self.name,))
        require_int(f"StreamSpec({self.name}).max_len", self.max_len, 1)


@dataclass(frozen=True)
class EventSchema:
    """The EBF layout shared by data loaders, batching, models and exported artifacts.

    Example:
        >>> schema = EventSchema(streams=(StreamSpec("click", 64), StreamSpec("conv", 16)))
        >>> schema.event_fields[-1]
        'semantic_1'
    """

    streams: tuple[StreamSpec, ...]
    id_fields: tuple[str, ...] = ("item_id", "author_id", "media_type", "position", "action_type")
    num_semantic_codes: int = 2
    static_sparse: tuple[str, ...] = ("user_id", "region", "device")
    static_dense: tuple[str, ...] = ("activity", "tenure", "spend")
    item_sparse: tuple[str, ...] = ("item_id", "author_id", "media_type", "semantic_0", "semantic_1")
    item_dense: tuple[str, ...] = ("price", "quality")

    def __post_init__(self) -> None:
        if not self.streams:
            raise ConfigError("EventSchema.streams", "at least one stream", self.streams)
        _check_names("EventSchema.streams", tuple(s.name for s in self.streams))
        for field in ("id_fields", "static_sparse", "item_sparse"):
            names = getattr(self, field)
            if not names:
                raise ConfigError(f"EventSchema.{field}", "at least one name", names)
            _check_names(f"EventSchema.{field}", names)
        _check_names("EventSchema.static_dense", self.static_dense)
        _check_names("EventSchema.item_dense", self.item_dense)
        require_int("EventSchema.num_semantic_codes", self.num_semantic_codes, 0)

    @property
    def event_fields(self) -> tuple[str, ...]:
        """Column names of the packed per-event ID row (F of them)."""
        return self.id_fields + tuple(f"semantic_{i}" for i in range(self.num_semantic_codes))

    @property
    def stream_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.streams)

    def stream(self, name: str) -> StreamSpec:
        for spec in self.streams:
            if spec.name == name:
                return spec
        raise ConfigError("stream", f"one of {self.stream_names}", name)
