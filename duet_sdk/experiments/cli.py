"""``duet-experiment table1|dare``: the DUET Table 1 and Figure 5 analyses on synthetic data or an event
log; the DARE target-attention comparison (off / twin / twin_proj / dare at three attention widths)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from duet_sdk.checkpoint import atomic_write_json
from duet_sdk.data.eventlog import SPLITS
from duet_sdk.data.long_history import STREAM
from duet_sdk.errors import ConfigError, DuetError
from duet_sdk.experiments.dare import ARMS, DareConfig, load_rows, run_arm
from duet_sdk.experiments.dare import summarize as dare_summarize
from duet_sdk.experiments.dare import to_markdown as dare_markdown
from duet_sdk.experiments.figures import cosine_distances, plot_cosine_distances, plot_pca
from duet_sdk.experiments.table1 import Table1Config, run_seed, summarize, to_markdown
from duet_sdk.side import SideConfig
from duet_sdk.training.datasets import EVENT_FORMATS


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="duet-experiment", description=__doc__)
    sub = p.add_subparsers(dest="experiment", required=True)
    t = sub.add_parser("table1", help="ranker NE: baseline / +ClickAUE / +ConvAUE / DUET, SIDE vs float, Figure 5")
    t.add_argument("--out", type=Path, default=Path("runs/table1"))
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--events", type=Path, help="event log (default: synthetic benchmark)")
    t.add_argument("--event-format", choices=EVENT_FORMATS, default="taobao", help="preset spec of --events")
    t.add_argument("--event-spec", type=Path, help="event-log spec (TOML) of --events; overrides --event-format")
    t.add_argument("--num-users", type=int, default=3000, help="synthetic data: number of users")
    t.add_argument("--encoder-epochs", type=int, help="default: per model (ClickAUN 3, ConvAUN 1)")
    t.add_argument("--ranker-epochs", type=int, default=3)
    t.add_argument("--levels", type=int, default=4, help="SIDE levels L")
    t.add_argument("--codebook-size", type=int, default=256, help="SIDE codewords per level K")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--progress", action="store_true")
    d = sub.add_parser("dare", help="ranker target attention: off / twin / twin_proj / dare at d_att = d_repr, /2, /4")
    d.add_argument("--out", type=Path, default=Path("runs/dare"))
    d.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    d.add_argument("--arms", nargs="+", choices=tuple(ARMS), default=list(ARMS))
    d.add_argument("--events", type=Path, help="event log (default: the long-history synthetic benchmark)")
    d.add_argument("--event-format", choices=EVENT_FORMATS, default="taobao", help="preset spec of --events")
    d.add_argument("--event-spec", type=Path, help="event-log spec (TOML) of --events; overrides --event-format")
    d.add_argument("--split", choices=SPLITS, default="user", help="per-user or global temporal split of --events")
    d.add_argument("--history-stream", default=STREAM, help="stream the candidates attend to")
    d.add_argument("--history-fields", nargs="+", default=["item_id", "category_id"], help="ID fields of a behaviour and a candidate")
    d.add_argument("--num-users", type=int, default=1500, help="synthetic data: number of users")
    d.add_argument("--history-len", type=int, default=200, help="L: most recent events attended to")
    d.add_argument("--top-k", type=int, default=20)
    d.add_argument("--d-repr", type=int, default=32)
    d.add_argument("--epochs", type=int, default=2)
    d.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    d.add_argument("--progress", action="store_true")
    return p


def run_dare(config: DareConfig, out: Path) -> dict:
    """Every seed and arm into ``out/seed-<s>/<arm>/``; writes ``dare.json`` and ``dare.md`` to ``out``."""
    out = Path(out)
    results = []
    for seed in config.seeds:
        rows = load_rows(config, seed)
        for arm in config.arms:
            arm_out = out / f"seed-{seed}" / arm
            if arm_out.exists():
                raise ConfigError("out", "a directory without earlier results (they are never overwritten)", str(arm_out))
            start = time.perf_counter()
            results.append(run_arm(config, rows, arm, seed, arm_out))
            r = results[-1]
            print(f"seed {seed} {arm}: val NE {r['val_ne']:.4f} AUC {r['val_auc']:.4f} NDCG {r.get('search_ndcg', float('nan')):.4f} "
                  f"({time.perf_counter() - start:.0f}s)", flush=True)
            atomic_write_json(out / "dare.partial.json", results)
    summary = dare_summarize(results, config)
    atomic_write_json(out / "dare.json", summary)
    (out / "dare.md").write_text(dare_markdown(summary))
    return summary


def _main_dare(args: argparse.Namespace) -> int:
    config = DareConfig(seeds=tuple(args.seeds), arms=tuple(args.arms), num_users=args.num_users, history_len=args.history_len,
                        top_k=args.top_k, d_repr=args.d_repr, epochs=args.epochs, stream=args.history_stream,
                        fields=tuple(args.history_fields), events=args.events, event_format=args.event_format,
                        event_spec=args.event_spec, split=args.split, progress=args.progress)
    summary = run_dare(config, args.out)
    print(dare_markdown(summary))
    print(f"written: {args.out / 'dare.md'}, {args.out / 'dare.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.experiment == "dare":
        try:
            return _main_dare(args)
        except DuetError as exc:
            print(f"duet-experiment: error: {exc}", file=sys.stderr)
            return 2
    try:
        config = Table1Config(
            seeds=tuple(args.seeds), num_users=args.num_users, encoder_epochs=args.encoder_epochs,
            ranker_epochs=args.ranker_epochs, side=SideConfig(levels=args.levels, codebook_size=args.codebook_size),
            events=args.events, event_format=args.event_format, event_spec=args.event_spec, progress=args.progress,
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
