"""SIDE codecs as checkpoints: ``config.json`` kind "side", weights ``{"codebooks": (L, K, d)}``."""

from __future__ import annotations

from pathlib import Path

from duet_sdk.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
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


def codec_directory(runs: Path, name: str) -> Path:
    """Where training saves the SIDE codecs of encoder ``name`` (click, conv): ``runs/side/<name>``."""
    return Path(runs) / "side" / name


def _codecs_newest_first(runs: Path, name: str):
    for path in sorted(codec_directory(runs, name).glob(f"side-{name}-*"), reverse=True):
        yield load_checkpoint(path)


def find_codec_for_encoder(runs: Path, name: str, encoder_digest: str) -> Checkpoint | None:
    """The newest codec under ``runs/side/<name>`` trained on embeddings of encoder ``encoder_digest``."""
    for checkpoint in _codecs_newest_first(runs, name):
        if checkpoint.lineage["data"].get("encoder") == encoder_digest:
            return checkpoint
    return None


def find_codec_by_digest(runs: Path, name: str, digest: str) -> Checkpoint:
    """The codec under ``runs/side/<name>`` whose digest is ``digest``; CheckpointError if there is none."""
    for checkpoint in _codecs_newest_first(runs, name):
        if checkpoint.digest == digest:
            return checkpoint
    raise CheckpointError(f"{codec_directory(runs, name)}: no SIDE codec with digest {digest[:12]}")
