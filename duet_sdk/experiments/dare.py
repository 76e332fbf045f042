"""DARE experiment: the ranker without target attention, with TWIN, TWIN w/ proj. and DARE (at
``d_att`` = ``d_repr``, ``d_repr/2``, ``d_repr/4``), over seeds, on identical rows per seed.

Per arm: primary val NE and AUC, and on the long-history synthetic benchmark (which knows every
behaviour's true relevance to the candidate) NDCG@k of the search stage on the validation rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from duet_sdk.data import schema as keys
from duet_sdk.data.events import EventTable, ExampleSet
from duet_sdk.data.long_history import STREAM, LongHistoryConfig, World, generate_long_history
from duet_sdk.errors import ConfigError
from duet_sdk.models.config import TargetAttentionConfig
from duet_sdk.models.ranker import Ranker
from duet_sdk.training.ranker import RankerBatches, history_spec, ranker_config, train_ranker
from duet_sdk.training.trainer import TrainConfig, predict

DATASETS = ("long_history", "longtail")
# DareConfig.benchmark_labels() of the default long-history benchmark: field -> value.
DEFAULT_LABELS = {"label_relevance": "sum", "relevance_scale": 1.0, "relevance": "graded"}
# Default history stream and fields per data source.
HISTORY_DEFAULTS = {
    "long_history": (STREAM, ("item_id", "category_id")),
    "longtail": ("click", ("item_id", "author_id")),
    "events": ("click", ("item_id",)),
}
# arm -> (target-attention variant or None, d_repr / d_att)
ARMS: dict[str, tuple[str | None, int]] = {
    "off": (None, 1),
    "twin": ("twin", 1),
    "twin_proj": ("twin_proj", 1),
    "dare": ("dare", 1),
    "dare_d2": ("dare", 2),
    "dare_d4": ("dare", 4),
}


@dataclass(frozen=True)
class DareConfig:
    """Seeds, data and model sizes of the experiment. ``events`` (an event log) replaces the synthetic
    ``dataset``; ``stream`` / ``fields`` None take the data source's defaults (``HISTORY_DEFAULTS``).
    ``label_relevance`` / ``relevance_scale`` / ``relevance`` shape the long-history benchmark's labels
    and truth (``LongHistoryConfig``; ``signed``: attention and representation conflict;
    ``complements``: a relevance the search must learn)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = tuple(ARMS)
    dataset: str = "long_history"
    num_users: int = 1500
    label_relevance: str = "sum"
    relevance_scale: float = 1.0
    relevance: str = "graded"
    aux_loss_weight: float = 0.0
    history_len: int = 200
    top_k: int = 20
    d_repr: int = 32
    epochs: int = 2
    lr: float = 3e-3
    stream: str | None = None
    fields: tuple[str, ...] | None = None
    events: Path | None = None
    event_format: str = "taobao"
    event_spec: Path | None = None
    split: str = "user"
    progress: bool = False

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("DareConfig.seeds", "at least one distinct seed", self.seeds)
        unknown = [a for a in self.arms if a not in ARMS]
        if not self.arms or unknown:
            raise ConfigError("DareConfig.arms", f"names from {tuple(ARMS)}", self.arms)
        if self.dataset not in DATASETS:
            raise ConfigError("DareConfig.dataset", f"one of {DATASETS}", self.dataset)
        synthetic_history = self.events is None and self.dataset == "long_history"
        if not synthetic_history and self.benchmark_labels() != DEFAULT_LABELS:
            raise ConfigError(
                "DareConfig.label_relevance", "the default sum at scale 1 outside long_history", self.label_relevance
            )
        stream, fields = HISTORY_DEFAULTS["events" if self.events is not None else self.dataset]
        object.__setattr__(self, "stream", self.stream or stream)
        object.__setattr__(self, "fields", tuple(self.fields or fields))

    def benchmark_labels(self) -> dict:
        """The long-history benchmark's label settings: ``{field: value}`` for the fields of ``DEFAULT_LABELS``."""
        return {name: getattr(self, name) for name in DEFAULT_LABELS}

    def target_attention(self, arm: str) -> TargetAttentionConfig | None:
        variant, divisor = ARMS[arm]
        if variant is None:
            return None
        return TargetAttentionConfig(
            variant=variant,
            stream=self.stream,
            fields=self.fields,
            max_len=self.history_len,
            top_k=self.top_k,
            d_repr=self.d_repr,
            d_att=self.d_repr // divisor,
            aux_loss_weight=self.aux_loss_weight,
        )


@dataclass
class LoadedRows:
    """What one seed trains on; ``world`` is known only for the synthetic benchmark."""

    table: EventTable
    train: ExampleSet
    val: ExampleSet
    description: dict
    world: World | None = None


def load_rows(config: DareConfig, seed: int) -> LoadedRows:
    if config.events is not None:
        from duet_sdk.data.eventlog import EventLogOptions
        from duet_sdk.training.datasets import event_log_data, event_spec

        spec = event_spec(config.event_format, config.event_spec)
        data = event_log_data(config.events, spec, EventLogOptions(seed=seed, split=config.split))
        ds = data.dataset
        return LoadedRows(ds.table, ds.ranker_train, ds.ranker_val, data.description)
    if config.dataset == "longtail":
        from duet_sdk.data.synthetic_longtail import LongTailConfig
        from duet_sdk.training.datasets import longtail_data

        data = longtail_data(LongTailConfig(num_users=config.num_users, seed=seed))
        return LoadedRows(data.dataset.table, data.dataset.ranker_train, data.dataset.ranker_val, data.description)
    synthetic = LongHistoryConfig(
        num_users=config.num_users,
        label_window=config.history_len,
        label_relevance=config.label_relevance,
        relevance_scale=config.relevance_scale,
        relevance=config.relevance,
        seed=seed,
    )
    ds = generate_long_history(synthetic)
    description = {"source": "long_history", "num_users": config.num_users, "seed": seed}
    if config.benchmark_labels() != DEFAULT_LABELS:
        description |= config.benchmark_labels()
    return LoadedRows(ds.table, ds.ranker_train, ds.ranker_val, description, ds.world)


def auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC, NaN when only one class is present."""
    return float(roc_auc_score(labels, probs)) if 0 < labels.sum() < len(labels) else float("nan")


def ndcg_at_k(gains_in_order: np.ndarray, ideal_gains: np.ndarray) -> np.ndarray:
    """(R,) NDCG of retrieved gains (R, k) in retrieval order against the ideal top-k gains (R, k);
    NaN where the ideal DCG is 0 (nothing relevant to find)."""
    discount = 1.0 / np.log2(np.arange(2, gains_in_order.shape[1] + 2))
    dcg, ideal = gains_in_order @ discount, ideal_gains @ discount
    return np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), np.nan)


def _search_batches(
    ranker: Ranker, table: EventTable, rows: ExampleSet, batch_size: int = 512
) -> Iterator[tuple[dict, torch.Tensor, torch.Tensor]]:
    source = RankerBatches(table, rows, {}, history_spec(ranker.config))
    ta = ranker.target_attention
    for batch in source.batches(batch_size):
        targets = batch[keys.ITEM_SPARSE].index_select(-1, ranker.target_columns)  # (B, 1, F)
        valid = ta.valid_mask(batch[keys.HISTORY_IDS], batch[keys.HISTORY_LEN])
        _, index, selected = ta.search(ta.embed_attention(batch[keys.HISTORY_IDS]), valid, ta.embed_attention(targets))
        yield batch, index[:, 0], selected[:, 0]


@torch.no_grad()
def search_ndcg(
    ranker: Ranker, table: EventTable, rows: ExampleSet, world: World, random_seed: int | None = None
) -> float:
    """Mean NDCG@k (gain ``2^rel - 1``) of the ranker's search over the validation rows that have a
    relevant behaviour; with ``random_seed``, of a search that picks k valid behaviours at random."""
    ranker.eval()
    values = []
    rng = np.random.default_rng(random_seed)
    for batch, index, selected in _search_batches(ranker, table, rows):
        history, target = (
            batch[keys.HISTORY_IDS].numpy(),
            batch[keys.ITEM_SPARSE][:, 0].index_select(-1, ranker.target_columns).numpy(),
        )
        valid = ranker.target_attention.valid_mask(batch[keys.HISTORY_IDS], batch[keys.HISTORY_LEN]).numpy()
        gains = np.where(valid, 2.0 ** world.relevance(history, target) - 1.0, 0.0)  # (B, T)
        k = index.shape[1]
        if random_seed is not None:
            noise = np.where(valid, rng.random(valid.shape), -1.0)
            index = torch.from_numpy(np.argsort(-noise, axis=1)[:, :k])
            selected = torch.from_numpy(np.take_along_axis(valid, index.numpy(), 1))
        picked = np.where(selected.numpy(), np.take_along_axis(gains, index.clamp(min=0).numpy(), 1), 0.0)  # (B, k)
        ideal = -np.sort(-gains, axis=1)[:, :k]
        values.append(ndcg_at_k(picked, ideal))
    scores = np.concatenate(values)
    return float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")


def run_arm(config: DareConfig, rows: LoadedRows, arm: str, seed: int, out: Path) -> dict:
    """Train one arm into ``out``; its val NE, AUC and (synthetic) search NDCG@k."""
    ta = config.target_attention(arm)
    train_config = TrainConfig(epochs=config.epochs, lr=config.lr, seed=seed, progress=config.progress)
    initial_ndcg = None
    if ta is not None and rows.world is not None:  # the search before training (same seed, same init)
        torch.manual_seed(seed)
        initial = Ranker(ranker_config("baseline", rows.table.schema, {}, target_attention=ta))
        initial_ndcg = search_ndcg(initial, rows.table, rows.val, rows.world)
    outcome = train_ranker(
        "baseline",
        rows.table,
        rows.train,
        rows.val,
        ({}, {}),
        {},
        out,
        rows.description,
        train_config,
        target_attention=ta,
    )
    model = outcome.result.model
    history = history_spec(model.ranker.config)
    probs = predict(model, RankerBatches(rows.table, rows.val, {}, history))[:, 0]
    result = {
        "arm": arm,
        "seed": seed,
        "d_att": ta.attention_dim if ta else None,
        "d_repr": ta.d_repr if ta else None,
        "val_ne": outcome.checkpoint.primary_ne,
        "val_auc": auc(rows.val.labels[:, 0], probs),
        "train_seconds": round(outcome.result.seconds, 1),
        "checkpoint": str(outcome.checkpoint.path),
    }
    if ta is not None and rows.world is not None:
        result["search_ndcg"] = search_ndcg(model.ranker, rows.table, rows.val, rows.world)
        result["initial_search_ndcg"] = initial_ndcg
        result["random_search_ndcg"] = search_ndcg(model.ranker, rows.table, rows.val, rows.world, random_seed=seed)
    return result


def _stats(values: list[float]) -> dict[str, float]:
    array = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if not len(array):
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        "n": int(len(array)),
    }


def summarize(results: list[dict], config: DareConfig) -> dict:
    """Mean / sample sd over seeds per arm, and the paired per-seed comparisons the issue targets."""
    by = {(r["arm"], r["seed"]): r for r in results}
    seeds = sorted({r["seed"] for r in results})
    arms = [a for a in config.arms if any((a, s) in by for s in seeds)]
    metrics = ("val_ne", "val_auc", "search_ndcg", "initial_search_ndcg", "random_search_ndcg")
    table = {
        arm: {
            "d_att": by[(arm, seeds[0])]["d_att"],
            **{m: _stats([by[(arm, s)].get(m) for s in seeds if (arm, s) in by]) for m in metrics},
        }
        for arm in arms
    }

    def paired(a: str, b: str, metric: str, relative: bool = False) -> dict | None:
        pairs = [(by[(a, s)].get(metric), by[(b, s)].get(metric)) for s in seeds if (a, s) in by and (b, s) in by]
        if not pairs or any(x is None or y is None for x, y in pairs):
            return None
        return _stats([100.0 * (x - y) / y if relative else x - y for x, y in pairs])

    comparisons = {
        "dare_minus_twin_ne": paired("dare", "twin", "val_ne"),
        "dare_minus_twin_auc": paired("dare", "twin", "val_auc"),
        "dare_minus_twin_ndcg": paired("dare", "twin", "search_ndcg"),
        "dare_d2_vs_dare_ne_pct": paired("dare_d2", "dare", "val_ne", relative=True),
        "dare_d4_vs_dare_ne_pct": paired("dare_d4", "dare", "val_ne", relative=True),
        "dare_vs_off_ne_pct": paired("dare", "off", "val_ne", relative=True),
        "twin_proj_minus_twin_ne": paired("twin_proj", "twin", "val_ne"),
    }
    return {
        "config": {
            "seeds": seeds,
            "history_len": config.history_len,
            "top_k": config.top_k,
            "d_repr": config.d_repr,
            "epochs": config.epochs,
            "num_users": config.num_users,
            "dataset": config.dataset,
            **config.benchmark_labels(),
            "aux_loss_weight": config.aux_loss_weight,
            "events": str(config.events) if config.events else None,
        },
        "arms": table,
        "comparisons": comparisons,
        "per_seed": results,
    }


def _synthetic_description(c: dict) -> str:
    text = f"{c.get('dataset', 'long_history')} synthetic, {c['num_users']} users"
    labels = {name: c.get(name, default) for name, default in DEFAULT_LABELS.items()}  # older files lack them
    if c["dataset"] == "long_history" and labels != DEFAULT_LABELS:
        text += f", labels: {labels['label_relevance']} of the {labels['relevance']} relevance, "
        text += f"scale {labels['relevance_scale']:g}"
    return text


def to_markdown(summary: dict) -> str:
    """The summary as markdown (mean ± sd over seeds; paired differences per seed)."""
    fmt = lambda s, p=4: "—" if s is None or not s["n"] else f"{s['mean']:.{p}f} ± {s['std']:.{p}f}"  # noqa: E731
    c = summary["config"]
    lines = [
        f"Seeds {c['seeds']}; L = {c['history_len']}, k = {c['top_k']}, d_repr = {c['d_repr']}, {c['epochs']} epochs, "
        f"auxiliary full-history loss weight {c.get('aux_loss_weight', 0.0):g}; "
        f"data: {c['events'] or _synthetic_description(c)}",
        "",
        "| arm | d_att | val NE | val AUC | search NDCG@k | before training | random search |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, row in summary["arms"].items():
        lines.append(
            f"| {arm} | {row['d_att'] or '—'} | {fmt(row['val_ne'])} | {fmt(row['val_auc'])} | "
            f"{fmt(row['search_ndcg'])} | {fmt(row['initial_search_ndcg'])} | {fmt(row['random_search_ndcg'])} |"
        )
    names = {
        "dare_minus_twin_ne": ("DARE − TWIN val NE (negative: DARE better)", 5),
        "dare_minus_twin_auc": ("DARE − TWIN val AUC", 5),
        "dare_minus_twin_ndcg": ("DARE − TWIN search NDCG@k", 4),
        "dare_d2_vs_dare_ne_pct": ("DARE d_att = d_repr/2 vs d_repr: relative NE change (%)", 3),
        "dare_d4_vs_dare_ne_pct": ("DARE d_att = d_repr/4 vs d_repr: relative NE change (%)", 3),
        "dare_vs_off_ne_pct": ("DARE vs no target attention: relative NE change (%)", 3),
        "twin_proj_minus_twin_ne": ("TWIN w/ proj. − TWIN val NE", 5),
    }
    lines += ["", "Paired per seed (mean ± sd):", ""]
    for key, (label, places) in names.items():
        value = summary["comparisons"].get(key)
        if value is not None:
            lines.append(f"- {label}: {fmt(value, places)}")
    return "\n".join(lines) + "\n"
