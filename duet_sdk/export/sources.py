"""Which checkpoints to export: accepted ones from the gate's registries, unless ``force`` overrides.

A ranker brings its own encoders and codecs (its lineage names their digests): exporting encoders
other than those the ranker was trained on would serve codes from another codebook.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from duet_sdk.checkpoint import Checkpoint, load_checkpoint
from duet_sdk.errors import CheckpointError, DuetError
from duet_sdk.gate import CheckpointRegistry, GateDecision, registry_name
from duet_sdk.side.storage import find_codec_by_digest, find_codec_for_encoder

log = logging.getLogger(__name__)


class NotAcceptedError(DuetError):
    """A checkpoint the gate did not accept was asked for without ``--force``."""


@dataclass(frozen=True)
class Source:
    """A checkpoint to export from; ``accepted`` is the gate's verdict (None: not gated, e.g. a codec)."""

    role: str  # "encoder", "codec" or "ranker"
    model: str  # registry model, e.g. "click", "ranker-duet"
    checkpoint: Checkpoint
    accepted: bool | None
    warning: str | None = None

    def to_dict(self) -> dict:
        metrics = self.checkpoint.metrics
        val_ne = metrics.get("val_ne")
        return {
            "role": self.role, "model": self.model, "kind": self.checkpoint.kind,
            "path": str(self.checkpoint.path), "digest": self.checkpoint.digest, "accepted": self.accepted,
            "val_ne": float(val_ne[metrics["primary_task"]]) if val_ne else None,
            "primary_task": metrics.get("primary_task"), "val_ne_by_task": val_ne,
        }


@dataclass
class Selection:
    """Sources per exported model, plus every warning (forced exports) for the manifest."""

    sources: dict[str, list[Source]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _decided(registry: CheckpointRegistry, digest: str) -> GateDecision | None:
    return next((d for d in reversed(registry.decisions()) if d.digest == digest), None)


def _gated(role: str, registry: CheckpointRegistry, checkpoint: Checkpoint, force: bool) -> Source:
    """A Source for ``checkpoint``: refused unless accepted, or forced with a warning."""
    if registry.is_accepted(checkpoint.digest):
        return Source(role, registry.model, checkpoint, True)
    decision = _decided(registry, checkpoint.digest)
    verdict = f"rejected: {decision.reason}" if decision else "never submitted to the gate"
    message = f"{registry.model} checkpoint {checkpoint.path} ({checkpoint.digest[:12]}) is not accepted ({verdict})"
    if not force:
        raise NotAcceptedError(f"{message}; only accepted checkpoints are exported (--force overrides)")
    warning = f"--force: exporting {message}"
    log.warning(warning)
    return Source(role, registry.model, checkpoint, False, warning)


def select(
    runs: Path, model: str, role: str, force: bool, explicit: Path | None = None, digest: str | None = None
) -> Source:
    """The checkpoint of registry ``model`` under ``runs/registry``.

    ``explicit`` (a path) or ``digest`` (from a ranker's lineage) name one; otherwise the latest
    accepted one, or with ``force`` the newest decided one whatever its verdict.
    """
    registry = CheckpointRegistry(Path(runs) / "registry", model)
    if explicit is not None:
        return _gated(role, registry, load_checkpoint(explicit), force)
    decisions = [d for d in registry.decisions() if d.digest is not None]
    if digest is not None:
        decision = next((d for d in reversed(decisions) if d.digest == digest), None)
        if decision is None:
            raise CheckpointError(f"{registry.file}: no checkpoint with digest {digest[:12]} was decided")
        return _gated(role, registry, load_checkpoint(Path(decision.checkpoint)), force)
    if force and decisions:
        return _gated(role, registry, load_checkpoint(Path(decisions[-1].checkpoint)), force)
    latest = registry.latest_accepted()
    if latest is None:
        raise NotAcceptedError(f"{registry.file}: no accepted {model} checkpoint to export (--force overrides)")
    return Source(role, model, latest, True)


def codec_for(runs: Path, name: str, encoder: Checkpoint, digest: str | None = None) -> Source:
    """The SIDE codec of ``encoder``: the one with ``digest`` if given, else the newest trained on it."""
    found = find_codec_by_digest(runs, name, digest) if digest else find_codec_for_encoder(runs, name, encoder.digest)
    if found is None:
        raise CheckpointError(f"{Path(runs) / 'side' / name}: no SIDE codec trained for encoder {encoder.digest[:12]}")
    if found.lineage["data"].get("encoder") != encoder.digest:
        raise CheckpointError(
            f"{found.path}: codec was trained for encoder "
            f"{str(found.lineage['data'].get('encoder'))[:12]}, not {encoder.digest[:12]}"
        )
    return Source("codec", f"side-{name}", found, None)


def select_all(
    runs: Path, encoders: tuple[str, ...], ranker: str | None, force: bool, explicit: dict[str, Path] | None = None
) -> Selection:
    """Sources of every model to export: ``<name>_encoder`` -> [encoder, codec], ``ranker`` -> [ranker, codecs]."""
    explicit = explicit or {}
    selection = Selection()
    upstream: dict = {}
    if ranker is not None:
        model = registry_name(ranker)
        source = select(runs, model, "ranker", force, explicit.get("ranker"))
        upstream = source.checkpoint.lineage.get("upstream", {})
        codecs = [
            Source("codec", f"side-{n}", find_codec_by_digest(runs, n, u["codec"]), None) for n, u in upstream.items()
        ]
        selection.sources["ranker"] = [source, *codecs]
    for name in encoders:
        pinned = upstream.get(name, {}).get("encoder")
        if name in explicit or pinned is None:
            encoder = select(runs, name, "encoder", force, explicit.get(name))
        else:
            encoder = select(runs, name, "encoder", force, digest=pinned)
        codec = codec_for(
            runs,
            name,
            encoder.checkpoint,
            upstream.get(name, {}).get("codec") if pinned == encoder.checkpoint.digest else None,
        )
        selection.sources[f"{name}_encoder"] = [encoder, codec]
    for sources in selection.sources.values():
        selection.warnings += [s.warning for s in sources if s.warning and s.warning not in selection.warnings]
    return selection
