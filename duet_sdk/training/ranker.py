"""Train the downstream ranker variants on frozen upstream embeddings delivered as SIDE codes.

No gradient reaches encoders or codebooks: row features are precomputed (``features.row_features``),
codes are integers and the ranker's decoders hold the codebooks as buffers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from duet_sdk import serialization
from duet_sdk.checkpoint import Checkpoint, save_checkpoint
from duet_sdk.data.batching import Batch, HistorySpec, collate_ranker
from duet_sdk.data.events import EventTable, ExampleSet
from duet_sdk.data.routing import RANKER_TASKS
from duet_sdk.data.schema import EventSchema
from duet_sdk.errors import ConfigError
from duet_sdk.gate import CheckpointRegistry, GateDecision, GatePolicy, registry_name
from duet_sdk.models.config import (
    RANKER_VARIANTS,
    HashConfig,
    RankerConfig,
    TargetAttentionConfig,
    TaskSpec,
    UserEmbeddingInput,
)
from duet_sdk.models.ranker import Pointwise, Ranker
from duet_sdk.training.features import UpstreamFeatures
from duet_sdk.training.trainer import TrainConfig, TrainResult, train

RANKER_WEIGHTS = {"offsite_conversion": 1.0, "link_click": 0.3, "button_click": 0.3}


@dataclass
class RankerBatches:
    """Pointwise ranker batches over ``examples`` with precomputed upstream ``features``."""

    table: EventTable
    examples: ExampleSet
    features: dict[str, np.ndarray]
    history: HistorySpec | None = None

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[Batch]:
        order = (
            np.random.default_rng(seed).permutation(len(self.examples)) if shuffle else np.arange(len(self.examples))
        )
        for lo in range(0, len(order), batch_size):
            yield collate_ranker(self.table, self.examples, order[lo : lo + batch_size], self.features, self.history)

    def subset(self, index: np.ndarray) -> RankerBatches:
        return RankerBatches(
            self.table, self.examples.subset(index), {k: v[index] for k, v in self.features.items()}, self.history
        )


def history_spec(config: RankerConfig) -> HistorySpec | None:
    """What history the ranker's target attention reads from the event table (None without one)."""
    ta = config.target_attention
    if ta is None:
        return None
    fields = config.schema.event_fields
    return HistorySpec(ta.stream, tuple(fields.index(f) for f in ta.fields), ta.max_len)


def ranker_config(
    variant: str,
    schema: EventSchema,
    upstream: Mapping[str, UpstreamFeatures],
    embedding_input: str = "codes",
    table_size: int | None = None,
    target_attention: TargetAttentionConfig | None = None,
) -> RankerConfig:
    """The ranker of ``variant`` (baseline, click, conv, duet) over the given upstream embeddings;
    ``table_size`` sets the rows per hash table (default ``HashConfig``'s); optional target attention
    over the user's recent history."""
    if variant not in RANKER_VARIANTS:
        raise ConfigError("variant", f"one of {tuple(RANKER_VARIANTS)}", variant)
    inputs = []
    for name in RANKER_VARIANTS[variant]:
        if name not in upstream:
            raise ConfigError(f"upstream.{name}", f"an accepted {name} encoder and its SIDE codec", "none")
        codec = upstream[name].codec
        levels, size, dim = codec.codebooks.shape
        inputs.append(UserEmbeddingInput(name=name, dim=dim, levels=levels, codebook_size=size))
    return RankerConfig(
        schema=schema,
        tasks=tuple(TaskSpec(t, RANKER_WEIGHTS[t]) for t in RANKER_TASKS),
        primary_task=RANKER_TASKS[0],
        embeddings=tuple(inputs),
        embedding_input=embedding_input,
        hashing=HashConfig(table_size=table_size) if table_size else HashConfig(),
        target_attention=target_attention,
    )


def build_ranker(config: RankerConfig, upstream: Mapping[str, UpstreamFeatures]) -> Ranker:
    """A fresh ranker whose SIDE decoders hold the (frozen) codebooks of ``upstream``'s codecs."""
    ranker = Ranker(config)
    for name, decoder in ranker.decoders.items():
        decoder.codebooks.copy_(upstream[name].codec.codebooks)
    return ranker


def ranker_checkpoint_config(config: RankerConfig) -> dict:
    """``config.json`` of a ranker checkpoint (a ranker with target attention also takes a history)."""
    interface = {
        "schema": serialization.to_dict(config.schema),
        "embeddings": [serialization.to_dict(e) for e in config.embeddings],
        "embedding_input": config.embedding_input,
        "tasks": list(config.task_names),
    }
    if config.target_attention is not None:
        interface["target_attention"] = serialization.to_dict(config.target_attention)
    return {"kind": "ranker", "interface": interface, "model": serialization.to_dict(config)}


@dataclass
class RankerOutcome:
    """A trained, saved and gated ranker variant."""

    variant: str
    checkpoint: Checkpoint
    decision: GateDecision
    result: TrainResult


def train_ranker(
    variant: str,
    table: EventTable,
    train_set: ExampleSet,
    val_set: ExampleSet,
    features: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
    upstream: Mapping[str, UpstreamFeatures],
    out: Path,
    data_description: dict,
    train_config: TrainConfig = TrainConfig(),
    policy: GatePolicy = GatePolicy(),
    embedding_input: str = "codes",
    table_size: int | None = None,
    target_attention: TargetAttentionConfig | None = None,
) -> RankerOutcome:
    """Train one ranker variant on ``train_set`` (features precomputed by ``row_features``), save, gate."""
    config = ranker_config(variant, table.schema, upstream, embedding_input, table_size, target_attention)
    history = history_spec(config)
    torch.manual_seed(train_config.seed)  # the initialisation depends on the seed alone
    ranker = build_ranker(config, upstream)
    result = train(
        Pointwise(ranker),
        {t.name: t.weight for t in config.tasks},
        config.primary_task,
        RankerBatches(table, train_set, features[0], history),
        RankerBatches(table, val_set, features[1], history),
        train_config,
    )
    registry = CheckpointRegistry(
        Path(out) / "registry", registry_name(variant, embedding_input, target_attention and target_attention.variant)
    )
    predecessor = registry.latest_accepted()
    used = {name: upstream[name] for name in RANKER_VARIANTS[variant]}
    metrics = result.metrics(config.primary_task, train_set, val_set)
    lineage = {
        "predecessor": predecessor.digest if predecessor else None,
        "data": data_description,
        "step": result.steps,
        "seed": train_config.seed,
        "train_config": serialization.to_dict(train_config),
        "upstream": {
            name: {
                "encoder": p.checkpoint.digest,
                "encoder_val_ne": p.checkpoint.val_ne,
                "codec": p.codec_checkpoint.digest,
            }
            for name, p in used.items()
        },
    }
    state = result.model.ranker.state_dict()
    name = f"{registry.model}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    checkpoint = save_checkpoint(Path(out) / "ranker", name, state, ranker_checkpoint_config(config), metrics, lineage)
    return RankerOutcome(variant, checkpoint, registry.submit(checkpoint, policy), result)
