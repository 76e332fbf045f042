"""Command-line flags of the training recipe and the gate, shared by ``duet-train`` and ``duet-experiment``."""

from __future__ import annotations

import argparse

from duet_sdk.gate import GatePolicy
from duet_sdk.training.presets import DEFAULT_LR
from duet_sdk.training.recipe import LR_SCHEDULES
from duet_sdk.training.trainer import TrainConfig

_DEFAULT = TrainConfig()


def _limit(text: str) -> float | None:
    return None if text.lower() in ("off", "none") else float(text)


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """Optimiser, schedule, validation, regularisation and gate flags (defaults from ``TrainConfig``)."""
    g = p.add_argument_group("training recipe")
    g.add_argument("--batch-size", type=int, default=_DEFAULT.batch_size)
    g.add_argument(
        "--min-steps",
        type=int,
        default=_DEFAULT.min_steps,
        help="repeat passes over the data until at least this many optimiser steps "
        "(early stopping still applies; 0: exactly --epochs)",
    )
    g.add_argument("--lr", type=float, help=f"peak learning rate after warm-up (default by model: {DEFAULT_LR})")
    g.add_argument(
        "--warmup-steps", type=int, default=_DEFAULT.warmup_steps, help="linear warm-up (at most a fifth of the run)"
    )
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=_DEFAULT.lr_schedule, help="decay after warm-up")
    g.add_argument("--grad-clip", type=float, default=_DEFAULT.grad_clip, help="max gradient norm (0: off)")
    g.add_argument("--weight-decay", type=float, default=_DEFAULT.weight_decay, help="AdamW decay of dense weights")
    g.add_argument(
        "--embedding-weight-decay",
        type=float,
        default=_DEFAULT.embedding_weight_decay,
        help="AdamW decay of ID-embedding tables",
    )
    g.add_argument(
        "--rare-id-min-count",
        type=int,
        default=_DEFAULT.rare_id_min_count,
        help="IDs seen fewer times in training are replaced by an unknown-ID token with probability --rare-id-dropout "
        "(0: off)",
    )
    g.add_argument("--rare-id-dropout", type=float, default=_DEFAULT.rare_id_dropout)
    g.add_argument("--hash-table-size", type=int, help="rows per ID hash table (default: the preset's)")
    g.add_argument(
        "--eval-every",
        type=int,
        default=_DEFAULT.eval_every,
        help=f"validate every N steps (0: {_DEFAULT.evals_per_epoch} times per epoch)",
    )
    g.add_argument(
        "--eval-rows",
        type=int,
        default=_DEFAULT.eval_rows,
        help="validations during training use a fixed sample of this many rows (0: all)",
    )
    g.add_argument(
        "--patience",
        type=int,
        default=_DEFAULT.patience,
        help="stop after N validations without improvement (0: never early)",
    )
    g.add_argument(
        "--gate-threshold",
        type=float,
        default=GatePolicy().max_relative_regression,
        help="max relative regression of primary val NE",
    )
    g.add_argument(
        "--gate-max-ne",
        type=_limit,
        default=GatePolicy().max_primary_ne,
        help="reject a checkpoint whose primary val NE is at or above this ('off' to disable; 1.0 = the base rate)",
    )


def train_config_from_args(
    args: argparse.Namespace, epochs: int, seed: int, progress: bool, model: str = "click"
) -> TrainConfig:
    """The ``TrainConfig`` the recipe flags describe for ``model`` (its default lr unless ``--lr``)."""
    return TrainConfig(
        epochs=epochs,
        min_steps=args.min_steps,
        batch_size=args.batch_size,
        lr=args.lr or DEFAULT_LR[model],
        warmup_steps=args.warmup_steps,
        lr_schedule=args.lr_schedule,
        grad_clip=args.grad_clip,
        weight_decay=args.weight_decay,
        embedding_weight_decay=args.embedding_weight_decay,
        rare_id_min_count=args.rare_id_min_count,
        rare_id_dropout=args.rare_id_dropout,
        eval_every=args.eval_every,
        eval_rows=args.eval_rows,
        patience=args.patience,
        seed=seed,
        progress=progress,
    )


def gate_policy_from_args(args: argparse.Namespace) -> GatePolicy:
    return GatePolicy(max_relative_regression=args.gate_threshold, max_primary_ne=args.gate_max_ne)
