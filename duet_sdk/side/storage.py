"""SIDE codecs as checkpoints: ``config.json`` kind "side", weights ``{"codebooks": (L, K, d)}``."""

from __future__ import annotations

from pathlib import Path

from duet_sdk.checkpoint import Checkpoint, save_checkpoint
from duet_sdk.errors import CheckpointError, ConfigError
from duet_sdk.serialization import from_dict, to_dict
from duet_sdk.side.codec import SideCodec
from duet_sdk.side.config import SideConfig

KIND = "side"


def side_checkpoint_config(codec: SideCodec) -> dict:
    """``config.json`` of a codec; ``interface`` is what the encoder and decoder sides agree on."""
    c = codec.config
    return {
        "kind": KIND,
        "interface": {"dim": codec.dim, "levels": c.levels, "codebook_size": c.codebook_size},
        "model": {**to_dict(c), "dim": codec.dim},
    }


def save_side_codec(parent: Path, name: str, codec: SideCodec, metrics: dict, lineage: dict) -> Checkpoint:
    """Write ``codec`` to ``parent/name``. ``metrics``: ``codec.metrics`` on held-out embeddings;
    ``lineage["data"]`` names the source encoder checkpoint (its digest)."""
    return save_checkpoint(parent, name, {"codebooks": codec.codebooks}, side_checkpoint_config(codec),
                           metrics, lineage)


def load_side_codec(checkpoint: Checkpoint) -> SideCodec:
    """The codec of ``checkpoint``; CheckpointError where config and weights do not describe one."""
    where = checkpoint.path
    if checkpoint.kind != KIND:
        raise CheckpointError(f"{where}: kind {checkpoint.kind!r} is not a SIDE codec ({KIND!r})")
    model = dict(checkpoint.config["model"])
    dim = model.pop("dim", None)
    try:
        config = from_dict(SideConfig, model, "config.model")
    except ConfigError as exc:
        raise CheckpointError(f"{where}: config.json does not describe a SIDE codec: {exc}") from exc
    interface = {"dim": dim, "levels": config.levels, "codebook_size": config.codebook_size}
    if checkpoint.config["interface"] != interface:
        raise CheckpointError(f"{where}: interface {checkpoint.config['interface']} does not match model {interface}")
    weights = checkpoint.load_state_dict()
    if set(weights) != {"codebooks"}:
        raise CheckpointError(f"{where}: expected weights ['codebooks'], got {sorted(weights)}")
    books = weights["codebooks"]
    if tuple(books.shape) != (config.levels, config.codebook_size, dim):
        raise CheckpointError(f"{where}: codebooks of shape {tuple(books.shape)}, config says "
                              f"({config.levels}, {config.codebook_size}, {dim})")
    try:
        return SideCodec(config, books)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: invalid codebooks: {exc}") from exc
