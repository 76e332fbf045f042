"""``duet-train click|conv``: train an upstream encoder, write a checkpoint, run the checkpoint gate.

Exit status: 0 when the gate accepts the checkpoint, 3 when it rejects it, 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.data.taobao import TaobaoOptions
from duet_sdk.errors import DuetError
from duet_sdk.gate import GatePolicy
from duet_sdk.training.datasets import EVENT_FORMATS, event_log_data, synthetic_data
from duet_sdk.training.presets import PRESETS
from duet_sdk.training.trainer import TrainConfig
from duet_sdk.training.upstream import train_upstream

EXIT_REJECTED = 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="duet-train", description="Train ClickAUN / ConvAUN behind the checkpoint gate.")
    p.add_argument("model", choices=("click", "conv"), help="click: ClickAUN on the click stream; conv: ConvAUN on the conversion stream")
    p.add_argument("--events", type=Path, help="event log to train on (default: synthetic data)")
    p.add_argument("--event-format", choices=EVENT_FORMATS, default="taobao", help="layout of --events")
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="checkpoints go to OUT/<model>/, the gate registry to OUT/registry/")
    p.add_argument("--preset", choices=PRESETS, default="demo", help="model size")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-users", type=int, default=3000, help="synthetic data: number of users")
    p.add_argument("--gate-threshold", type=float, default=0.01, help="max relative regression of primary val NE")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.events is not None:
        data = event_log_data(args.events, args.event_format, TaobaoOptions(seed=args.seed))
    else:
        data = synthetic_data(SyntheticConfig(num_users=args.num_users, seed=args.seed))
    print(data.report)
    train_config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=not args.no_progress)
    outcome = train_upstream(args.model, data, args.out, args.preset, train_config, GatePolicy(args.gate_threshold))
    ckpt = outcome.checkpoint
    print(f"{args.model}: trained {outcome.result.steps} steps in {outcome.seconds:.1f}s (best epoch {outcome.result.best_epoch})")
    for task, ne in ckpt.val_ne.items():
        marker = "  (primary)" if task == ckpt.primary_task else ""
        print(f"  val NE {task:<24} {ne:.4f}{marker}")
    print(f"checkpoint: {ckpt.path}  digest {ckpt.digest[:12]}")
    print(f"gate: {outcome.decision}")
    return 0 if outcome.decision.accepted else EXIT_REJECTED


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except DuetError as exc:
        print(f"duet-train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
