"""Pieces of the training recipe: learning-rate schedule, optimiser parameter groups, output-bias
initialisation and early stopping with restore of the best state."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

LR_SCHEDULES = ("cosine", "linear", "constant")


def lr_factor(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up over ``warmup`` steps, then
    ``schedule`` decay from 1 to ``min_ratio`` at step ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * shape


def parameter_groups(model: nn.Module, weight_decay: float, embedding_weight_decay: float) -> list[dict]:
    """AdamW groups: ID-embedding tables (every ``nn.Embedding``) with their own decay; 1-d parameters
    (biases, norms) without decay; other weights with ``weight_decay``."""
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    groups: dict[str, list[nn.Parameter]] = {"embedding": [], "no_decay": [], "dense": []}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        key = "embedding" if id(param) in tables else "no_decay" if param.ndim < 2 else "dense"
        groups[key].append(param)
    decay = {"embedding": embedding_weight_decay, "no_decay": 0.0, "dense": weight_decay}
    return [{"params": ps, "weight_decay": decay[k], "name": k} for k, ps in groups.items() if ps]


def init_output_bias(model: nn.Module, positive_rate: np.ndarray) -> bool:
    """Set the bias of the model's task heads (the last ``nn.Linear`` named ``heads``) to the logit of
    each task's training positive rate (K,), so training starts at the base rate, not at p = 0.5.
    Returns False when the model has no such layer."""
    heads = [m for name, m in model.named_modules() if name.split(".")[-1] == "heads" and isinstance(m, nn.Linear)]
    if not heads or heads[-1].bias is None or heads[-1].bias.shape != (len(positive_rate),):
        return False
    rate = np.clip(np.asarray(positive_rate, dtype=np.float64), 1e-4, 1 - 1e-4)
    with torch.no_grad():
        heads[-1].bias.copy_(torch.from_numpy(np.log(rate / (1 - rate))).to(heads[-1].bias.dtype))
    return True


@dataclass
class EarlyStopping:
    """Keeps the state with the lowest finite score; says to stop after ``patience`` evaluations without
    an improvement of at least ``min_delta`` (``patience=0``: never stop early).

    Example:
        >>> stopper = EarlyStopping(patience=2)
        >>> [stopper.update(s, step, model) for step, s in enumerate([0.9, 0.8, 0.85, 0.86])]  # doctest: +SKIP
        [False, False, False, True]
    """

    patience: int = 3
    min_delta: float = 0.0
    best_score: float = math.inf
    best_step: int = -1
    best_state: dict | None = field(default=None, repr=False)
    best_info: dict = field(default_factory=dict)
    stale: int = 0

    def update(self, score: float, step: int, model: nn.Module, info: dict | None = None) -> bool:
        """Record an evaluation; snapshot the model if it is the best so far. Returns True to stop."""
        if math.isfinite(score) and (self.best_state is None or score < self.best_score - self.min_delta):
            self.best_score, self.best_step, self.stale = score, step, 0
            self.best_state = copy.deepcopy(model.state_dict())
            self.best_info = dict(info or {})
            return False
        if self.best_state is None and not math.isfinite(score):
            self.best_state, self.best_step, self.best_info = copy.deepcopy(model.state_dict()), step, dict(info or {})
        self.stale += 1
        return self.patience > 0 and self.stale >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Load the best state back into ``model``."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
