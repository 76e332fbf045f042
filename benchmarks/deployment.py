"""A servable DUET deployment at the demo shape, built in seconds for the serving benchmarks.

Random weights (speed does not depend on them): ClickAUN and ConvAUN at the ``demo`` preset over the
demo schema (32 click, 8 conv events), random 4 x 256 SIDE codebooks, a DUET ranker with the default
``RankerConfig``; saved as real checkpoints, accepted by the real gate, exported by ``duet-export``
(ONNX, cpu target, up to 64 users and 128 candidates per request, parity verified) and published by
``duet-publish``. The export is cached under ``work`` and reused.
"""

from __future__ import annotations

from pathlib import Path

import torch

from duet_sdk.checkpoint import save_checkpoint
from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.gate import CheckpointRegistry
from duet_sdk.models.config import RankerConfig, TaskSpec, UserEmbeddingInput
from duet_sdk.models.loading import upstream_checkpoint_config
from duet_sdk.models.ranker import Ranker
from duet_sdk.models.upstream import UpstreamNet
from duet_sdk.side import SideCodec, SideConfig, save_side_codec
from duet_sdk.training.presets import upstream_config
from duet_sdk.training.ranker import ranker_checkpoint_config

TASKS = ("offsite_conversion", "link_click")


def _lineage(**extra) -> dict:
    return {"predecessor": None, "data": {"rows": 1}, "step": 1, "seed": 0, **extra}


def make_runs(root: Path, seed: int = 0) -> Path:
    """Accepted demo-preset encoders, their SIDE codecs and a DUET ranker under ``root``."""
    schema = SyntheticConfig().schema()
    side = SideConfig()
    embeddings, lineage, codecs = [], {}, {}
    for i, kind in enumerate(("click", "conv")):
        torch.manual_seed(seed + i)
        net = UpstreamNet(upstream_config(kind, schema, "demo")).eval()
        task = net.config.primary_task
        encoder = save_checkpoint(
            root / kind,
            f"{kind}-{seed:04d}",
            net.state_dict(),
            upstream_checkpoint_config(net.config),
            {"val_ne": {task: 0.9}, "primary_task": task},
            _lineage(),
        )
        if not CheckpointRegistry(root / "registry", kind).submit(encoder).accepted:
            raise RuntimeError(f"the gate rejected the benchmark's {kind} encoder")
        g = torch.Generator().manual_seed(seed + 10 + i)
        codec = SideCodec(
            side, torch.randn(side.levels, side.codebook_size, net.config.embedding_dim, generator=g) * 0.3
        )
        codec_ckpt = save_side_codec(
            root / "side" / kind,
            f"side-{kind}-{seed:04d}",
            codec,
            {},
            _lineage(data={"encoder": encoder.digest, "encoder_kind": kind}),
        )
        codecs[kind] = codec
        embeddings.append(
            UserEmbeddingInput(kind, dim=net.config.embedding_dim, levels=side.levels, codebook_size=side.codebook_size)
        )
        lineage[kind] = {"encoder": encoder.digest, "encoder_val_ne": {}, "codec": codec_ckpt.digest}
    config = RankerConfig(
        schema=schema, tasks=tuple(TaskSpec(t) for t in TASKS), primary_task=TASKS[0], embeddings=tuple(embeddings)
    )
    torch.manual_seed(seed + 20)
    ranker = Ranker(config).eval()
    for kind, codec in codecs.items():
        ranker.decoders[kind].codebooks.copy_(codec.codebooks)
    checkpoint = save_checkpoint(
        root / "ranker",
        f"ranker-duet-{seed:04d}",
        ranker.state_dict(),
        ranker_checkpoint_config(config),
        {"val_ne": {TASKS[0]: 0.8}, "primary_task": TASKS[0]},
        _lineage(upstream=lineage),
    )
    if not CheckpointRegistry(root / "registry", "ranker-duet").submit(checkpoint).accepted:
        raise RuntimeError("the gate rejected the benchmark's ranker")
    return root


def build_export(work: Path) -> Path:
    """The cached export under ``work`` (built on first use); returns its directory."""
    from duet_sdk.export.pipeline import export_all
    from duet_sdk.export.spec import ExportSpec, ShapeSpec
    from duet_sdk.export.verify import Case

    export = work / "export"
    if (export / "manifest.json").is_file():
        return export
    runs = make_runs(work / "runs")
    spec = ExportSpec(
        checkpoints=runs,
        target="cpu",
        formats=("onnx",),
        encoders=("click", "conv"),
        ranker="duet",
        precision="fp32",
        shapes=ShapeSpec(opt_batch=16, max_batch=64, opt_candidates=16, max_candidates=128),
    )
    export_all(spec, export, cases=(Case(3, "max", "mixed"),))
    return export
