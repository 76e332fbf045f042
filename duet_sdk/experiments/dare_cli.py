"""``duet-experiment dare``: its flags, the run over seeds and arms, and the files it writes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from duet_sdk.atomic_io import atomic_write_json
from duet_sdk.cli_common import DefaultsHelpFormatter
from duet_sdk.data.eventlog import SPLITS
from duet_sdk.data.long_history import LABEL_RELEVANCE, RELEVANCE
from duet_sdk.errors import ConfigError
from duet_sdk.experiments.dare import ARMS, DATASETS, DareConfig, load_rows, run_arm, summarize, to_markdown
from duet_sdk.training.datasets import EVENT_FORMATS


def add_long_history_label_arguments(p: argparse.ArgumentParser) -> None:
    """``--label-relevance``, ``--relevance-scale``, ``--relevance``: the long-history benchmark's labels
    and truth (``LongHistoryConfig``)."""
    p.add_argument(
        "--label-relevance",
        choices=LABEL_RELEVANCE,
        default="sum",
        help="long_history labels from the sum, the max or the satisfaction-signed sum (attention and "
        "representation conflict) of the behaviours' relevance to the candidate",
    )
    p.add_argument("--relevance-scale", type=float, default=1.0, help="long_history: label logit per log1p(relevance)")
    p.add_argument(
        "--relevance",
        choices=RELEVANCE,
        default="graded",
        help="long_history truth: graded (same item, same category, partner category) or complements "
        "(partner categories only: a relevance the search must learn)",
    )


def add_dare_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "dare",
        formatter_class=DefaultsHelpFormatter,
        help="ranker target attention: off / twin / twin_proj / dare at d_att = d_repr, /2, /4",
    )
    d.add_argument("--out", type=Path, default=Path("runs/dare"))
    d.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    d.add_argument("--arms", nargs="+", choices=tuple(ARMS), default=list(ARMS))
    d.add_argument(
        "--dataset",
        choices=DATASETS,
        default="long_history",
        help="synthetic benchmark without --events: long_history (knows each behaviour's relevance) or longtail",
    )
    d.add_argument("--events", type=Path, help="event log (default: --dataset)")
    d.add_argument("--event-format", choices=EVENT_FORMATS, default="taobao", help="preset spec of --events")
    d.add_argument("--event-spec", type=Path, help="event-log spec (TOML) of --events; overrides --event-format")
    d.add_argument("--split", choices=SPLITS, default="user", help="per-user or global temporal split of --events")
    d.add_argument(
        "--history-stream", help="stream the candidates attend to (default: behavior on long_history, else click)"
    )
    d.add_argument(
        "--history-fields",
        nargs="+",
        help="ID fields of a behaviour and a candidate "
        "(default: item_id category_id on long_history, item_id author_id on longtail, item_id on event logs)",
    )
    d.add_argument("--num-users", type=int, default=1500, help="synthetic data: number of users")
    add_long_history_label_arguments(d)
    d.add_argument("--history-len", type=int, default=200, help="L: most recent events attended to")
    d.add_argument("--top-k", type=int, default=20)
    d.add_argument("--d-repr", type=int, default=32)
    d.add_argument("--epochs", type=int, default=2)
    d.add_argument(
        "--aux-loss-weight",
        type=float,
        default=0.0,
        help="weight of the training-only auxiliary loss on the full-history attention (DARE's reference recipe)",
    )
    d.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    d.add_argument("--progress", action="store_true")


def add_dare_merge_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "dare-merge",
        formatter_class=DefaultsHelpFormatter,
        help="one DARE table from dare runs of different seeds (run as separate processes)",
    )
    m.add_argument("--out", type=Path, required=True, help="writes OUT/dare.md and OUT/dare.json")
    m.add_argument("parts", type=Path, nargs="+", help="directories holding a dare.json each")


def merge_dare(args: argparse.Namespace) -> int:
    """Merge the per-seed results of several ``dare.json`` files (distinct seeds, same settings)."""
    summaries = [json.loads((part / "dare.json").read_text()) for part in args.parts]
    configs = [{k: v for k, v in s["config"].items() if k != "seeds"} for s in summaries]
    results = [r for s in summaries for r in s["per_seed"]]
    if any(c != configs[0] for c in configs) or len({(r["arm"], r["seed"]) for r in results}) != len(results):
        raise ConfigError("parts", "dare runs of distinct seeds with the same settings", [str(p) for p in args.parts])
    first = configs[0]
    settings = {f.name for f in dataclasses.fields(DareConfig)} - {"seeds", "events"}  # what summarize() records
    config = DareConfig(
        seeds=tuple(sorted({r["seed"] for r in results})),
        arms=tuple(a for a in ARMS if any(r["arm"] == a for r in results)),
        events=Path(first["events"]) if first.get("events") else None,
        **{k: v for k, v in first.items() if k in settings},
    )
    summary = summarize(results, config)
    summary["parts"] = [str(p) for p in args.parts]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "dare.json", summary)
    (args.out / "dare.md").write_text(to_markdown(summary))
    print(to_markdown(summary))
    return 0


def run_dare(config: DareConfig, out: Path) -> dict:
    """Every seed and arm into ``out/seed-<s>/<arm>/``; writes ``dare.json`` and ``dare.md`` to ``out``."""
    out = Path(out)
    results = []
    for seed in config.seeds:
        rows = load_rows(config, seed)
        for arm in config.arms:
            arm_out = out / f"seed-{seed}" / arm
            if arm_out.exists():
                raise ConfigError(
                    "out", "a directory without earlier results (they are never overwritten)", str(arm_out)
                )
            start = time.perf_counter()
            results.append(run_arm(config, rows, arm, seed, arm_out))
            r = results[-1]
            print(
                f"seed {seed} {arm}: val NE {r['val_ne']:.4f} AUC {r['val_auc']:.4f} NDCG "
                f"{r.get('search_ndcg', float('nan')):.4f} "
                f"({time.perf_counter() - start:.0f}s)",
                flush=True,
            )
            atomic_write_json(out / "dare.partial.json", results)
    summary = summarize(results, config)
    atomic_write_json(out / "dare.json", summary)
    (out / "dare.md").write_text(to_markdown(summary))
    return summary


def main_dare(args: argparse.Namespace) -> int:
    config = DareConfig(
        seeds=tuple(args.seeds),
        arms=tuple(args.arms),
        dataset=args.dataset,
        num_users=args.num_users,
        label_relevance=args.label_relevance,
        relevance_scale=args.relevance_scale,
        relevance=args.relevance,
        aux_loss_weight=args.aux_loss_weight,
        history_len=args.history_len,
        top_k=args.top_k,
        d_repr=args.d_repr,
        epochs=args.epochs,
        stream=args.history_stream,
        fields=tuple(args.history_fields) if args.history_fields else None,
        events=args.events,
        event_format=args.event_format,
        event_spec=args.event_spec,
        split=args.split,
        progress=args.progress,
    )
    summary = run_dare(config, args.out)
    print(to_markdown(summary))
    print(f"written: {args.out / 'dare.md'}, {args.out / 'dare.json'}")
    return 0
