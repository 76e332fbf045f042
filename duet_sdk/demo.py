"""The main job on the embedded default: train both demo encoders behind the gate and print val NE.

Run as ``python -m duet_sdk.demo`` (``make demo``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.training.datasets import synthetic_data
from duet_sdk.training.presets import DEFAULT_EPOCHS
from duet_sdk.training.trainer import TrainConfig
from duet_sdk.training.upstream import train_upstream

ENCODERS = {"click": "ClickAUN -> ClickAUE", "conv": "ConvAUN -> ConvAUE"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duet_sdk.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    start = time.perf_counter()
    data = synthetic_data(SyntheticConfig(seed=args.seed))
    print(data.report)
    rows = []
    for kind, label in ENCODERS.items():
        print(f"training {label} ...")
        outcome = train_upstream(kind, data, args.out, "demo", TrainConfig(epochs=DEFAULT_EPOCHS[kind], seed=args.seed))
        ckpt = outcome.checkpoint
        rows.append((label, ckpt.primary_task, ckpt.primary_ne, outcome.result.seconds, outcome.decision))
        print(f"  checkpoint {ckpt.path}")
    print(f"\n{'encoder':<22} {'primary task':<24} {'val NE':>7} {'train s':>8}  gate")
    for label, task, ne, seconds, decision in rows:
        verdict = "accepted" if decision.accepted else f"REJECTED: {decision.reason}"
        print(f"{label:<22} {task:<24} {ne:>7.4f} {seconds:>8.1f}  {verdict}")
    print(f"\ndemo wall time {time.perf_counter() - start:.1f}s")
    return 0 if all(row[4].accepted for row in rows) else 3


if __name__ == "__main__":
    raise SystemExit(main())
