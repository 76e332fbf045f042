"""DUET Table 1 on our data: ranker val NE for baseline / +ClickAUE / +ConvAUE / DUET over seeds.

Per seed: train both encoders behind the gate, train a SIDE codec on each accepted encoder's
embeddings, then the four ranker variants on SIDE codes (plus DUET on float embeddings), all on the
same rows and seed. Gains are relative NE reductions against the baseline; the additive upper bound
is ClickAUE's gain plus ConvAUE's gain (DUET §5.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.data.eventlog import EventLogOptions
from duet_sdk.errors import ConfigError, DuetError
from duet_sdk.metrics import relative_ne_gain
from duet_sdk.models.ranker import codes_key, embedding_key
from duet_sdk.side import SideConfig
from duet_sdk.training.datasets import LoadedData, event_log_data, event_spec, synthetic_data
from duet_sdk.training.features import prepare_upstream, row_features
from duet_sdk.training.presets import DEFAULT_EPOCHS
from duet_sdk.training.ranker import train_ranker
from duet_sdk.training.trainer import TrainConfig
from duet_sdk.training.upstream import train_upstream

VARIANTS = ("baseline", "click", "conv", "duet")
ENCODERS = ("click", "conv")


@dataclass(frozen=True)
class Table1Config:
    """Seeds, data and training lengths of the experiment."""

    seeds: tuple[int, ...] = (0, 1, 2)
    num_users: int = 3000
    encoder_epochs: int | None = None  # None: the per-model default (presets.DEFAULT_EPOCHS)
    ranker_epochs: int = 3
    side: SideConfig = field(default_factory=SideConfig)
    events: Path | None = None
    event_format: str = "taobao"
    event_spec: Path | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("Table1Config.seeds", "at least one distinct seed", self.seeds)


@dataclass
class SeedRun:
    """One seed's figures: primary val NE of encoders and rankers, codec metrics, analysis embeddings."""

    seed: int
    encoder_ne: dict[str, float]
    ranker_ne: dict[str, float]
    duet_float_ne: float
    codec: dict[str, dict]
    embeddings: dict[str, np.ndarray]  # per encoder: (users, dim) val embeddings, one row per user
    projected: dict[str, np.ndarray]  # per encoder: the DUET ranker's projection of the decoded codes


def _load(config: Table1Config, seed: int) -> LoadedData:
    if config.events is not None:
        return event_log_data(config.events, event_spec(config.event_format, config.event_spec), EventLogOptions(seed=seed))
    return synthetic_data(SyntheticConfig(num_users=config.num_users, seed=seed))


def run_seed(config: Table1Config, seed: int, out: Path) -> SeedRun:
    """Train everything for ``seed`` into the new directory ``out``."""
    if out.exists():
        raise ConfigError("out", "a directory that does not exist yet (results are never overwritten)", str(out))
    data = _load(config, seed)
    ds = data.dataset
    encoders = {
        name: train_upstream(name, data, out, "demo", TrainConfig(epochs=config.encoder_epochs or DEFAULT_EPOCHS[name], seed=seed, progress=config.progress))
        for name in ENCODERS
    }
    for name, outcome in encoders.items():
        if not outcome.decision.accepted:
            raise DuetError(f"seed {seed}: the {name} encoder was rejected by the gate: {outcome.decision.reason}")
    train_rows, val_rows = ds.ranker_train, ds.ranker_val
    side = SideConfig(**{**config.side.__dict__, "seed": seed})
    upstream = {name: prepare_upstream(name, o.checkpoint, ds.table, train_rows, val_rows, out, side) for name, o in encoders.items()}
    features = (row_features(upstream, ds.table, train_rows), row_features(upstream, ds.table, val_rows))
    ranker_config = TrainConfig(epochs=config.ranker_epochs, seed=seed, progress=config.progress)
    train = lambda variant, source="codes": train_ranker(  # noqa: E731
        variant, ds.table, train_rows, val_rows, features, upstream, out, data.description, ranker_config, embedding_input=source
    )
    rankers = {variant: train(variant) for variant in VARIANTS}
    duet_float = train("duet", "float")
    first_row = np.unique(val_rows.user_index, return_index=True)[1]
    duet = rankers["duet"].result.model.ranker
    with torch.no_grad():
        projected = {
            name: duet.projections[name](duet.decoders[name](torch.from_numpy(features[1][codes_key(name)][first_row]))).numpy()
            for name in ENCODERS
        }
    return SeedRun(
        seed=seed,
        encoder_ne={name: o.checkpoint.primary_ne for name, o in encoders.items()},
        ranker_ne={variant: o.checkpoint.primary_ne for variant, o in rankers.items()},
        duet_float_ne=duet_float.checkpoint.primary_ne,
        codec={name: {k: v for k, v in u.codec_checkpoint.metrics.items() if k != "code_usage"} for name, u in upstream.items()},
        embeddings={name: features[1][embedding_key(name)][first_row] for name in ENCODERS},
        projected=projected,
    )


def _stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0}


def summarize(runs: list[SeedRun], side: SideConfig) -> dict:
    """The table as JSON: per-seed figures and mean / sample std over seeds."""
    per_seed = []
    for run in runs:
        gain = {v: relative_ne_gain(run.ranker_ne[v], run.ranker_ne["baseline"]) for v in VARIANTS[1:]}
        bound = gain["click"] + gain["conv"]
        per_seed.append({
            "seed": run.seed,
            "ne": run.ranker_ne,
            "gain_pct": gain,
            "additive_bound_pct": bound,
            "duet_share_of_bound": gain["duet"] / bound if bound > 0 else float("nan"),
            "duet_float_ne": run.duet_float_ne,
            "side_ne_cost_pct": 100.0 * (run.ranker_ne["duet"] - run.duet_float_ne) / run.duet_float_ne,
            "ordering_holds": run.ranker_ne["baseline"] > run.ranker_ne["click"] > run.ranker_ne["conv"] > run.ranker_ne["duet"],
            "encoder_ne": run.encoder_ne,
            "codec": run.codec,
        })
    column = lambda key, sub=None: [s[key][sub] if sub else s[key] for s in per_seed]  # noqa: E731
    return {
        "primary_task": "offsite_conversion",
        "side": {"levels": side.levels, "codebook_size": side.codebook_size},
        "seeds": [s["seed"] for s in per_seed],
        "mean_std": {
            "ne": {v: _stats(column("ne", v)) for v in VARIANTS},
            "gain_pct": {v: _stats(column("gain_pct", v)) for v in VARIANTS[1:]},
            "additive_bound_pct": _stats(column("additive_bound_pct")),
            "duet_share_of_bound": _stats(column("duet_share_of_bound")),
            "duet_float_ne": _stats(column("duet_float_ne")),
            "side_ne_cost_pct": _stats(column("side_ne_cost_pct")),
            "encoder_ne": {e: _stats(column("encoder_ne", e)) for e in ENCODERS},
        },
        "ordering_holds_in": f"{sum(column('ordering_holds'))}/{len(per_seed)} seeds",
        "per_seed": per_seed,
    }


def to_markdown(summary: dict) -> str:
    """The summary as a markdown table (mean ± std over seeds)."""
    ms = summary["mean_std"]
    fmt = lambda s, p=4: f"{s['mean']:.{p}f} ± {s['std']:.{p}f}"  # noqa: E731
    names = {"baseline": "Baseline (no embeddings)", "click": "+ ClickAUE", "conv": "+ ConvAUE", "duet": "DUET (both)"}
    lines = [
        f"Primary task: {summary['primary_task']}; seeds {summary['seeds']}; SIDE {summary['side']['levels']} x {summary['side']['codebook_size']}",
        "",
        "| configuration | val NE | relative NE gain vs baseline (%) |",
        "| --- | --- | --- |",
    ]
    for variant in VARIANTS:
        gain = "—" if variant == "baseline" else fmt(ms["gain_pct"][variant], 3)
        lines.append(f"| {names[variant]} | {fmt(ms['ne'][variant])} | {gain} |")
    lines += [
        "",
        f"- Additive upper bound (ClickAUE gain + ConvAUE gain): {fmt(ms['additive_bound_pct'], 3)} %",
        f"- DUET's share of the bound: {fmt(ms['duet_share_of_bound'], 3)}",
        f"- Ordering baseline > ClickAUE > ConvAUE > DUET (in NE) holds in {summary['ordering_holds_in']}",
        f"- DUET on float embeddings: NE {fmt(ms['duet_float_ne'])}; SIDE codes cost {fmt(ms['side_ne_cost_pct'], 3)} % NE",
        f"- Encoder primary val NE: ClickAUN {fmt(ms['encoder_ne']['click'])}, ConvAUN {fmt(ms['encoder_ne']['conv'])}",
    ]
    codec = summary["per_seed"][0]["codec"]
    for name in ENCODERS:
        c = codec[name]
        lines.append(
            f"- SIDE codec for {name} (seed {summary['seeds'][0]}): {c['compression_ratio_vs_fp16']:.0f}x vs FP16, "
            f"{c['bytes_per_user']} bytes/user, relative MSE {c['relative_mse']:.4f}, mean cosine {c['mean_cosine']:.4f}"
        )
    return "\n".join(lines) + "\n"
