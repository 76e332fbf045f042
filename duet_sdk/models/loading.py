"""Upstream networks and rankers to and from checkpoint payloads (config JSON + safetensors weights)."""

from __future__ import annotations

import torch

from duet_sdk import serialization
from duet_sdk.checkpoint import Checkpoint
from duet_sdk.errors import CheckpointError, ConfigError
from duet_sdk.models.config import RankerConfig, UpstreamConfig
from duet_sdk.models.ranker import Ranker
from duet_sdk.models.upstream import UpstreamNet


def upstream_checkpoint_config(config: UpstreamConfig) -> dict:
    """``config.json`` of an upstream checkpoint; ``interface`` is what consumers of the embedding rely on."""
    return {
        "kind": config.kind,
        "interface": {
            "schema": serialization.to_dict(config.schema),
            "streams": list(config.streams),
            "embedding_dim": config.embedding_dim,
        },
        "model": serialization.to_dict(config),
    }


def _rebuild(checkpoint: Checkpoint, config_type: type, model_type: type, what: str) -> torch.nn.Module:
    """``model_type(config)`` from ``checkpoint``'s config, with its weights loaded strictly (no pickle)."""
    try:
        config = serialization.from_dict(config_type, checkpoint.config["model"], "config.model")
    except (ConfigError, KeyError) as exc:
        raise CheckpointError(f"{checkpoint.path}: config.json does not describe {what}: {exc}") from exc
    model = model_type(config)
    try:
        model.load_state_dict(checkpoint.load_state_dict(), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{checkpoint.path}: weights do not match the config: {exc}") from exc
    return model.eval()


def load_upstream(checkpoint: Checkpoint) -> UpstreamNet:
    """Rebuild the ``UpstreamNet`` of an encoder checkpoint and load its weights."""
    return _rebuild(checkpoint, UpstreamConfig, UpstreamNet, "an upstream network")


def load_ranker(checkpoint: Checkpoint) -> Ranker:
    """Rebuild the ``Ranker`` of a ranker checkpoint (SIDE codebooks included) and load its weights."""
    return _rebuild(checkpoint, RankerConfig, Ranker, "a ranker")
