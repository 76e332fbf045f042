"""``duet-experiment table1|dare``: the DUET Table 1 and Figure 5 analyses on synthetic data or an event
log; the DARE target-attention comparison (off / twin / twin_proj / dare at three attention widths)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from duet_sdk.atomic_io import atomic_write_json
from duet_sdk.cli_common import DefaultsHelpFormatter, command_parser, configure_logging
from duet_sdk.data.eventlog import SPLITS, EventLogOptions
from duet_sdk.errors import ConfigError, DuetError
from duet_sdk.experiments.dare_cli import add_dare_merge_parser, add_dare_parser, main_dare, merge_dare
from duet_sdk.experiments.figures import cosine_distances, plot_cosine_distances, plot_pca
from duet_sdk.experiments.sweep import MODELS, SETTINGS, run_setting
from duet_sdk.experiments.sweep import to_markdown as sweep_markdown
from duet_sdk.experiments.table1 import Table1Config, load_data, run_seed, runs_from_summary, summarize, to_markdown
from duet_sdk.side import SideConfig
from duet_sdk.training.datasets import EVENT_FORMATS, SYNTHETIC_DATASETS
from duet_sdk.training.presets import DEFAULT_LR
from duet_sdk.training.recipe_args import add_recipe_arguments, gate_policy_from_args, train_config_from_args


def run_table1(config: Table1Config, out: Path) -> dict:
    """Run every seed into ``out/seed-<s>/``; write ``table1.json``, ``table1.md`` and Figure 5 PNGs to ``out``."""
    out = Path(out)
    runs = []
    for seed in config.seeds:
        start = time.perf_counter()
        runs.append(run_seed(config, seed, out / f"seed-{seed}"))
        print(f"seed {seed}: ranker val NE {runs[-1].ranker_ne} ({time.perf_counter() - start:.0f}s)", flush=True)
    summary = summarize(runs, config.side)
    first = runs[0]
    distances = cosine_distances(first.projected["click"], first.projected["conv"])
    summary["figures"] = {
        "pca": {"path": "figure5_pca.png", "explained_variance": plot_pca(first.embeddings, out / "figure5_pca.png")},
        "cosine_distance": {
            "path": "figure5_cosine.png",
            "space": "the DUET ranker's projections of the decoded ClickAUE and ConvAUE (one common width)",
            **plot_cosine_distances(distances, out / "figure5_cosine.png", f"ClickAUE vs ConvAUE, seed {first.seed}"),
        },
    }
    atomic_write_json(out / "table1.json", summary)
    (out / "table1.md").write_text(to_markdown(summary))
    return summary


def add_event_log_arguments(p: argparse.ArgumentParser) -> None:
    """Where the events come from and how they become rows: the log, its spec, the split, the negatives."""
    p.add_argument("--events", type=Path, help="event log (default: --dataset)")
    p.add_argument("--event-format", choices=EVENT_FORMATS, default="taobao", help="preset spec of --events")
    p.add_argument("--event-spec", type=Path, help="event-log spec (TOML) of --events; overrides --event-format")
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="global",
        help="event logs: global temporal split (default) or per-user time split",
    )
    p.add_argument(
        "--val-end-quantile", type=float, default=1.0, help="global split: T2 as a quantile of event times (T1 at 0.8)"
    )
    p.add_argument(
        "--negatives-per-positive", type=int, default=4, help="event logs: sampled negatives per positive row"
    )
    p.add_argument(
        "--session-gap",
        type=int,
        default=EventLogOptions.session_gap,
        help="event logs: training requests at the start of a session after a gap of this many seconds (0: off)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("duet-experiment", __doc__)
    sub = p.add_subparsers(dest="experiment", required=True)
    t = sub.add_parser(
        "table1",
        formatter_class=DefaultsHelpFormatter,
        help="ranker NE: baseline / +ClickAUE / +ConvAUE / DUET, SIDE vs float, Figure 5",
    )
    t.add_argument("--out", type=Path, default=Path("runs/table1"))
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_event_log_arguments(t)
    t.add_argument(
        "--static-user-id",
        action="store_true",
        help="give the models the raw user ID as a static feature (opt-in: lets them memorise users)",
    )
    t.add_argument(
        "--dataset", choices=SYNTHETIC_DATASETS, default="synthetic", help="synthetic benchmark without --events"
    )
    t.add_argument("--num-users", type=int, default=3000, help="synthetic data: number of users")
    t.add_argument(
        "--encoder-epochs",
        type=int,
        help="default: 1 on an event log or longtail, else per model (ClickAUN 3, ConvAUN 1)",
    )
    t.add_argument("--ranker-epochs", type=int, help="default: 1 on an event log or longtail, else 3")
    t.add_argument("--ranker-lr", type=float, help="peak learning rate of the rankers (default: --lr, else by model)")
    t.add_argument("--levels", type=int, default=4, help="SIDE levels L")
    t.add_argument("--codebook-size", type=int, default=256, help="SIDE codewords per level K")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--progress", action="store_true")
    add_recipe_arguments(t)
    m = sub.add_parser(
        "table1-merge",
        formatter_class=DefaultsHelpFormatter,
        help="one table from table1 runs of different seeds (run as separate processes)",
    )
    m.add_argument("--out", type=Path, required=True, help="writes OUT/table1.md and OUT/table1.json")
    m.add_argument("parts", type=Path, nargs="+", help="directories holding a table1.json each")
    w = sub.add_parser(
        "sweep",
        formatter_class=DefaultsHelpFormatter,
        help="training-recipe settings: primary val NE of ClickAUN, ConvAUN and the baseline ranker per setting",
    )
    w.add_argument("--out", type=Path, default=Path("runs/sweep"))
    w.add_argument("--settings", nargs="+", choices=tuple(SETTINGS), default=["previous", "default"])
    w.add_argument("--seed", type=int, default=0)
    w.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=list(MODELS),
        help="which of ClickAUN, ConvAUN, the baseline ranker to train",
    )
    add_event_log_arguments(w)
    w.add_argument("--dataset", choices=SYNTHETIC_DATASETS, default="longtail")
    w.add_argument("--num-users", type=int, default=3000)
    w.add_argument("--hash-table-size", type=int)
    w.add_argument("--threads", type=int, default=0)
    add_dare_parser(sub)
    add_dare_merge_parser(sub)
    return p


def merge_tables(args: argparse.Namespace) -> int:
    """Merge the per-seed rows of several ``table1.json`` files (distinct seeds, same SIDE codec shape)."""
    summaries = [json.loads((part / "table1.json").read_text()) for part in args.parts]
    runs = [run for summary in summaries for run in runs_from_summary(summary)]
    if len({r.seed for r in runs}) != len(runs) or len({json.dumps(s["side"]) for s in summaries}) != 1:
        raise ConfigError(
            "parts", "table1 runs of distinct seeds with the same SIDE codec", [str(p) for p in args.parts]
        )
    side = summaries[0]["side"]
    summary = summarize(runs, SideConfig(levels=side["levels"], codebook_size=side["codebook_size"]))
    summary["parts"] = [str(p) for p in args.parts]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "table1.json", summary)
    (args.out / "table1.md").write_text(to_markdown(summary))
    print(to_markdown(summary))
    return 0


def data_source(args: argparse.Namespace) -> dict:
    """The ``Table1Config`` fields naming the data and how it is split, as table1 and sweep both parse them."""
    return {
        "num_users": args.num_users,
        "dataset": args.dataset,
        "events": args.events,
        "event_format": args.event_format,
        "event_spec": args.event_spec,
        "split": args.split,
        "val_end_quantile": args.val_end_quantile,
        "negatives_per_positive": args.negatives_per_positive,
        "session_gap": args.session_gap,
    }


def run_sweep(args: argparse.Namespace) -> int:
    """Each setting into ``out/<setting>/``; ``sweep.md`` / ``sweep.json`` in ``out``. The ``previous``
    setting sees the raw user ID as a static feature, as the old recipe did."""
    if args.out.exists():
        raise ConfigError("out", "a directory that does not exist yet (results are never overwritten)", str(args.out))
    rows = []
    for name in args.settings:
        user_id = name == "previous"
        config = Table1Config(seeds=(args.seed,), static_user_id=user_id, **data_source(args))
        data = load_data(config, args.seed)
        rows.append(run_setting(name, data, args.out, args.seed, args.hash_table_size, tuple(args.models)))
        print(f"{name}: " + ", ".join(f"{m} {rows[-1][m]['ne']:.4f}" for m in args.models), flush=True)
    source = str(args.events) if args.events else args.dataset
    markdown = sweep_markdown(
        rows, f"Recipe sweep on {source}, seed {args.seed}: primary val NE (best step / steps run)"
    )
    atomic_write_json(args.out / "sweep.json", {"source": source, "seed": args.seed, "rows": rows})
    (args.out / "sweep.md").write_text(markdown)
    print(markdown)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.experiment in ("sweep", "table1-merge", "dare-merge"):
        if getattr(args, "threads", 0):
            torch.set_num_threads(args.threads)
        commands = {"sweep": run_sweep, "table1-merge": merge_tables, "dare-merge": merge_dare}
        try:
            return commands[args.experiment](args)
        except DuetError as exc:
            print(f"duet-experiment: error: {exc}", file=sys.stderr)
            return 2
    configure_logging(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.experiment == "dare":
        try:
            return main_dare(args)
        except DuetError as exc:
            print(f"duet-experiment: error: {exc}", file=sys.stderr)
            return 2
    try:
        config = Table1Config(
            seeds=tuple(args.seeds),
            encoder_epochs=args.encoder_epochs,
            ranker_epochs=args.ranker_epochs,
            side=SideConfig(levels=args.levels, codebook_size=args.codebook_size),
            static_user_id=args.static_user_id,
            **data_source(args),
            train=train_config_from_args(args, 1, 0, args.progress),
            ranker_lr=args.ranker_lr or args.lr or DEFAULT_LR["ranker"],
            table_size=args.hash_table_size,
            policy=gate_policy_from_args(args),
            progress=args.progress,
        )
        summary = run_table1(config, args.out)
    except DuetError as exc:
        print(f"duet-experiment: error: {exc}", file=sys.stderr)
        return 2
    print(to_markdown(summary))
    print(f"written: {args.out / 'table1.md'}, {args.out / 'table1.json'}, figure5_pca.png, figure5_cosine.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
