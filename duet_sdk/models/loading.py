"""Upstream networks to and from checkpoint payloads (config JSON + safetensors weights)."""

from __future__ import annotations

from duet_sdk import serialization
from duet_sdk.checkpoint import Checkpoint
from duet_sdk.errors import CheckpointError, ConfigError
from duet_sdk.models.config import UpstreamConfig
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


def load_upstream(checkpoint: Checkpoint) -> UpstreamNet:
    """Rebuild the ``UpstreamNet`` of ``checkpoint`` and load its weights (strict, no pickle)."""
    try:
        config = serialization.from_dict(UpstreamConfig, checkpoint.config["model"], "config.model")
    except (ConfigError, KeyError) as exc:
        raise CheckpointError(f"{checkpoint.path}: config.json does not describe an upstream network: {exc}") from exc
    model = UpstreamNet(config)
    try:
        model.load_state_dict(checkpoint.load_state_dict(), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{checkpoint.path}: weights do not match the config: {exc}") from exc
    return model.eval()
