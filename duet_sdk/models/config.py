"""Config dataclasses of the upstream networks (ClickAUN / ConvAUN), the ranker and its target attention."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from duet_sdk.data.schema import EventSchema
from duet_sdk.errors import ConfigError
from duet_sdk.validation import require_int

BLOCK_KINDS = ("self", "cross")
ATTENTION_KINDS = ("mha", "mla")
MODEL_KINDS = ("click", "conv")


def _positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        require_int(f"{owner}.{name}", value, 1)


def _hidden(field_name: str, dims: tuple[int, ...]) -> None:
    if not dims or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in dims):
        raise ConfigError(field_name, "a non-empty list of ints >= 1", dims)


@dataclass(frozen=True)
class AttentionConfig:
    """Multi-head attention; ``kind="mla"`` projects Q and KV through RMS-normed latents of ``latent_dim``."""

    num_heads: int = 2
    kind: str = "mha"
    latent_dim: int = 16

    def __post_init__(self) -> None:
        _positive("AttentionConfig", num_heads=self.num_heads, latent_dim=self.latent_dim)
        if self.kind not in ATTENTION_KINDS:
            raise ConfigError("AttentionConfig.kind", f"one of {ATTENTION_KINDS}", self.kind)


@dataclass(frozen=True)
class HashConfig:
    """Multi-hash embedding of raw int64 IDs: ``num_hashes`` hashes into tables of ``table_size`` rows."""

    num_hashes: int = 2
    table_size: int = 4096
    dim: int = 16

    def __post_init__(self) -> None:
        _positive("HashConfig", num_hashes=self.num_hashes, table_size=self.table_size, dim=self.dim)


@dataclass(frozen=True)
class TaskSpec:
    """A binary training task and its loss weight."""

    name: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight) or self.weight < 0:
            raise ConfigError(f"TaskSpec({self.name}).weight", "a float >= 0", self.weight)


@dataclass(frozen=True)
class UpstreamConfig:
    """ClickAUN (``blocks`` all "self") or ConvAUN (interleaved "cross"/"self") and its training heads.

    ``pyramid[i]`` is how many of the most recent events block ``i`` keeps (0 = all); it must not grow
    with depth. ``streams`` names the schema streams that get an event tower.
    """

    kind: str
    schema: EventSchema
    streams: tuple[str, ...]
    tasks: tuple[TaskSpec, ...]
    primary_task: str
    d_model: int = 32
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    blocks: tuple[str, ...] = ("self", "self")
    pyramid: tuple[int, ...] = ()
    ffn_mult: int = 2
    num_seed_tokens: int = 1
    hashing: HashConfig = field(default_factory=HashConfig)
    time_frequencies: int = 4
    tower_out_dim: int = 32
    dcn_layers: int = 2
    embedding_dim: int = 64
    item_hidden: tuple[int, ...] = (64,)
    overarch_hidden: tuple[int, ...] = (64,)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError("UpstreamConfig.kind", f"one of {MODEL_KINDS}", self.kind)
        _positive(
            "UpstreamConfig", d_model=self.d_model, ffn_mult=self.ffn_mult, num_seed_tokens=self.num_seed_tokens,
            time_frequencies=self.time_frequencies, tower_out_dim=self.tower_out_dim, embedding_dim=self.embedding_dim,
        )
        if self.d_model % self.attention.num_heads:
            raise ConfigError(
                "UpstreamConfig.d_model", f"a multiple of num_heads={self.attention.num_heads}", self.d_model
            )
        if not self.streams or any(s not in self.schema.stream_names for s in self.streams):
            raise ConfigError("UpstreamConfig.streams", f"non-empty, from {self.schema.stream_names}", self.streams)
        if not self.blocks or any(b not in BLOCK_KINDS for b in self.blocks):
            raise ConfigError("UpstreamConfig.blocks", f"a non-empty list of {BLOCK_KINDS}", self.blocks)
        ints = all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in self.pyramid)
        if self.pyramid and (len(self.pyramid) != len(self.blocks) or not ints):
            raise ConfigError("UpstreamConfig.pyramid", f"{len(self.blocks)} ints >= 0 (0 = keep all)", self.pyramid)
        kept = [k if k > 0 else float("inf") for k in self.pyramid]  # 0 keeps all events
        if kept != sorted(kept, reverse=True):
            raise ConfigError("UpstreamConfig.pyramid", "a schedule that never grows with depth", self.pyramid)
        if self.dcn_layers < 0:
            raise ConfigError("UpstreamConfig.dcn_layers", "an int >= 0", self.dcn_layers)
        for name in ("item_hidden", "overarch_hidden"):
            _hidden(f"UpstreamConfig.{name}", getattr(self, name))
        names = tuple(t.name for t in self.tasks)
        if not names or len(set(names)) != len(names):
            raise ConfigError("UpstreamConfig.tasks", "unique task names", names)
        if self.primary_task not in names:
            raise ConfigError("UpstreamConfig.primary_task", f"one of {names}", self.primary_task)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("UpstreamConfig.dropout", "a float in [0, 1)", self.dropout)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    @property
    def num_query_tokens(self) -> int:
        """Static/query tokens per tower: one per static sparse ID, one for dense features, seeds."""
        return len(self.schema.static_sparse) + (1 if self.schema.static_dense else 0) + self.num_seed_tokens


EMBEDDING_INPUTS = ("codes", "float")
RANKER_VARIANTS = {"baseline": (), "click": ("click",), "conv": ("conv",), "duet": ("click", "conv")}


@dataclass(frozen=True)
class UserEmbeddingInput:
    """One upstream embedding the ranker consumes: SIDE codes (decoded by rule) or the float vector.

    ``dim`` is the embedding width; ``levels`` x ``codebook_size`` the SIDE codec (codes input only).
    """

    name: str
    dim: int
    levels: int = 4
    codebook_size: int = 256

    def __post_init__(self) -> None:
        _positive(
            f"UserEmbeddingInput({self.name})", dim=self.dim, levels=self.levels, codebook_size=self.codebook_size
        )


TARGET_ATTENTION_VARIANTS = ("dare", "twin", "twin_proj")


@dataclass(frozen=True)
class TargetAttentionConfig:
    """DARE-style target attention from each candidate to the user's recent raw history.

    ``stream`` names the schema stream whose most recent ``max_len`` events form the history, and
    ``fields`` the ID fields each behaviour and each candidate carry (e.g. item and category); every
    field is multi-hash embedded at ``d / len(fields)`` and the fields are concatenated. The search
    keeps the ``top_k`` behaviours by scaled dot product in a ``d_att``-wide attention space; the
    aggregation is a softmax over them in a ``d_repr``-wide representation space.
    ``variant``: ``dare`` (two tables, ``d_att`` free), ``twin`` (one table, ``d_att == d_repr``),
    ``twin_proj`` (one table of width ``d_repr`` plus linear attention/representation projections).
    ``d_att = 0`` means ``d_repr``.
    ``aux_loss_weight`` > 0 adds, in training only, the reference recipe's auxiliary loss (DARE's code,
    ``use_aux_loss``): the same attention as a softmax over *every* valid behaviour, no top-k, read by
    its own linear head against the labels, so every behaviour's attention embedding gets a gradient,
    not only those the search already retrieves. The served model does not compute it.
    """

    variant: str = "dare"
    stream: str = "click"
    fields: tuple[str, ...] = ("item_id", "author_id")
    max_len: int = 200
    top_k: int = 20
    d_repr: int = 32
    d_att: int = 0
    num_hashes: int = 2
    table_size: int = 16384
    aux_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.aux_loss_weight, (int, float)) and 0.0 <= self.aux_loss_weight < math.inf):
            raise ConfigError("TargetAttentionConfig.aux_loss_weight", "a finite float >= 0", self.aux_loss_weight)
        if self.variant not in TARGET_ATTENTION_VARIANTS:
            raise ConfigError("TargetAttentionConfig.variant", f"one of {TARGET_ATTENTION_VARIANTS}", self.variant)
        _positive(
            "TargetAttentionConfig",
            max_len=self.max_len,
            top_k=self.top_k,
            d_repr=self.d_repr,
            num_hashes=self.num_hashes,
            table_size=self.table_size,
        )
        require_int("TargetAttentionConfig.d_att", self.d_att, 0)
        names = self.fields
        if not names or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
            raise ConfigError("TargetAttentionConfig.fields", "a non-empty list of distinct field names", names)
        for name, width in (("d_repr", self.d_repr), ("d_att", self.attention_dim)):
            if width % len(names):
                raise ConfigError(f"TargetAttentionConfig.{name}", f"a multiple of len(fields)={len(names)}", width)
        if self.variant == "twin" and self.attention_dim != self.d_repr:
            raise ConfigError(
                "TargetAttentionConfig.d_att", f"0 or d_repr={self.d_repr} for the shared-table 'twin'", self.d_att
            )

    @property
    def attention_dim(self) -> int:
        """The width of the attention space (``d_att``, or ``d_repr`` when 0)."""
        return self.d_att or self.d_repr


@dataclass(frozen=True)
class RankerConfig:
    """DLRM-style downstream ranker over static user features, candidate items and user embeddings.

    ``embeddings`` lists the upstream embeddings it uses (none: the baseline); ``embedding_input`` says
    whether they arrive as SIDE codes (decoded inside, codebooks frozen) or as float vectors.
    """

    schema: EventSchema
    tasks: tuple[TaskSpec, ...]
    primary_task: str
    embeddings: tuple[UserEmbeddingInput, ...] = ()
    embedding_input: str = "codes"
    d_feature: int = 32
    projection_hidden: tuple[int, ...] = (64,)
    hashing: HashConfig = field(default_factory=HashConfig)
    dcn_layers: int = 2
    overarch_hidden: tuple[int, ...] = (128, 64)
    target_attention: TargetAttentionConfig | None = None

    def __post_init__(self) -> None:
        _positive("RankerConfig", d_feature=self.d_feature)
        names = tuple(t.name for t in self.tasks)
        if not names or len(set(names)) != len(names):
            raise ConfigError("RankerConfig.tasks", "unique task names", names)
        if self.primary_task not in names:
            raise ConfigError("RankerConfig.primary_task", f"one of {names}", self.primary_task)
        if self.embedding_input not in EMBEDDING_INPUTS:
            raise ConfigError("RankerConfig.embedding_input", f"one of {EMBEDDING_INPUTS}", self.embedding_input)
        embedding_names = [e.name for e in self.embeddings]
        if len(set(embedding_names)) != len(embedding_names):
            raise ConfigError("RankerConfig.embeddings", "unique names", embedding_names)
        _hidden("RankerConfig.overarch_hidden", self.overarch_hidden)
        if self.dcn_layers < 0:
            raise ConfigError("RankerConfig.dcn_layers", "an int >= 0", self.dcn_layers)
        ta = self.target_attention
        if ta is not None:
            if ta.stream not in self.schema.stream_names:
                raise ConfigError(
                    "RankerConfig.target_attention.stream", f"one of {self.schema.stream_names}", ta.stream
                )
            for where, names in (("event_fields", self.schema.event_fields), ("item_sparse", self.schema.item_sparse)):
                missing = [f for f in ta.fields if f not in names]
                if missing:
                    raise ConfigError(
                        "RankerConfig.target_attention.fields", f"fields of the schema's {where} {names}", missing
                    )

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)
