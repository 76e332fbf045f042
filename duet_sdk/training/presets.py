"""Named model configs: a tiny ``demo`` (trains in seconds on 2 cores) and a paper-sized ``default``."""

from __future__ import annotations

from duet_sdk.data.routing import CLICK_TASKS, CONV_TASKS
from duet_sdk.data.schema import EventSchema
from duet_sdk.errors import ConfigError
from duet_sdk.models.config import AttentionConfig, HashConfig, TaskSpec, UpstreamConfig

PRESETS = ("demo", "default")
# Epochs by model on the default synthetic data (validation during the epoch and early stopping keep
# the best state). Event logs and the long-tail benchmark make one pass (``EVENT_LOG_EPOCHS``): ID-heavy
# data overfits on a second pass over the same rows.
DEFAULT_EPOCHS = {"click": 3, "conv": 1, "ranker": 3}
EVENT_LOG_EPOCHS = 1
# Peak learning rate by model when --lr is not given (docs/training_on_real_data.md: on MovieLens-100K,
# 3 seeds, the ranker at 3e-3 beat 1e-3 for both the baseline and DUET).
DEFAULT_LR = {"click": 3e-3, "conv": 3e-3, "ranker": 3e-3}
# Task weights: the primary task leads; auxiliary tasks add gradient signal (DUET eq. 6-7).
CLICK_WEIGHTS = {"ctr": 1.0, "onsite_conversion": 0.5}
CONV_WEIGHTS = {"attributed_conversion": 1.0, "unattributed_conversion": 0.5, "link_click": 0.3, "button_click": 0.3}


def upstream_config(
    kind: str, schema: EventSchema, preset: str = "demo", table_size: int | None = None
) -> UpstreamConfig:
    """The ``preset`` ClickAUN (``kind="click"``) or ConvAUN (``kind="conv"``) config for ``schema``;
    ``table_size`` overrides the preset's rows per hash table."""
    if preset not in PRESETS:
        raise ConfigError("preset", f"one of {PRESETS}", preset)
    if kind == "click":
        tasks, weights, primary = CLICK_TASKS, CLICK_WEIGHTS, "ctr"
        blocks = ("self",) * (2 if preset == "demo" else 4)
    elif kind == "conv":
        tasks, weights, primary = CONV_TASKS, CONV_WEIGHTS, "attributed_conversion"
        blocks = ("cross", "self") * (1 if preset == "demo" else 2)
    else:
        raise ConfigError("kind", "one of ('click', 'conv')", kind)
    big = preset == "default"
    return UpstreamConfig(
        kind=kind,
        schema=schema,
        streams=schema.stream_names,  # both encoders read every EBF stream; they differ in labels and attention
        tasks=tuple(TaskSpec(t, weights.get(t, 1.0)) for t in tasks),
        primary_task=primary,
        d_model=256 if big else 32,
        attention=AttentionConfig(
            num_heads=4 if big else 2, kind="mla" if big else "mha", latent_dim=64 if big else 16
        ),
        blocks=blocks,
        hashing=HashConfig(num_hashes=2, table_size=table_size or (100_003 if big else 4096), dim=32 if big else 16),
        tower_out_dim=128 if big else 32,
        embedding_dim=(256 if kind == "click" else 128) if big else (64 if kind == "click" else 32),
        item_hidden=(256,) if big else (64,),
        overarch_hidden=(256, 128) if big else (64,),
    )
