"""Multi-task training of an upstream network with validation NE per task."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from duet_sdk.data.batching import Batch, iterate_batches
from duet_sdk.data.events import EventTable, ExampleSet
from duet_sdk.data.routing import recalibrate
from duet_sdk.errors import ConfigError
from duet_sdk.metrics import normalized_entropy
from duet_sdk.validation import require_int


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and loop settings. The loop keeps the epoch with the best primary-task val NE."""

    epochs: int = 4
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-5
    warmup_steps: int = 50
    seed: int = 0
    eval_batch_size: int = 1024
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            require_int(f"TrainConfig.{name}", getattr(self, name), 1)
        if not self.lr > 0:
            raise ConfigError("TrainConfig.lr", "a float > 0", self.lr)


@dataclass
class TrainResult:
    """The trained model (best epoch), its validation NE per task and the per-epoch history."""

    model: nn.Module
    val_ne: dict[str, float]
    best_epoch: int
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def metrics(self, primary_task: str, train_set: ExampleSet, val_set: ExampleSet) -> dict:
        """``metrics.json`` of the checkpoint this run produces."""
        return {
            "val_ne": self.val_ne,
            "primary_task": primary_task,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "train_rows": len(train_set),
            "val_rows": len(val_set),
            "val_positive_rate": val_set.positive_rate(),
            "train_downsample_rate": train_set.downsample_rate,
            "train_seconds": round(self.seconds, 2),
        }


class BatchSource(Protocol):
    """Labelled rows (``examples``) and a way to turn them into model batches."""

    examples: ExampleSet

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[Batch]: ...


@dataclass
class EventBatches:
    """Upstream-network batches: each row's histories from ``table`` plus its candidate and labels."""

    table: EventTable
    examples: ExampleSet

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[Batch]:
        return iterate_batches(self.table, self.examples, batch_size, shuffle, seed)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum over tasks of ``weight_k * mean BCE over rows where task k applies``.

    Args:
        logits, labels, mask: (B, K); weights: (K,). Returns a scalar.
    """
    loss = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")  # (B, K)
    per_task = (loss * mask).sum(0) / mask.sum(0).clamp(min=1.0)  # (K,)
    return (per_task * weights).sum()


@torch.no_grad()
def predict(model: nn.Module, source: BatchSource, batch_size: int = 1024) -> np.ndarray:
    """(E, K) probabilities of ``model`` on every row of ``source``, in order."""
    model.eval()
    out = [torch.sigmoid(model(batch)).numpy() for batch in source.batches(batch_size)]
    return np.concatenate(out) if out else np.zeros((0, len(source.examples.tasks)))


def evaluate(model: nn.Module, source: BatchSource, train_downsample_rate: float, batch_size: int = 1024) -> dict[str, float]:
    """NE per task on ``source``'s (unsampled) rows, after recalibrating for the training downsample rate."""
    examples = source.examples
    probs = recalibrate(predict(model, source, batch_size), train_downsample_rate)
    return {
        task: normalized_entropy(examples.labels[:, k], probs[:, k], examples.label_mask[:, k])
        for k, task in enumerate(examples.tasks)
    }


def _schedule(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.05, 1.0 - (step - warmup) / max(1, total - warmup))


def train(
    model: nn.Module,
    task_weights: dict[str, float],
    primary_task: str,
    train_source: BatchSource,
    val_source: BatchSource,
    config: TrainConfig,
) -> TrainResult:
    """Train ``model`` (batch dict -> (B, K) logits) on ``train_source``; keep the best epoch by val NE."""
    train_set = train_source.examples
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    weights = torch.tensor([task_weights[t] for t in train_set.tasks], dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * math.ceil(len(train_set) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, config.warmup_steps, total))
    best: tuple[float, int, dict, dict[str, float]] | None = None
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(config.epochs):
        model.train()
        batches = train_source.batches(config.batch_size, shuffle=True, seed=config.seed * 1000 + epoch)
        bar = tqdm(batches, total=math.ceil(len(train_set) / config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}", disable=None if config.progress else True, leave=False)  # None: only on a terminal
        for batch in bar:
            loss = masked_bce(model(batch), batch["labels"], batch["label_mask"], weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
        val_ne = evaluate(model, val_source, train_set.downsample_rate, config.eval_batch_size)
        history.append({"epoch": epoch + 1, "step": step, **{f"val_ne/{k}": v for k, v in val_ne.items()}})
        score = val_ne[primary_task]
        if best is None or (math.isfinite(score) and not score >= best[0]):
            best = (score, epoch + 1, copy.deepcopy(model.state_dict()), val_ne)
    assert best is not None
    model.load_state_dict(best[2])
    return TrainResult(model=model, val_ne=best[3], best_epoch=best[1], steps=step, seconds=time.perf_counter() - start, history=history)
