"""Multi-task training loop (upstream networks and rankers) with validation NE per task during the epoch."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from duet_sdk.data.batching import Batch, iterate_batches
from duet_sdk.data.events import EventTable, ExampleSet
from duet_sdk.data.routing import recalibrate_tasks
from duet_sdk.errors import ConfigError
from duet_sdk.metrics import normalized_entropy
from duet_sdk.training.rare_ids import RareIdDropout
from duet_sdk.training.recipe import LR_SCHEDULES, EarlyStopping, init_output_bias, lr_factor, parameter_groups
from duet_sdk.validation import require_int, require_number

logger = logging.getLogger(__name__)
MAX_EVALS = 50  # default validations per run at most (about): each costs a pass over the validation sample


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule, regularisation and validation settings of one training run.

    The run makes ``epochs`` passes over the training rows, or as many more as it takes to reach
    ``min_steps`` optimiser steps (a small log gets enough updates; a large one still makes one pass).
    Validation runs every ``eval_every`` steps (0: ``evals_per_epoch`` times per pass, at most about
    ``MAX_EVALS`` times per run) and at the end;
    training stops after ``patience`` evaluations without improvement (0: never early) and the state
    with the best primary-task val NE is restored. Validations during training use a fixed random sample
    of at most ``eval_rows`` validation rows (0: all); the restored state's val NE is then computed on
    every validation row. The learning rate warms up linearly over
    ``warmup_steps`` (at most a fifth of the run) and then decays (``lr_schedule``) to
    ``min_lr_ratio * lr``. ``grad_clip`` bounds the gradient norm (0: off). ID-embedding tables get
    their own AdamW decay (``embedding_weight_decay``); rare IDs (fewer than ``rare_id_min_count``
    training occurrences, 0: off) of ``rare_id_fields`` are replaced by an unknown-ID token with
    probability ``rare_id_dropout`` (``rare_ids.RareIdDropout``).
    """

    epochs: int = 1
    min_steps: int = 0
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-5
    embedding_weight_decay: float = 1e-4
    warmup_steps: int = 50
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    eval_every: int = 0
    evals_per_epoch: int = 4
    eval_rows: int = 20_000
    patience: int = 3
    rare_id_min_count: int = 0
    rare_id_dropout: float = 0.5
    rare_id_fields: tuple[str, ...] = ("item_id", "user_id")
    init_bias: bool = True
    seed: int = 0
    eval_batch_size: int = 1024
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "evals_per_epoch"):
            require_int(f"TrainConfig.{name}", getattr(self, name), 1)
        for name in ("min_steps", "warmup_steps", "eval_every", "eval_rows", "patience", "rare_id_min_count"):
            require_int(f"TrainConfig.{name}", getattr(self, name), 0)
        if not isinstance(self.lr, (int, float)) or not 0 < self.lr < math.inf:
            raise ConfigError("TrainConfig.lr", "a float > 0", self.lr)
        for name in ("weight_decay", "embedding_weight_decay", "grad_clip"):
            require_number(f"TrainConfig.{name}", getattr(self, name))
        for name in ("min_lr_ratio", "rare_id_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"TrainConfig.{name}", "a number in [0, 1]", value)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError("TrainConfig.lr_schedule", f"one of {LR_SCHEDULES}", self.lr_schedule)


@dataclass
class TrainResult:
    """The trained model (best state restored), its validation NE per task and the evaluation history."""

    model: nn.Module
    val_ne: dict[str, float]
    best_epoch: int
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    stopped_early: bool = False

    def metrics(self, primary_task: str, train_set: ExampleSet, val_set: ExampleSet) -> dict:
        """``metrics.json`` of the checkpoint this run produces."""
        return {
            "val_ne": self.val_ne,
            "primary_task": primary_task,
            "best_epoch": self.best_epoch,
            "best_step": self.best_step,
            "steps": self.steps,
            "stopped_early": self.stopped_early,
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

    def subset(self, index: np.ndarray) -> BatchSource: ...


@dataclass
class EventBatches:
    """Upstream-network batches: each row's histories from ``table`` plus its candidate and labels."""

    table: EventTable
    examples: ExampleSet

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[Batch]:
        return iterate_batches(self.table, self.examples, batch_size, shuffle, seed)

    def subset(self, index: np.ndarray) -> EventBatches:
        return EventBatches(self.table, self.examples.subset(index))


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


def evaluate(
    model: nn.Module, source: BatchSource, train_downsample_rate: float, batch_size: int = 1024
) -> dict[str, float]:
    """NE per task on ``source``'s (unsampled) rows, after recalibrating for the training downsample rate."""
    examples = source.examples
    probs = recalibrate_tasks(predict(model, source, batch_size), train_downsample_rate, examples.label_mask)
    return {
        task: normalized_entropy(examples.labels[:, k], probs[:, k], examples.label_mask[:, k])
        for k, task in enumerate(examples.tasks)
    }


def _rare_id_transform(source: BatchSource, config: TrainConfig) -> Callable[[Batch], Batch] | None:
    table = getattr(source, "table", None)
    if not config.rare_id_min_count or table is None:
        return None
    dropout = RareIdDropout(
        table, source.examples, config.rare_id_fields, config.rare_id_min_count, config.rare_id_dropout, config.seed
    )
    for name in dropout.counts:
        logger.info(
            "rare %s: %.1f%% of training IDs seen < %d times",
            name,
            100 * dropout.rare_fraction(name),
            config.rare_id_min_count,
        )
    return dropout


def train(
    model: nn.Module,
    task_weights: dict[str, float],
    primary_task: str,
    train_source: BatchSource,
    val_source: BatchSource,
    config: TrainConfig,
) -> TrainResult:
    """Train ``model`` (batch dict -> (B, K) logits) on ``train_source``; validate during the epoch,
    stop early and restore the state with the best primary val NE (see ``TrainConfig``). A model with a
    non-zero ``auxiliary_weight`` also learns ``auxiliary_logits(batch)`` (B, K) on the same labels,
    weighted so (the ranker's full-history target attention); validation reads ``model(batch)`` only."""
    train_set = train_source.examples
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    weights = torch.tensor([task_weights[t] for t in train_set.tasks], dtype=torch.float32)
    if config.init_bias:
        init_output_bias(model, np.asarray(list(train_set.positive_rate().values())))
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.weight_decay, config.embedding_weight_decay), lr=config.lr
    )
    per_epoch = math.ceil(len(train_set) / config.batch_size)
    epochs = max(config.epochs, math.ceil(config.min_steps / per_epoch)) if per_epoch else config.epochs
    total = epochs * per_epoch
    warmup = min(config.warmup_steps, total // 5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total, config.lr_schedule, config.min_lr_ratio))
    eval_every = config.eval_every or max(1, per_epoch // config.evals_per_epoch, total // MAX_EVALS)
    transform = _rare_id_transform(train_source, config)
    probe = val_source
    if config.eval_rows and len(val_source.examples) > config.eval_rows:
        probe = val_source.subset(
            np.sort(
                np.random.default_rng(config.seed).choice(len(val_source.examples), config.eval_rows, replace=False)
            )
        )
    stopper = EarlyStopping(config.patience)
    aux_weight = getattr(model, "auxiliary_weight", 0.0)  # e.g. the ranker's full-history attention
    history: list[dict[str, float]] = []
    step, stop = 0, False

    def validate(epoch: int) -> bool:
        val_ne = evaluate(model, probe, train_set.downsample_rate, config.eval_batch_size)
        history.append({"epoch": epoch, "step": step, **{f"val_ne/{k}": v for k, v in val_ne.items()}})
        logger.info("epoch %d step %d: val NE %s", epoch, step, {k: round(v, 4) for k, v in val_ne.items()})
        halt = stopper.update(val_ne[primary_task], step, model, {"epoch": epoch, "val_ne": val_ne})
        model.train()
        return halt

    for epoch in range(1, epochs + 1):
        model.train()
        batches = train_source.batches(config.batch_size, shuffle=True, seed=config.seed * 1000 + epoch - 1)
        disable = None if config.progress else True  # None: only on a terminal
        bar = tqdm(batches, total=per_epoch, desc=f"epoch {epoch}/{epochs}", disable=disable, leave=False)
        for batch in bar:
            if transform is not None:
                batch = transform(batch)
            loss = masked_bce(model(batch), batch["labels"], batch["label_mask"], weights)
            if aux_weight:
                aux = masked_bce(model.auxiliary_logits(batch), batch["labels"], batch["label_mask"], weights)
                loss = loss + aux_weight * aux
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % eval_every == 0 and step < total and validate(epoch):
                stop = True
                break
        if stop:
            break
    if not history or history[-1]["step"] != step:
        validate(epoch)
    stopper.restore(model)
    val_ne = stopper.best_info["val_ne"]
    if probe is not val_source:
        val_ne = evaluate(model, val_source, train_set.downsample_rate, config.eval_batch_size)
    model.eval()
    return TrainResult(
        model=model,
        val_ne=val_ne,
        best_epoch=stopper.best_info["epoch"],
        steps=step,
        seconds=time.perf_counter() - start,
        history=history,
        best_step=stopper.best_step,
        stopped_early=step < total,
    )
