"""Train ClickAUN / ConvAUN, write the checkpoint and put it through the checkpoint gate."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
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
    seconds: float


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
) -> TrainOutcome:
    """Train the ``kind`` ("click" or "conv") network on ``data``; save to ``out/<kind>/<name>``; gate it."""
    config = upstream_config(kind, data.dataset.schema, preset)
    ds = data.dataset
    train_set, val_set = (ds.click_train, ds.click_val) if kind == "click" else (ds.conv_train, ds.conv_val)
    start = time.perf_counter()
    torch.manual_seed(train_config.seed)  # the initialisation depends on the seed alone
    result = train(
        UpstreamNet(config), {t.name: t.weight for t in config.tasks}, config.primary_task,
        EventBatches(ds.table, train_set), EventBatches(ds.table, val_set), train_config,
    )
    seconds = time.perf_counter() - start
    registry = registry_for(out, kind)
    predecessor = registry.latest_accepted()
    metrics = {
        "val_ne": result.val_ne,
        "primary_task": config.primary_task,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "train_rows": len(train_set),
        "val_rows": len(val_set),
        "val_positive_rate": val_set.positive_rate(),
        "train_downsample_rate": train_set.downsample_rate,
        "train_seconds": round(seconds, 2),
    }
    lineage = {
        "predecessor": predecessor.digest if predecessor else None,
        "data": data.description,
        "step": result.steps,
        "seed": train_config.seed,
        "preset": preset,
        "train_config": serialization.to_dict(train_config),
    }
    name = f"{kind}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}"
    checkpoint = save_checkpoint(Path(out) / kind, name, result.model.state_dict(), upstream_checkpoint_config(config), metrics, lineage)
    decision = registry.submit(checkpoint, policy)
    return TrainOutcome(checkpoint, decision, result, seconds)
