"""Train ClickAUN / ConvAUN, write the checkpoint and put it through the checkpoint gate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from duet_sdk import serialization
from duet_sdk.checkpoint import Checkpoint, save_checkpoint
from duet_sdk.gate import CheckpointRegistry, GateDecision, GatePolicy
from duet_sdk.models.loading import upstream_checkpoint_config
from duet_sdk.models.upstream import UpstreamNet
from duet_sdk.training.datasets import LoadedData
from duet_sdk.training.presets import upstream_config
from duet_sdk.training.trainer import EventBatches, TrainConfig, TrainResult, train


@dataclass
class TrainOutcome:
    """A trained, saved and gated checkpoint."""

    checkpoint: Checkpoint
    decision: GateDecision
    result: TrainResult


def registry_for(out: Path, kind: str) -> CheckpointRegistry:
    """The gate registry of model ``kind`` under a training output directory: ``out/registry/<kind>``."""
    return CheckpointRegistry(Path(out) / "registry", kind)


def train_upstream(
    kind: str,
    data: LoadedData,
    out: Path,
    preset: str = "demo",
    train_config: TrainConfig = TrainConfig(),
    policy: GatePolicy = GatePolicy(),
    table_size: int | None = None,
) -> TrainOutcome:
    """Train the ``kind`` ("click" or "conv") network on ``data``; save to ``out/<kind>/<name>``; gate it."""
    config = upstream_config(kind, data.dataset.schema, preset, table_size)
    ds = data.dataset
    train_set, val_set = (ds.click_train, ds.click_val) if kind == "click" else (ds.conv_train, ds.conv_val)
    torch.manual_seed(train_config.seed)  # the initialisation depends on the seed alone
    result = train(
        UpstreamNet(config), {t.name: t.weight for t in config.tasks}, config.primary_task,
        EventBatches(ds.table, train_set), EventBatches(ds.table, val_set), train_config,
    )
    registry = registry_for(out, kind)
    predecessor = registry.latest_accepted()
    metrics = result.metrics(config.primary_task, train_set, val_set)
    lineage = {
        "predecessor": predecessor.digest if predecessor else None,
        "data": data.description,
        "step": result.steps,
        "seed": train_config.seed,
        "preset": preset,
        "train_config": serialization.to_dict(train_config),
    }
    name = f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    checkpoint = save_checkpoint(
        Path(out) / kind, name, result.model.state_dict(), upstream_checkpoint_config(config), metrics, lineage
    )
    decision = registry.submit(checkpoint, policy)
    return TrainOutcome(checkpoint, decision, result)
