"""``duet-train click|conv|ranker``: train, write checkpoints, run the checkpoint gate.

``click`` / ``conv`` train ClickAUN / ConvAUN. ``ranker`` trains the downstream ranker variants
(baseline, +ClickAUE, +ConvAUE, DUET) on identical rows and seed, on SIDE codes of the latest accepted
encoders under ``--out`` (training each encoder's codec first if it has none), optionally with target
attention over the user's recent history (``--target-attention dare|twin|twin_proj``).
Exit status: 0 when the gate accepts every checkpoint, 3 when it rejects one, 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from duet_sdk.checkpoint import Checkpoint
from duet_sdk.cli_common import command_parser, configure_logging
from duet_sdk.data.eventlog import SPLITS, EventLogOptions
from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.data.synthetic_longtail import LongTailConfig
from duet_sdk.errors import DataError, DuetError
from duet_sdk.gate import GateDecision
from duet_sdk.models.config import EMBEDDING_INPUTS, RANKER_VARIANTS, TARGET_ATTENTION_VARIANTS, TargetAttentionConfig
from duet_sdk.side import SideConfig
from duet_sdk.training.datasets import (
    EVENT_FORMATS,
    SYNTHETIC_DATASETS,
    LoadedData,
    event_log_data,
    event_spec,
    longtail_data,
    synthetic_data,
)
from duet_sdk.training.features import prepare_upstream, row_features
from duet_sdk.training.presets import DEFAULT_EPOCHS, EVENT_LOG_EPOCHS, PRESETS
from duet_sdk.training.ranker import train_ranker
from duet_sdk.training.recipe_args import add_recipe_arguments, gate_policy_from_args, train_config_from_args
from duet_sdk.training.trainer import TrainConfig, TrainResult
from duet_sdk.training.upstream import registry_for, train_upstream

EXIT_REJECTED = 3


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("duet-train", "Train ClickAUN / ConvAUN behind the checkpoint gate.")
    p.add_argument(
        "model",
        choices=("click", "conv", "ranker"),
        help="click: ClickAUN on the click/onsite stream; conv: ConvAUN on the offsite-conversion stream; ranker: the "
             "downstream ranker variants",
    )
    p.add_argument("--events", type=Path, help="event log to train on (default: --dataset)")
    p.add_argument("--event-format", choices=EVENT_FORMATS, default="taobao", help="preset spec of --events")
    p.add_argument("--event-spec", type=Path, help="event-log spec (TOML) of --events; overrides --event-format")
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="user",
        help="per-user time split, or global temporal split (train before T1, validate on [T1, T2))",
    )
    p.add_argument(
        "--session-gap",
        type=int,
        default=EventLogOptions.session_gap,
        help="event logs: training requests at the start of a session after a gap of this many seconds (0: off)",
    )
    p.add_argument("--spill-dir", type=Path, help="spill the dataset's arrays here and memory-map them (large logs)")
    p.add_argument(
        "--static-user-id",
        action="store_true",
        help="give the models the raw user ID as a static feature (opt-in: lets them memorise users)",
    )
    p.add_argument(
        "--dataset",
        choices=SYNTHETIC_DATASETS,
        default="synthetic",
        help="without --events: the planted synthetic benchmark or the harder long-tail one (global temporal split)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/train"),
        help="checkpoints go to OUT/<model>/, the gate registry to OUT/registry/",
    )
    p.add_argument("--preset", choices=PRESETS, default="demo", help="model size")
    p.add_argument(
        "--epochs",
        type=int,
        help=f"default: {EVENT_LOG_EPOCHS} on an event log or longtail, else by model {DEFAULT_EPOCHS}",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-users", type=int, default=3000, help="synthetic data: number of users")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_recipe_arguments(p)
    ranker = p.add_argument_group("ranker")
    ranker.add_argument("--variants", nargs="+", choices=tuple(RANKER_VARIANTS), default=list(RANKER_VARIANTS))
    ranker.add_argument(
        "--embedding-input",
        choices=EMBEDDING_INPUTS,
        default="codes",
        help="SIDE codes (decoded inside) or float embeddings",
    )
    ranker.add_argument("--levels", type=int, default=4, help="SIDE levels L of a codec trained here")
    ranker.add_argument(
        "--codebook-size", type=int, default=256, help="SIDE codewords per level K of a codec trained here"
    )
    ta = p.add_argument_group("ranker target attention (DARE)")
    ta.add_argument(
        "--target-attention",
        choices=(*TARGET_ATTENTION_VARIANTS, "off"),
        default="off",
        help="dare: decoupled attention/representation tables; twin: one shared table; twin_proj: shared table + "
             "projections",
    )
    ta.add_argument("--history-stream", default="click", help="stream whose recent events the candidates attend to")
    ta.add_argument(
        "--history-fields",
        nargs="+",
        default=["item_id", "author_id"],
        help="ID fields of a behaviour and of a candidate",
    )
    ta.add_argument("--history-len", type=int, default=200, help="L: the most recent events attended to")
    ta.add_argument("--top-k", type=int, default=20, help="behaviours retrieved per candidate by the search")
    ta.add_argument("--d-repr", type=int, default=32, help="representation embedding width")
    ta.add_argument("--d-att", type=int, default=0, help="attention embedding width (0: d_repr; dare may go below)")
    ta.add_argument(
        "--aux-loss-weight",
        type=float,
        default=0.0,
        help="weight of the training-only auxiliary loss on the full-history attention (DARE's reference recipe)",
    )
    return p


def target_attention_config(args: argparse.Namespace) -> TargetAttentionConfig | None:
    """The ranker's target attention from the CLI flags (None when off)."""
    if args.target_attention == "off":
        return None
    return TargetAttentionConfig(
        variant=args.target_attention,
        stream=args.history_stream,
        fields=tuple(args.history_fields),
        max_len=args.history_len,
        top_k=args.top_k,
        d_repr=args.d_repr,
        d_att=args.d_att,
        aux_loss_weight=args.aux_loss_weight,
    )


def _load_data(args: argparse.Namespace) -> LoadedData:
    if args.events is not None:
        options = EventLogOptions(
            seed=args.seed,
            split=args.split,
            session_gap=args.session_gap,
            spill_dir=None if args.spill_dir is None else str(args.spill_dir),
        )
        return event_log_data(args.events, event_spec(args.event_format, args.event_spec), options, args.static_user_id)
    if args.dataset == "longtail":
        return longtail_data(
            LongTailConfig(num_users=args.num_users, static_user_id=args.static_user_id, seed=args.seed)
        )
    return synthetic_data(SyntheticConfig(num_users=args.num_users, seed=args.seed))


def default_epochs(args: argparse.Namespace) -> int:
    """One pass over an event log or the long-tail benchmark; per model on the planted synthetic data."""
    if args.epochs:
        return args.epochs
    return EVENT_LOG_EPOCHS if args.events is not None or args.dataset == "longtail" else DEFAULT_EPOCHS[args.model]


def _run_line(result: TrainResult) -> str:
    stop = ", stopped early" if result.stopped_early else ""
    return (
        f"trained {result.steps} steps in {result.seconds:.1f}s; best state at step {result.best_step} "
        f"(epoch {result.best_epoch}) of {len(result.history)} validations{stop}"
    )


def _print_checkpoint(label: str, ckpt: Checkpoint, decision: GateDecision) -> None:
    for task, ne in ckpt.val_ne.items():
        marker = "  (primary)" if task == ckpt.primary_task else ""
        print(f"  {label} val NE {task:<24} {ne:.4f}{marker}")
    print(f"  checkpoint: {ckpt.path}  digest {ckpt.digest[:12]}")
    print(f"  gate: {decision}")


def run_encoder(args: argparse.Namespace, data: LoadedData, train_config: TrainConfig) -> bool:
    outcome = train_upstream(
        args.model, data, args.out, args.preset, train_config, gate_policy_from_args(args), args.hash_table_size
    )
    print(f"{args.model}: {_run_line(outcome.result)}")
    _print_checkpoint(args.model, outcome.checkpoint, outcome.decision)
    return outcome.decision.accepted


def run_rankers(args: argparse.Namespace, data: LoadedData, train_config: TrainConfig) -> bool:
    target_attention = target_attention_config(args)  # bad flags fail before any work
    ds = data.dataset
    train_rows, val_rows = ds.ranker_train, ds.ranker_val
    side = SideConfig(levels=args.levels, codebook_size=args.codebook_size, seed=args.seed)
    upstream = {}
    for name in sorted({n for v in args.variants for n in RANKER_VARIANTS[v]}):
        encoder = registry_for(args.out, name).latest_accepted()
        if encoder is None:
            raise DataError(
                f"no accepted {name} encoder under {args.out}/registry: run `duet-train {name} --out {args.out}` first"
            )
        upstream[name] = prepare_upstream(name, encoder, ds.table, train_rows, val_rows, args.out, side)
        print(f"{name}: encoder {encoder.digest[:12]}, SIDE codec {upstream[name].codec_checkpoint.path}")
    features = (row_features(upstream, ds.table, train_rows), row_features(upstream, ds.table, val_rows))
    accepted = True
    for variant in args.variants:
        outcome = train_ranker(
            variant,
            ds.table,
            train_rows,
            val_rows,
            features,
            upstream,
            args.out,
            data.description,
            train_config,
            gate_policy_from_args(args),
            args.embedding_input,
            args.hash_table_size,
            target_attention=target_attention,
        )
        print(f"ranker {variant}: {_run_line(outcome.result)}")
        _print_checkpoint(variant, outcome.checkpoint, outcome.decision)
        accepted &= outcome.decision.accepted
    return accepted


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    data = _load_data(args)
    print(data.report)
    train_config = train_config_from_args(args, default_epochs(args), args.seed, not args.no_progress, args.model)
    train_model = run_rankers if args.model == "ranker" else run_encoder
    accepted = train_model(args, data, train_config)
    if not accepted:
        print(
            "duet-train: the gate rejected a checkpoint (see its reason above); it was kept on disk but not accepted",
            file=sys.stderr,
        )
    return 0 if accepted else EXIT_REJECTED


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args)
    try:
        return run(args)
    except DuetError as exc:
        print(f"duet-train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
