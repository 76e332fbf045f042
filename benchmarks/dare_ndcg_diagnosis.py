"""Why does DARE's search NDCG@k trail TWIN's on the long-history synthetic benchmark? A diagnosis.

Per seed it generates the experiment's rows (``duet-experiment dare`` defaults), trains the ranker's
target attention in several settings with the experiment's recipe, and for every trained (and every
freshly initialised) model reports:

- ``ndcg``: the experiment's ``search_ndcg`` (batched, through the ranker's history collation);
- ``naive_ndcg``: a per-row reference on the first ``--naive-rows`` validation rows (history sliced
  from the event table, attention embeddings read from the variant's table directly, scores in
  float64, a full stable sort, DCG by hand), next to ``subset_ndcg``, the experiment's figure on the
  same rows; the two must agree, or the experiment's figure is wrong;
- ``repr_ndcg``: the experiment's search run on the *representation* table instead (for ``dare``:
  what its other table would retrieve);
- ``margin`` (on the same rows as the naive reference): per row, (mean score of relevant behaviours
  − mean score of irrelevant ones) / sd of the row's scores, averaged: how well the attention space
  separates what the generator made relevant;
- ``att_grad`` / ``repr_grad``: mean gradient norm per step of the attention / representation table
  (before clipping).

Settings (``--settings``): ``twin``, ``dare`` (the recipe), ``dare_long`` (``--long-epochs`` passes, no
early stop), ``dare_att_lr0.1`` / ``dare_att_lr10`` (the attention table's learning rate scaled),
``dare_scale4`` / ``dare_scale0.25`` (the search's score scale ``1/sqrt(d_att)`` multiplied, i.e. the
softmax temperature divided), ``dare_frozen_att`` (the attention table not trained).

``--label-relevance max`` regenerates the benchmark with labels from the most relevant behaviour
instead of the summed relevance (a world where a sharp attention is what the loss wants);
``--label-relevance signed`` with labels from the satisfaction-signed sum (attention and representation
conflict: ``duet_sdk.data.long_history``).

    PYTHONPATH=. python benchmarks/dare_ndcg_diagnosis.py --seeds 0 1 2 --threads 1 --out runs/dare-diag
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from duet_sdk.data.long_history import STREAM
from duet_sdk.experiments.dare import DareConfig, LoadedRows, load_rows, search_ndcg
from duet_sdk.experiments.dare_cli import add_long_history_label_arguments
from duet_sdk.models.ranker import Pointwise, Ranker
from duet_sdk.training import trainer as trainer_module
from duet_sdk.training.ranker import RankerBatches, history_spec, ranker_config
from duet_sdk.training.recipe import parameter_groups
from duet_sdk.training.trainer import TrainConfig, train

SETTINGS = (
    "twin",
    "dare",
    "dare_long",
    "dare_att_lr0.1",
    "dare_att_lr10",
    "dare_frozen_att",
    "dare_scale4",
    "dare_scale0.25",
)


def naive_search(
    rows: LoadedRows, ranker: Ranker, embed: Callable[[np.ndarray], np.ndarray], limit: int | None = None
) -> tuple[float, float]:
    """(mean NDCG@k, mean relevance margin) of a search with ``embed`` ((T, F) raw IDs -> (T, d)
    float64), one validation row at a time, from the event table; rows without a relevant behaviour
    are left out of the NDCG (as in the experiment)."""
    ta = ranker.target_attention
    cfg = ta.config
    fields = [rows.table.schema.event_fields.index(f) for f in cfg.fields]
    target_cols = [rows.table.schema.item_sparse.index(f) for f in cfg.fields]
    events = rows.table.streams[STREAM]
    val = rows.val
    n = len(val) if limit is None else min(limit, len(val))
    end = rows.table.history_end(STREAM, val.user_index[:n], val.request_time[:n])
    ndcgs, margins = [], []
    discount = 1.0 / np.log2(np.arange(2, cfg.top_k + 2))
    for r in range(n):
        start = max(int(events.offsets[val.user_index[r]]), int(end[r]) - cfg.max_len)
        history = events.ids[start : end[r]][:, fields]  # (T, F), oldest first
        if not len(history):
            continue
        target = val.item_sparse[r][target_cols]  # (F,)
        scores = embed(history) @ embed(target[None])[0]  # (T,)
        rel = rows.world.relevance(history, target)  # (T,)
        gains = 2.0**rel - 1.0
        order = np.argsort(-scores, kind="stable")[: cfg.top_k]
        ideal = np.sort(gains)[::-1][: cfg.top_k]
        if ideal.sum() > 0:
            ndcgs.append(float(gains[order] @ discount[: len(order)] / (ideal @ discount[: len(ideal)])))
        if 0 < (rel > 0).sum() < len(rel) and scores.std() > 0:
            margins.append(float((scores[rel > 0].mean() - scores[rel == 0].mean()) / scores.std()))
    return float(np.mean(ndcgs)), float(np.mean(margins))


def table_embed(table: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """(T, F) raw IDs -> (T, d) float64 concatenated field embeddings of one multi-hash table."""

    @torch.no_grad()
    def embed(ids: np.ndarray) -> np.ndarray:
        return table(torch.from_numpy(np.ascontiguousarray(ids))).flatten(-2).double().numpy()

    return embed


def _groups_with_att_lr(lr_scale: float, lr: float) -> Callable:
    """parameter_groups with the attention table in its own group at ``lr_scale * lr`` (0: frozen)."""

    def groups(model, weight_decay, embedding_weight_decay):
        att = [m.target_attention.att_table.table.weight for m in model.modules() if isinstance(m, Ranker)]
        att_ids = {id(p) for p in att}
        base = parameter_groups(model, weight_decay, embedding_weight_decay)
        for g in base:
            g["params"] = [p for p in g["params"] if id(p) not in att_ids]
        if lr_scale > 0:
            base.append({"params": att, "weight_decay": embedding_weight_decay, "lr": lr_scale * lr, "name": "att"})
        else:
            for p in att:
                p.requires_grad_(False)
        return [g for g in base if g["params"]]

    return groups


def evaluate_model(rows: LoadedRows, ranker: Ranker, naive_limit: int | None) -> dict:
    ta = ranker.target_attention
    att_table = ta.att_table if ta.att_table is not None else ta.repr_table
    out = {"ndcg": search_ndcg(ranker, rows.table, rows.val, rows.world)}
    subset = rows.val.subset(np.arange(min(naive_limit or len(rows.val), len(rows.val))))
    out["subset_ndcg"] = search_ndcg(ranker, rows.table, subset, rows.world)
    out["naive_ndcg"], out["margin"] = naive_search(rows, ranker, table_embed(att_table), naive_limit)
    if ta.att_table is not None and ta.att_table.table.weight.shape == ta.repr_table.table.weight.shape:
        saved, ta.att_table = ta.att_table, ta.repr_table  # the same search, on the representation table
        try:
            out["repr_ndcg"] = search_ndcg(ranker, rows.table, rows.val, rows.world)
        finally:
            ta.att_table = saved
    return out


def run_setting(rows: LoadedRows, base: DareConfig, setting: str, seed: int, args) -> dict:
    variant = "twin" if setting == "twin" else "dare"
    ta_config = replace(base.target_attention("dare"), variant=variant)
    config = ranker_config("baseline", rows.table.schema, {}, target_attention=ta_config)
    torch.manual_seed(seed)  # as train_ranker: the initialisation depends on the seed alone
    ranker = Ranker(config)
    ta = ranker.target_attention
    if setting.startswith("dare_scale"):
        ta.scale *= float(setting.removeprefix("dare_scale"))
    result = {"setting": setting, "seed": seed}
    initial = evaluate_model(rows, ranker, args.naive_rows)
    result.update({f"initial_{k}": v for k, v in initial.items()})
    grads: dict[str, list[float]] = {"att": [], "repr": []}
    ta.repr_table.table.weight.register_hook(lambda g: grads["repr"].append(float(g.norm())))
    if ta.att_table is not None:
        ta.att_table.table.weight.register_hook(lambda g: grads["att"].append(float(g.norm())))
    epochs, patience = (args.long_epochs, 0) if setting == "dare_long" else (base.epochs, TrainConfig().patience)
    train_config = TrainConfig(epochs=epochs, lr=base.lr, seed=seed, progress=False, patience=patience)
    history = history_spec(config)
    lr_scale = {"dare_att_lr0.1": 0.1, "dare_att_lr10": 10.0, "dare_frozen_att": 0.0}.get(setting)
    original = trainer_module.parameter_groups
    if lr_scale is not None:
        trainer_module.parameter_groups = _groups_with_att_lr(lr_scale, base.lr)
    try:
        start = time.perf_counter()
        trained = train(
            Pointwise(ranker),
            {t.name: t.weight for t in config.tasks},
            config.primary_task,
            RankerBatches(rows.table, rows.train, {}, history),
            RankerBatches(rows.table, rows.val, {}, history),
            train_config,
        )
    finally:
        trainer_module.parameter_groups = original
    result.update(
        val_ne=trained.val_ne[config.primary_task],
        steps=trained.steps,
        best_step=trained.best_step,
        train_seconds=round(time.perf_counter() - start, 1),
        att_grad=statistics.fmean(grads["att"]) if grads["att"] else None,
        repr_grad=statistics.fmean(grads["repr"]) if grads["repr"] else None,
    )
    result.update(evaluate_model(rows, trained.model.ranker, args.naive_rows))
    return result


def summarize(results: list[dict]) -> list[dict]:
    table = []
    for setting in dict.fromkeys(r["setting"] for r in results):
        rs = [r for r in results if r["setting"] == setting]
        row = {"setting": setting, "n": len(rs)}
        for key in rs[0]:
            values = [r[key] for r in rs if isinstance(r.get(key), (int, float)) and key not in ("seed",)]
            if len(values) == len(rs) and key not in ("seed",):
                row[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
        table.append(row)
    return table


def to_markdown(table: list[dict], seeds: list[int]) -> str:
    cols = [
        ("initial_ndcg", "NDCG@k at init"),
        ("ndcg", "NDCG@k trained"),
        ("subset_ndcg", "NDCG@k (checked rows)"),
        ("naive_ndcg", "naive NDCG@k (same rows)"),
        ("repr_ndcg", "NDCG@k of repr table"),
        ("initial_margin", "margin at init"),
        ("margin", "margin trained"),
        ("att_grad", "att grad"),
        ("repr_grad", "repr grad"),
        ("val_ne", "val NE"),
        ("steps", "steps"),
    ]
    lines = [
        f"Seeds {seeds} (mean ± sd)",
        "",
        "| setting | " + " | ".join(c[1] for c in cols) + " |",
        "| --- " * (len(cols) + 1) + "|",
    ]
    for row in table:
        cells = []
        for key, _ in cols:
            if key in row:
                mean, sd = row[key]
                places = 5 if key == "val_ne" else 0 if key == "steps" else 4
                cells.append(f"{mean:.{places}f} ± {sd:.{places}f}" if key != "att_grad" else f"{mean:.2e} ± {sd:.1e}")
            else:
                cells.append("—")
        lines.append(f"| {row['setting']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    p.add_argument("--num-users", type=int, default=1500)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--long-epochs", type=int, default=6)
    p.add_argument("--naive-rows", type=int, default=800, help="validation rows the naive reference checks (0: all)")
    p.add_argument("--merge", type=Path, nargs="+", help="only summarise these earlier --out folders into --out")
    add_long_history_label_arguments(p)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    args.naive_rows = args.naive_rows or None
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        results = [r for d in args.merge for r in json.loads((d / "diagnosis.json").read_text())["per_seed"]]
        return _write(args.out, results)
    base = DareConfig(
        seeds=tuple(args.seeds),
        num_users=args.num_users,
        epochs=args.epochs,
        label_relevance=args.label_relevance,
        relevance_scale=args.relevance_scale,
        relevance=args.relevance,
    )
    results = []
    for seed in args.seeds:
        rows = load_rows(base, seed)
        for setting in args.settings:
            results.append(run_setting(rows, base, setting, seed, args))
            r = results[-1]
            print(
                f"seed {seed} {setting}: NDCG init {r['initial_ndcg']:.4f} -> {r['ndcg']:.4f} "
                f"(naive {r['naive_ndcg']:.4f}, repr table {r.get('repr_ndcg', float('nan')):.4f}), "
                f"margin {r['initial_margin']:.3f} -> {r['margin']:.3f}, val NE {r['val_ne']:.4f}, "
                f"{r['steps']} steps ({r['train_seconds']}s)",
                flush=True,
            )
            (args.out / "diagnosis.partial.json").write_text(json.dumps(results, indent=1))
    _write(args.out, results)


def _write(out: Path, results: list[dict]) -> None:
    table = summarize(results)
    (out / "diagnosis.json").write_text(json.dumps({"per_seed": results, "summary": table}, indent=1))
    markdown = to_markdown(table, sorted({r["seed"] for r in results}))
    (out / "diagnosis.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
