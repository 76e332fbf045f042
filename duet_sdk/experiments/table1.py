"""DUET Table 1 on our data: ranker val NE for baseline / +ClickAUE / +ConvAUE / DUET over seeds.

Per seed: train both encoders behind the gate, train a SIDE codec on each accepted encoder's
embeddings, then the four ranker variants on SIDE codes (plus DUET on float embeddings), all on the
same rows and seed. Gains are relative NE reductions against the baseline; the additive upper bound
is ClickAUE's gain plus ConvAUE's gain (DUET §5.5).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from duet_sdk.data.eventlog import EventLogOptions
from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.data.synthetic_longtail import LongTailConfig
from duet_sdk.errors import ConfigError
from duet_sdk.gate import GatePolicy
from duet_sdk.metrics import relative_ne_gain
from duet_sdk.models.ranker import codes_key, embedding_key
from duet_sdk.side import SideConfig
from duet_sdk.training.datasets import (
    SYNTHETIC_DATASETS,
    LoadedData,
    event_log_data,
    event_spec,
    longtail_data,
    synthetic_data,
)
from duet_sdk.training.features import prepare_upstream, row_features
from duet_sdk.training.presets import DEFAULT_EPOCHS, EVENT_LOG_EPOCHS
from duet_sdk.training.ranker import train_ranker
from duet_sdk.training.trainer import TrainConfig
from duet_sdk.training.upstream import train_upstream

VARIANTS = ("baseline", "click", "conv", "duet")
ENCODERS = ("click", "conv")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Table1Config:
    """Seeds, data, training recipe and gate of the experiment.

    ``dataset`` picks the synthetic benchmark when ``events`` is None. ``encoder_epochs`` /
    ``ranker_epochs`` None: one pass on an event log or ``longtail``, else the per-model default.
    ``train`` is the recipe of every model (its ``epochs`` and ``seed`` are set per model and seed);
    ``ranker_lr`` overrides its ``lr`` for the rankers (None: the same as the encoders).
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    num_users: int = 3000
    dataset: str = "synthetic"
    encoder_epochs: int | None = None
    ranker_epochs: int | None = None
    side: SideConfig = field(default_factory=SideConfig)
    events: Path | None = None
    event_format: str = "taobao"
    event_spec: Path | None = None
    split: str = "global"
    val_end_quantile: float = 1.0  # global split: T2 as a quantile of event times (T1 at 0.8)
    negatives_per_positive: int = 4  # event logs: sampled negatives per positive row
    session_gap: int = EventLogOptions.session_gap  # event logs: training requests at session starts (s; 0: off)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(progress=False))
    table_size: int | None = None
    ranker_lr: float | None = None
    static_user_id: bool = False  # give models the raw user ID (opt-in)
    policy: GatePolicy = field(default_factory=GatePolicy)
    progress: bool = False

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("Table1Config.seeds", "at least one distinct seed", self.seeds)
        if self.dataset not in SYNTHETIC_DATASETS:
            raise ConfigError("Table1Config.dataset", f"one of {SYNTHETIC_DATASETS}", self.dataset)

    @property
    def one_pass(self) -> bool:
        return self.events is not None or self.dataset == "longtail"

    def recipe(self, model: str, seed: int) -> TrainConfig:
        """The ``TrainConfig`` of ``model`` ("click", "conv" or "ranker") for ``seed``."""
        given = self.ranker_epochs if model == "ranker" else self.encoder_epochs
        epochs = given or (EVENT_LOG_EPOCHS if self.one_pass else DEFAULT_EPOCHS[model])
        lr = self.ranker_lr if model == "ranker" and self.ranker_lr is not None else self.train.lr
        return dataclasses.replace(self.train, epochs=epochs, lr=lr, seed=seed, progress=self.progress)


@dataclass
class SeedRun:
    """One seed's figures: primary val NE of encoders and rankers, codec metrics, analysis embeddings."""

    seed: int
    encoder_ne: dict[str, float]
    ranker_ne: dict[str, float]
    accepted: dict[str, bool]  # gate verdict per encoder and ranker variant
    duet_float_ne: float
    codec: dict[str, dict]
    embeddings: dict[str, np.ndarray]  # per encoder: (users, dim) val embeddings, one row per user
    projected: dict[str, np.ndarray]  # per encoder: the DUET ranker's projection of the decoded codes


def load_data(config: Table1Config, seed: int) -> LoadedData:
    """The experiment's data for ``seed``: the event log, or the synthetic benchmark drawn with ``seed``."""
    if config.events is not None:
        options = EventLogOptions(seed=seed, split=config.split, val_end_quantile=config.val_end_quantile,
                                  negatives_per_positive=config.negatives_per_positive, session_gap=config.session_gap)
        return event_log_data(
            config.events, event_spec(config.event_format, config.event_spec), options, config.static_user_id
        )
    if config.dataset == "longtail":
        return longtail_data(
            LongTailConfig(num_users=config.num_users, static_user_id=config.static_user_id, seed=seed)
        )
    return synthetic_data(SyntheticConfig(num_users=config.num_users, seed=seed))


def run_seed(config: Table1Config, seed: int, out: Path) -> SeedRun:
    """Train everything for ``seed`` into the new directory ``out``."""
    if out.exists():
        raise ConfigError("out", "a directory that does not exist yet (results are never overwritten)", str(out))
    data = load_data(config, seed)
    ds = data.dataset
    encoders = {
        name: train_upstream(name, data, out, "demo", config.recipe(name, seed), config.policy, config.table_size)
        for name in ENCODERS
    }
    for name, outcome in encoders.items():
        if not outcome.decision.accepted:  # kept in the table: the verdict is reported, not hidden
            logger.warning("seed %d: the gate rejected the %s encoder: %s", seed, name, outcome.decision.reason)
    train_rows, val_rows = ds.ranker_train, ds.ranker_val
    side = SideConfig(**{**config.side.__dict__, "seed": seed})
    upstream = {
        name: prepare_upstream(name, o.checkpoint, ds.table, train_rows, val_rows, out, side)
        for name, o in encoders.items()
    }
    features = (row_features(upstream, ds.table, train_rows), row_features(upstream, ds.table, val_rows))
    ranker_config = config.recipe("ranker", seed)
    train = lambda variant, source="codes": train_ranker(  # noqa: E731
        variant,
        ds.table,
        train_rows,
        val_rows,
        features,
        upstream,
        out,
        data.description,
        ranker_config,
        config.policy,
        source,
        config.table_size,
    )
    rankers = {variant: train(variant) for variant in VARIANTS}
    duet_float = train("duet", "float")
    first_row = np.unique(val_rows.user_index, return_index=True)[1]
    duet = rankers["duet"].result.model.ranker
    with torch.no_grad():
        projected = {
            name: duet.projections[name](
                duet.decoders[name](torch.from_numpy(features[1][codes_key(name)][first_row]))
            ).numpy()
            for name in ENCODERS
        }
    return SeedRun(
        seed=seed,
        encoder_ne={name: o.checkpoint.primary_ne for name, o in encoders.items()},
        ranker_ne={variant: o.checkpoint.primary_ne for variant, o in rankers.items()},
        accepted={
            **{f"encoder_{n}": o.decision.accepted for n, o in encoders.items()},
            **{v: o.decision.accepted for v, o in rankers.items()},
        },
        duet_float_ne=duet_float.checkpoint.primary_ne,
        codec={
            name: {k: v for k, v in u.codec_checkpoint.metrics.items() if k != "code_usage"}
            for name, u in upstream.items()
        },
        embeddings={name: features[1][embedding_key(name)][first_row] for name in ENCODERS},
        projected=projected,
    )


def runs_from_summary(summary: dict) -> list[SeedRun]:
    """The per-seed figures of a written ``table1.json`` (without the analysis embeddings), to merge
    seeds that ran as separate processes."""
    return [
        SeedRun(
            seed=row["seed"],
            encoder_ne=row["encoder_ne"],
            ranker_ne=row["ne"],
            accepted=row["accepted"],
            duet_float_ne=row["duet_float_ne"],
            codec=row["codec"],
            embeddings={},
            projected={},
        )
        for row in summary["per_seed"]
    ]


def _share(gains: list[float], bounds: list[float]) -> float:
    """Mean DUET gain over the mean additive bound (defined even where one seed's bound is <= 0)."""
    bound = float(np.mean(bounds))
    return float(np.mean(gains)) / bound if bound > 0 else float("nan")


def _stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0}


def summarize(runs: list[SeedRun], side: SideConfig) -> dict:
    """The table as JSON: per-seed figures and mean / sample std over seeds."""
    per_seed = []
    for run in runs:
        gain = {v: relative_ne_gain(run.ranker_ne[v], run.ranker_ne["baseline"]) for v in VARIANTS[1:]}
        bound = gain["click"] + gain["conv"]
        per_seed.append(
            {
                "seed": run.seed,
                "ne": run.ranker_ne,
                "gain_pct": gain,
                "additive_bound_pct": bound,
                "duet_share_of_bound": gain["duet"] / bound if bound > 0 else float("nan"),
                "duet_float_ne": run.duet_float_ne,
                "side_ne_cost_pct": 100.0 * (run.ranker_ne["duet"] - run.duet_float_ne) / run.duet_float_ne,
                "ordering_holds": run.ranker_ne["baseline"]
                > run.ranker_ne["click"]
                > run.ranker_ne["conv"]
                > run.ranker_ne["duet"],
                "encoder_ne": run.encoder_ne,
                "accepted": run.accepted,
                "codec": run.codec,
            }
        )
    column = lambda key, sub=None: [s[key][sub] if sub else s[key] for s in per_seed]  # noqa: E731
    ne = {v: _stats(column("ne", v)) for v in VARIANTS}
    paired = [s["ne"]["baseline"] - s["ne"]["duet"] for s in per_seed]
    gap = ne["baseline"]["mean"] - ne["duet"]["mean"]
    return {
        "primary_task": "offsite_conversion",
        "side": {"levels": side.levels, "codebook_size": side.codebook_size},
        "seeds": [s["seed"] for s in per_seed],
        "mean_std": {
            "ne": ne,
            "gain_pct": {v: _stats(column("gain_pct", v)) for v in VARIANTS[1:]},
            "additive_bound_pct": _stats(column("additive_bound_pct")),
            "duet_share_of_bound": _stats(column("duet_share_of_bound")),
            "duet_share_of_mean_bound": _share(column("gain_pct", "duet"), column("additive_bound_pct")),
            "duet_float_ne": _stats(column("duet_float_ne")),
            "side_ne_cost_pct": _stats(column("side_ne_cost_pct")),
            "encoder_ne": {e: _stats(column("encoder_ne", e)) for e in ENCODERS},
        },
        "ordering_holds_in": f"{sum(column('ordering_holds'))}/{len(per_seed)} seeds",
        "below_base_rate": {
            **{v: f"{sum(s['ne'][v] < 1.0 for s in per_seed)}/{len(per_seed)}" for v in VARIANTS},
            **{f"encoder_{e}": f"{sum(s['encoder_ne'][e] < 1.0 for s in per_seed)}/{len(per_seed)}" for e in ENCODERS},
        },
        "gate_accepted": {
            k: f"{sum(s['accepted'][k] for s in per_seed)}/{len(per_seed)}" for k in per_seed[0]["accepted"]
        },
        "duet_vs_baseline": {
            "ne_gap": gap,
            "larger_sd": max(ne["baseline"]["std"], ne["duet"]["std"]),
            "gap_exceeds_one_sd": bool(gap > max(ne["baseline"]["std"], ne["duet"]["std"])),
            "paired_gap": _stats(paired),
        },
        "per_seed": per_seed,
    }


def to_markdown(summary: dict) -> str:
    """The summary as a markdown table (mean ± std over seeds)."""
    ms = summary["mean_std"]
    fmt = lambda s, p=4: f"{s['mean']:.{p}f} ± {s['std']:.{p}f}"  # noqa: E731
    names = {"baseline": "Baseline (no embeddings)", "click": "+ ClickAUE", "conv": "+ ConvAUE", "duet": "DUET (both)"}
    lines = [
        f"Primary task: {summary['primary_task']}; seeds {summary['seeds']}; SIDE {summary['side']['levels']} x "
        f"{summary['side']['codebook_size']}",
        "",
        "| configuration | val NE | relative NE gain vs baseline (%) | NE < 1.0 in | gate accepted |",
        "| --- | --- | --- | --- | --- |",
    ]
    for variant in VARIANTS:
        gain = "—" if variant == "baseline" else fmt(ms["gain_pct"][variant], 3)
        lines.append(
            f"| {names[variant]} | {fmt(ms['ne'][variant])} | {gain} | {summary['below_base_rate'][variant]} | "
            f"{summary['gate_accepted'][variant]} |"
        )
    vs = summary["duet_vs_baseline"]
    lines += [
        "",
        f"- DUET vs baseline: NE gap {vs['ne_gap']:.4f} (larger sd {vs['larger_sd']:.4f}: "
        f"{'more' if vs['gap_exceeds_one_sd'] else 'NOT more'} than one sd); paired gap {fmt(vs['paired_gap'])}",
        f"- Additive upper bound (ClickAUE gain + ConvAUE gain): {fmt(ms['additive_bound_pct'], 3)} %",
        f"- DUET's share of the bound: {ms['duet_share_of_mean_bound']:.3f} of the mean bound; per seed "
        f"{fmt(ms['duet_share_of_bound'], 3)} "
        "(nan where a seed's bound is <= 0)",
        f"- Ordering baseline > ClickAUE > ConvAUE > DUET (in NE) holds in {summary['ordering_holds_in']}",
        f"- DUET on float embeddings: NE {fmt(ms['duet_float_ne'])}; SIDE codes cost {fmt(ms['side_ne_cost_pct'], 3)} "
        "% NE",
        f"- Encoder primary val NE: ClickAUN {fmt(ms['encoder_ne']['click'])} (< 1.0 in "
        f"{summary['below_base_rate']['encoder_click']}), "
        f"ConvAUN {fmt(ms['encoder_ne']['conv'])} (< 1.0 in {summary['below_base_rate']['encoder_conv']})",
    ]
    codec = summary["per_seed"][0]["codec"]
    for name in ENCODERS:
        c = codec[name]
        lines.append(
            f"- SIDE codec for {name} (seed {summary['seeds'][0]}): {c['compression_ratio_vs_fp16']:.0f}x vs FP16, "
            f"{c['bytes_per_user']} bytes/user, relative MSE {c['relative_mse']:.4f}, mean cosine "
            f"{c['mean_cosine']:.4f}"
        )
    return "\n".join(lines) + "\n"
