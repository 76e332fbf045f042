"""Tiny trained-looking checkpoints (random weights, real checkpoint and gate APIs) for the export tests.

A plain module (not conftest) so that test files import it by a name no other test directory uses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from duet_sdk.checkpoint import save_checkpoint
from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.gate import CheckpointRegistry
from duet_sdk.models.config import (
    HashConfig,
    RankerConfig,
    TaskSpec,
    UserEmbeddingInput,
)
from duet_sdk.models.loading import upstream_checkpoint_config
from duet_sdk.models.ranker import Ranker
from duet_sdk.models.upstream import UpstreamNet
from duet_sdk.side import SideCodec, SideConfig, save_side_codec
from duet_sdk.training.presets import upstream_config
from duet_sdk.training.ranker import ranker_checkpoint_config

SCHEMA = SyntheticConfig(max_click_len=8, max_conv_len=4).schema()
LEVELS, CODEBOOK = 3, 16


def tiny_upstream(kind: str = "click") -> UpstreamNet:
    config = upstream_config(kind, SCHEMA, "demo")
    config = dataclasses.replace(
        config, d_model=16, blocks=config.blocks[:1], hashing=HashConfig(num_hashes=2, table_size=64, dim=8),
        tower_out_dim=16, embedding_dim=16, item_hidden=(16,), overarch_hidden=(16,),
    )
    torch.manual_seed(0)
    net = UpstreamNet(config).eval()
    with torch.no_grad():
        for module in net.modules():
            if hasattr(module, "null"):
                module.null.normal_()
    return net


def _metrics(task: str, ne: float) -> dict:
    return {"val_ne": {task: ne}, "primary_task": task}


def _lineage(data: dict, **extra) -> dict:
    return {"predecessor": None, "data": data, "step": 1, "seed": 0, **extra}


def save_encoder(runs: Path, net: UpstreamNet, name: str, ne: float = 0.9, submit: bool = True):
    kind = net.config.kind
    checkpoint = save_checkpoint(runs / kind, name, net.state_dict(), upstream_checkpoint_config(net.config),
                                 _metrics(net.config.primary_task, ne), _lineage({"rows": 1}))
    decision = CheckpointRegistry(runs / "registry", kind).submit(checkpoint) if submit else None
    return checkpoint, decision


def save_codec(runs: Path, name: str, encoder_digest: str, dim: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    codec = SideCodec(
        SideConfig(levels=LEVELS, codebook_size=CODEBOOK), torch.randn(LEVELS, CODEBOOK, dim, generator=generator) * 0.3
    )
    checkpoint = save_side_codec(
        runs / "side" / name,
        f"side-{name}-{seed:04d}",
        codec,
        {},
        _lineage({"encoder": encoder_digest, "encoder_kind": name}),
    )
    return codec, checkpoint


def save_ranker(runs: Path, codec: SideCodec, encoder_digest: str, codec_digest: str, name: str = "ranker-click-0001"):
    config = RankerConfig(
        schema=SCHEMA,
        tasks=(TaskSpec("offsite_conversion"), TaskSpec("link_click")),
        primary_task="offsite_conversion",
        embeddings=(UserEmbeddingInput("click", dim=codec.dim, levels=LEVELS, codebook_size=CODEBOOK),),
        d_feature=8,
        projection_hidden=(16,),
        hashing=HashConfig(num_hashes=2, table_size=64, dim=8),
        overarch_hidden=(16,),
    )
    torch.manual_seed(1)
    ranker = Ranker(config).eval()
    ranker.decoders["click"].codebooks.copy_(codec.codebooks)
    lineage = _lineage(
        {"rows": 1}, upstream={"click": {"encoder": encoder_digest, "encoder_val_ne": {}, "codec": codec_digest}}
    )
    checkpoint = save_checkpoint(
        runs / "ranker",
        name,
        ranker.state_dict(),
        ranker_checkpoint_config(config),
        _metrics("offsite_conversion", 0.8),
        lineage,
    )
    CheckpointRegistry(runs / "registry", "ranker-click").submit(checkpoint)
    return ranker, checkpoint


def write_spec(path: Path, runs: Path, **values) -> Path:
    """A spec TOML for the tiny runs: the click encoder and the click-only ranker by default."""
    spec = {
        "checkpoints": str(runs),
        "formats": ["torchscript", "onnx"],
        "encoders": ["click"],
        "ranker": "click",
        **values,
    }
    lines = []
    for key, value in spec.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    lines += ["[shapes]", "opt_batch = 8", "max_batch = 64", "opt_candidates = 4", "max_candidates = 16"]
    path.write_text("\n".join(lines) + "\n")
    return path
