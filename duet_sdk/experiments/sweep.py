"""``duet-experiment sweep``: the training-recipe settings tried, with the primary val NE of each.

For each named setting it trains ClickAUN, ConvAUN and the baseline ranker (the models that need no
upstream embeddings) on one seed and records their primary val NE and its validation history. The
``previous`` setting is the recipe before issue 13 (3 epochs at lr 3e-3, the best epoch picked only
at epoch ends, no ID-embedding regularisation, a raw user ID as a static feature where the data has
one); the others vary one thing at a time around the current defaults.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from duet_sdk.errors import ConfigError
from duet_sdk.gate import GatePolicy
from duet_sdk.training.datasets import LoadedData
from duet_sdk.training.ranker import train_ranker
from duet_sdk.training.trainer import TrainConfig, TrainResult
from duet_sdk.training.upstream import train_upstream

MODELS = ("click", "conv", "baseline")
_DEFAULT = TrainConfig(progress=False)
SETTINGS: dict[str, TrainConfig] = {
    "previous": dataclasses.replace(
        _DEFAULT,
        epochs=3,
        min_steps=0,
        lr=3e-3,
        evals_per_epoch=1,
        patience=0,
        embedding_weight_decay=1e-5,
        lr_schedule="linear",
        init_bias=False,
    ),
    "default": _DEFAULT,
    "lr1e-3": dataclasses.replace(_DEFAULT, lr=1e-3),
    "emb_wd0": dataclasses.replace(_DEFAULT, embedding_weight_decay=0.0),
    "emb_wd1e-3": dataclasses.replace(_DEFAULT, embedding_weight_decay=1e-3),
    "rare_ids3": dataclasses.replace(_DEFAULT, rare_id_min_count=3),
    "3epochs_es": dataclasses.replace(_DEFAULT, epochs=3),
    "batch64": dataclasses.replace(_DEFAULT, batch_size=64),
    "3epochs_b64": dataclasses.replace(_DEFAULT, epochs=3, batch_size=64),
    "5epochs_es": dataclasses.replace(_DEFAULT, epochs=5),
    "lr1e-2": dataclasses.replace(_DEFAULT, lr=1e-2),
    "min_steps1000": dataclasses.replace(_DEFAULT, min_steps=1000),
    "min_steps2000": dataclasses.replace(_DEFAULT, min_steps=2000),
    "no_bias_init": dataclasses.replace(_DEFAULT, init_bias=False),
}


def run_setting(
    name: str, data: LoadedData, out: Path, seed: int, table_size: int | None = None, models: tuple[str, ...] = MODELS
) -> dict:
    """Train ``models`` (of ``MODELS``) under setting ``name`` into ``out``; their primary val NE and histories."""
    if name not in SETTINGS:
        raise ConfigError("setting", f"one of {tuple(SETTINGS)}", name)
    config = dataclasses.replace(SETTINGS[name], seed=seed)
    policy = GatePolicy(max_primary_ne=None)  # the sweep reports NE >= 1.0 instead of stopping at it
    ds, row = data.dataset, {"setting": name, "config": dataclasses.asdict(config)}
    for kind in [m for m in ("click", "conv") if m in models]:
        start = time.perf_counter()
        outcome = train_upstream(kind, data, out / name, "demo", config, policy, table_size)
        row[kind] = _figures(outcome.result, outcome.checkpoint.primary_task, time.perf_counter() - start)
    if "baseline" not in models:
        return row
    start = time.perf_counter()
    ranker = train_ranker(
        "baseline",
        ds.table,
        ds.ranker_train,
        ds.ranker_val,
        ({}, {}),
        {},
        out / name,
        data.description,
        config,
        policy,
        table_size=table_size,
    )
    row["baseline"] = _figures(ranker.result, ranker.checkpoint.primary_task, time.perf_counter() - start)
    return row


def _figures(result: TrainResult, primary_task: str, seconds: float) -> dict:
    return {
        "ne": result.val_ne[primary_task],
        "best_step": result.best_step,
        "steps": result.steps,
        "seconds": round(seconds, 1),
        "history": [(h["step"], round(h[f"val_ne/{primary_task}"], 4)) for h in result.history],
    }


def to_markdown(rows: list[dict], title: str) -> str:
    """One line per setting: primary val NE of each model, best step / steps, and each validation curve."""
    models = [m for m in MODELS if m in rows[0]]
    lines = [
        title,
        "",
        "| setting | " + " | ".join(f"{m} NE (best step/steps)" for m in models) + " |",
        "| --- | " + " | ".join("---" for _ in models) + " |",
    ]
    for row in rows:
        cells = [f"{row[m]['ne']:.4f} ({row[m]['best_step']}/{row[m]['steps']})" for m in models]
        lines.append(f"| {row['setting']} | " + " | ".join(cells) + " |")
    lines.append("")
    for row in rows:
        for m in models:
            curve = ", ".join(f"{ne:.3f}@{step}" for step, ne in row[m]["history"])
            lines.append(f"- {row['setting']} {m} val NE by step: {curve}")
    return "\n".join(lines) + "\n"
