"""``<out>/manifest.json``: every artifact with its interface, parity figures, size and sources.

Written atomically (``atomic_write_json``); artifacts of models not exported this time are kept. The
manifest names its ``target``; gpu exports hold ``role`` ``"prep"`` and ``"engine"`` records (an
engine names its ``prep`` model and the ``raw_inputs`` clients send), TensorRT plans their
``toolchain`` (TensorRT, CUDA, GPU) and ONNX engines the ``fallback`` verification under ONNX
Runtime's TensorRT accelerator (or why it is unverified). An int8 artifact (cpu target) records its
``precision``, the looser ``tolerance`` it was verified at and its ``quantization``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from duet_sdk.atomic_io import atomic_write_json
from duet_sdk.export.signature import ModelSignature

MANIFEST = "manifest.json"
OPTIONAL_FIELDS = ("prep", "raw_inputs", "toolchain", "fallback", "quantization")  # written where set


@dataclass
class ArtifactRecord:
    """One verified artifact. ``path`` is relative to the output directory."""

    model: str
    format: str
    path: str
    signature: ModelSignature
    precision: str
    max_abs_diff: dict[str, float]
    max_rel_diff: dict[str, float]
    near_ties: dict[str, int]
    bytes: int
    source_checkpoints: list[dict]
    files: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> hex digest, checked at publish and load
    timings_s: dict[str, float] = field(default_factory=dict)
    verified_rows: int = 0
    warnings: list[str] = field(default_factory=list)
    role: str = "fused"
    prep: str | None = None
    raw_inputs: list[dict] | None = None
    toolchain: dict | None = None
    fallback: dict | None = None
    quantization: dict | None = None  # int8: method, settings, op counts, Gather table dtypes

    def to_dict(self) -> dict:
        io = self.signature.to_dict()
        return {
            "model": self.model,
            "format": self.format,
            "path": self.path,
            "files": self.files,
            "sha256": self.sha256,
            "inputs": io["inputs"],
            "outputs": io["outputs"],
            "dims": io["dims"],
            "precision": self.precision,
            "max_abs_diff": max(self.max_abs_diff.values(), default=0.0),
            "max_rel_diff": max(self.max_rel_diff.values(), default=0.0),
            "per_output": {
                n: {
                    "max_abs_diff": self.max_abs_diff.get(n),
                    "max_rel_diff": self.max_rel_diff.get(n),
                    "near_ties": self.near_ties.get(n),
                }
                for n in self.signature.output_names
            },
            "tolerance": {
                n: self.signature.tolerance(n, self.precision).to_dict() for n in self.signature.output_names
            },
            "verified_rows": self.verified_rows,
            "bytes": self.bytes,
            "timings_s": self.timings_s,
            "source_checkpoints": self.source_checkpoints,
            "warnings": self.warnings,
            "role": self.role,
            **{k: getattr(self, k) for k in OPTIONAL_FIELDS if getattr(self, k) is not None},
        }


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(out: Path) -> dict:
    path = Path(out) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"artifacts": []}


def manifest_target(manifest: dict) -> str | None:
    """The target a manifest was exported for (manifests before the field: cpu, if they hold artifacts)."""
    return manifest.get("target") or ("cpu" if manifest.get("artifacts") else None)


def write_manifest(
    out: Path,
    records: list[ArtifactRecord],
    extraction: dict,
    warnings: list[str],
    target: str = "cpu",
    toolchain: dict | None = None,
) -> dict:
    """Merge ``records`` into ``out/manifest.json`` (same model+format replaced) and write it atomically."""
    previous = read_manifest(out)
    new = [r.to_dict() for r in records]
    replaced = {(a["model"], a["format"]) for a in new}
    artifacts = [a for a in previous.get("artifacts", []) if (a["model"], a["format"]) not in replaced] + new
    manifest = {
        "created_at": datetime.now(UTC).isoformat(),
        "target": target,
        **({"toolchain": toolchain} if toolchain else {}),
        "artifacts": sorted(artifacts, key=lambda a: (a["model"], a["format"])),
        "extraction": {**previous.get("extraction", {}), **extraction},
        "warnings": warnings,
    }
    atomic_write_json(Path(out) / MANIFEST, manifest)
    return manifest
