"""Tiny DUET training outputs and their exports for the serving tests: both encoders and a DUET ranker
(random weights, real checkpoint, gate and export code).

A plain module (not conftest) so that test files import it by a name no other test directory uses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from duet_sdk.checkpoint import save_checkpoint
from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.gate import CheckpointRegistry, registry_name
from duet_sdk.models.config import HashConfig, RankerConfig, TargetAttentionConfig, TaskSpec, UserEmbeddingInput
from duet_sdk.models.loading import upstream_checkpoint_config
from duet_sdk.models.ranker import Ranker
from duet_sdk.models.upstream import UpstreamNet
from duet_sdk.side import SideCodec, SideConfig, save_side_codec
from duet_sdk.training.presets import upstream_config
from duet_sdk.training.ranker import ranker_checkpoint_config

SCHEMA = SyntheticConfig(max_click_len=8, max_conv_len=4).schema()
LEVELS, CODEBOOK = 3, 16
TASKS = ("offsite_conversion", "link_click")


def _lineage(**extra) -> dict:
    return {"predecessor": None, "data": {"rows": 1}, "step": 1, "seed": 0, **extra}


def tiny_upstream(kind: str, seed: int) -> UpstreamNet:
    config = dataclasses.replace(
        upstream_config(kind, SCHEMA, "demo"), d_model=16, hashing=HashConfig(num_hashes=2, table_size=64, dim=8),
        tower_out_dim=16, embedding_dim=16 if kind == "click" else 8, item_hidden=(16,), overarch_hidden=(16,))
    config = dataclasses.replace(config, blocks=config.blocks[:1])
    torch.manual_seed(seed)
    net = UpstreamNet(config).eval()
    with torch.no_grad():
        for module in net.modules():
            if hasattr(module, "null"):
                module.null.normal_()
    return net


def make_runs(root: Path, seed: int = 0) -> Path:
    """A training output dir with accepted click and conv encoders, their codecs and a DUET ranker."""
    embeddings, lineage = [], {}
    codecs = {}
    for i, kind in enumerate(("click", "conv")):
        net = tiny_upstream(kind, seed + i)
        task = net.config.primary_task
        encoder = save_checkpoint(
            root / kind,
            f"{kind}-{seed:04d}",
            net.state_dict(),
            upstream_checkpoint_config(net.config),
            {"val_ne": {task: 0.9}, "primary_task": task},
            _lineage(),
        )
        assert CheckpointRegistry(root / "registry", kind).submit(encoder).accepted
        g = torch.Generator().manual_seed(seed + 10 + i)
        codec = SideCodec(
            SideConfig(levels=LEVELS, codebook_size=CODEBOOK),
            torch.randn(LEVELS, CODEBOOK, net.config.embedding_dim, generator=g) * 0.3,
        )
        codec_ckpt = save_side_codec(
            root / "side" / kind,
            f"side-{kind}-{seed:04d}",
            codec,
            {},
            _lineage(data={"encoder": encoder.digest, "encoder_kind": kind}),
        )
        codecs[kind] = codec
        embeddings.append(UserEmbeddingInput(kind, dim=net.config.embedding_dim, levels=LEVELS, codebook_size=CODEBOOK))
        lineage[kind] = {"encoder": encoder.digest, "encoder_val_ne": {}, "codec": codec_ckpt.digest}
    save_ranker(root, tuple(embeddings), {k: c.codebooks for k, c in codecs.items()}, _lineage(upstream=lineage), seed)
    return root


def save_ranker(
    root: Path,
    embeddings: tuple[UserEmbeddingInput, ...],
    codebooks: dict[str, torch.Tensor],
    lineage: dict,
    seed: int,
    target_attention: TargetAttentionConfig | None = None,
) -> Path:
    """An accepted DUET ranker over ``embeddings`` in ``root`` (with ``target_attention``: in registry
    ``ranker-duet-<variant>``, exported as ranker ``duet-<variant>``); returns its checkpoint path."""
    config = RankerConfig(
        schema=SCHEMA,
        tasks=tuple(TaskSpec(t) for t in TASKS),
        primary_task=TASKS[0],
        embeddings=embeddings,
        d_feature=8,
        projection_hidden=(16,),
        hashing=HashConfig(num_hashes=2, table_size=64, dim=8),
        overarch_hidden=(16,),
        target_attention=target_attention,
    )
    torch.manual_seed(seed + 20)
    ranker = Ranker(config).eval()
    for kind, codebook in codebooks.items():
        ranker.decoders[kind].codebooks.copy_(codebook)
    if target_attention is not None:
        with torch.no_grad():
            for p in ranker.target_attention.parameters():
                p.normal_()  # spread the scores so the top-k is decided by clear margins
    name = registry_name("duet", "codes", target_attention.variant if target_attention else None)
    checkpoint = save_checkpoint(
        root / "ranker",
        f"{name}-{seed:04d}",
        ranker.state_dict(),
        ranker_checkpoint_config(config),
        {"val_ne": {TASKS[0]: 0.8}, "primary_task": TASKS[0]},
        lineage,
    )
    assert CheckpointRegistry(root / "registry", name).submit(checkpoint).accepted
    return checkpoint.path


def export_runs(
    runs: Path,
    out: Path,
    formats: tuple[str, ...] = ("onnx",),
    target: str = "cpu",
    encoders: tuple[str, ...] = ("click", "conv"),
    ranker: str = "duet",
) -> Path:
    """A real duet-export of ``runs`` (small cases to keep it quick) into ``out`` (merged into an export
    already there); returns ``out``."""
    from duet_sdk.export.pipeline import export_all
    from duet_sdk.export.spec import ExportSpec, ShapeSpec
    from duet_sdk.export.verify import Case

    spec = ExportSpec(
        checkpoints=runs,
        target=target,
        formats=formats,
        encoders=encoders,
        ranker=ranker,
        precision="fp16" if target == "gpu" else "fp32",
        shapes=ShapeSpec(opt_batch=4, max_batch=16, opt_candidates=4, max_candidates=16),
    )
    export_all(spec, out, cases=(Case(3, "short", "mixed"),))
    return out
