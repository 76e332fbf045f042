"""Publish verified export artifacts as a new version of a Triton model repository.

Layout written (``V`` = the new version, one number for the whole publish)::

    <repo>/repository.json                      every published version: target, sources, interface
    <repo>/<model>/config.pbtxt                 click_encoder, conv_encoder, ranker
    <repo>/<model>/V/{artifact, signature.json, lineage.json[, model.py]}
    <repo>/duet_{upstream,downstream,fresh}/config.pbtxt and V/lineage.json

Atomicity: every model's version directory is first assembled under a hidden non-numeric name beside
it (Triton ignores those); only when all are complete are they renamed into place, components before
ensembles, each followed by its config (replaced by rename); ``repository.json`` comes last. Versions only increase; versions beyond ``policy.keep_versions`` are renamed away, then deleted.
Only artifacts whose source checkpoints the gate accepted are published.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from duet_sdk.checkpoint import atomic_write_json
from duet_sdk.errors import CheckpointError, ConfigError
from duet_sdk.export.manifest import read_manifest
from duet_sdk.export.toolchain import check_plans
from duet_sdk.serving import interface as api
from duet_sdk.serving.config import ServingPolicy, platform_config, runner_config, write_config
from duet_sdk.serving.wiring import RANKER, build_interface, client_records, ensembles, gpu_ensembles, pad_sides, require_roles

RUNNER = Path(__file__).parent / "runner" / "model.py"
REPOSITORY_FILE = "repository.json"
TARGETS = {"cpu": ("onnx", "torchscript"), "gpu": ("tensorrt", "onnx", "torchscript")}  # format preference


@dataclass(frozen=True)
class Published:
    """What one publish wrote: the version number, models (with their format) and the interface."""

    version: int
    models: dict[str, str]
    interface: api.ServingInterface
    repository: Path


def existing_versions(repo: Path) -> list[int]:
    """Every numeric version directory under any model of ``repo``."""
    return sorted({int(v.name) for model in Path(repo).iterdir() if model.is_dir()
                   for v in model.iterdir() if v.is_dir() and v.name.isdigit()}) if Path(repo).is_dir() else []


def _select(manifest: dict, target: str, prefer: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Per exported model, its artifact record in the first format of ``prefer`` (default: the target's
    preference) that it was exported in."""
    if target not in TARGETS:
        raise ConfigError("target", f"one of {tuple(TARGETS)}", target)
    prefer = prefer or TARGETS[target]
    if not prefer or any(f not in TARGETS[target] for f in prefer):
        raise ConfigError("formats", f"formats from {TARGETS[target]} for target {target}", prefer)
    by_model: dict[str, dict[str, dict]] = {}
    for record in manifest.get("artifacts", []):
        by_model.setdefault(record["model"], {})[record["format"]] = record
    chosen = {}
    for model, formats in sorted(by_model.items()):
        fmt = next((f for f in prefer if f in formats), None)
        if fmt is None:
            raise ConfigError(f"{model} artifacts", f"one of {prefer} for target {target}", sorted(formats))
        chosen[model] = formats[fmt]
    if RANKER not in chosen:
        raise ConfigError("manifest.artifacts", "the ranker and the encoders whose codes it reads", sorted(chosen))
    for spec in chosen[RANKER]["inputs"]:
        if spec["name"].endswith("_codes") and spec["name"].removesuffix("_codes") + "_encoder" not in chosen:
            raise ConfigError("manifest.artifacts", f"an encoder producing the ranker's input {spec['name']}", sorted(chosen))
    return chosen


def _require_accepted(records: dict[str, dict]) -> None:
    """Every gated source (encoders, rankers) was accepted; codecs are not gated but pinned by digest."""
    for model, record in records.items():
        for source in record["source_checkpoints"]:
            if source["role"] != "codec" and source.get("accepted") is not True:
                raise CheckpointError(f"{model}: source checkpoint {source['path']} was not accepted by the gate; "
                                      "only gated checkpoints are published")


@dataclass
class _Staged:
    """A version directory assembled under a hidden name, and the config to install with it."""

    staging: Path
    final: Path
    config: object


def _stage(repo: Path, model: str, version: int, config, lineage: dict) -> _Staged:
    model_dir = repo / model
    model_dir.mkdir(parents=True, exist_ok=True)
    final = model_dir / str(version)
    if final.exists():
        raise ConfigError("version", f"a new version directory, but {final} exists", version)
    staged = _Staged(Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=model_dir)), final, config)
    (staged.staging / "lineage.json").write_text(json.dumps(lineage, indent=2), encoding="utf-8")
    return staged


def _stage_model(repo: Path, model: str, record: dict, export_dir: Path, target: str, version: int,
                 lineage: dict, policy: ServingPolicy, precision: str, staged: list[_Staged]) -> None:
    """Stage ``model``'s version: artifact files, ``signature.json``, lineage and, for cpu, the runner."""
    config = runner_config(model, record, policy) if target == "cpu" else platform_config(model, record, policy, precision)
    stage = _stage(repo, model, version, config, lineage | {"artifact": record})
    staged.append(stage)
    source = (export_dir / record["path"]).parent
    for name in record["files"]:
        shutil.copy2(source / name, stage.staging / name)
    signature = {k: record[k] for k in ("inputs", "outputs", "dims")} | {"pad": pad_sides(record)}
    (stage.staging / "signature.json").write_text(json.dumps(signature, indent=2), encoding="utf-8")
    if target == "cpu":
        shutil.copy2(RUNNER, stage.staging / "model.py")


def prune(repo: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` versions of every model (renamed away first); returns them."""
    removed = []
    for model in sorted(p for p in Path(repo).iterdir() if p.is_dir()):
        versions = sorted((int(v.name) for v in model.iterdir() if v.is_dir() and v.name.isdigit()), reverse=True)
        for old in versions[keep:]:
            trash = model / f".removed-{old}"
            os.rename(model / str(old), trash)
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(model / str(old))
    return removed


def publish(export_dir: Path, repo: Path, target: str = "cpu", policy: ServingPolicy | None = None,
            precision: str = "fp16", formats: tuple[str, ...] | None = None, force: bool = False) -> Published:
    """Publish the artifacts of ``export_dir/manifest.json`` into ``repo`` as one new version.

    ``formats``: artifact formats in order of preference (default: tensorrt, onnx, torchscript for gpu;
    onnx, torchscript for cpu). ``precision`` is the gpu ONNX Runtime TensorRT accelerator's where the
    manifest does not say. gpu: encoders are prep + engine chains; a TensorRT plan built with another
    TensorRT/CUDA/GPU than this host's is refused unless ``force`` (then recorded as a warning).

    Components are written before the ensembles that use them; ``repository.json`` is updated last.
    """
    export_dir, repo, policy = Path(export_dir), Path(repo), policy or ServingPolicy()
    manifest = read_manifest(export_dir)
    records = _select(manifest, target, formats)
    require_roles(records, target)
    _require_accepted(records)
    warnings = check_plans(records, force) if target == "gpu" else []
    repo.mkdir(parents=True, exist_ok=True)
    version = max(existing_versions(repo), default=0) + 1
    interface = build_interface(client_records(records) if target == "gpu" else records, version)
    published_at = datetime.now(UTC).isoformat()
    lineage = {"version": version, "target": target, "published_at": published_at,
               "export_manifest": str((export_dir / "manifest.json").resolve()), "export_created_at": manifest.get("created_at"),
               **({"warnings": warnings} if warnings else {})}
    staged: list[_Staged] = []
    try:
        for model, record in records.items():
            _stage_model(repo, model, record, export_dir, target, version, lineage, policy, precision, staged)
        for config in (gpu_ensembles(records, interface) if target == "gpu" else ensembles(records, interface)):
            staged.append(_stage(repo, config.name, version, config, lineage))
    except BaseException:
        for stage in staged:
            shutil.rmtree(stage.staging, ignore_errors=True)
        raise
    for stage in staged:  # components before the ensembles that use them
        os.rename(stage.staging, stage.final)
        write_config(stage.final.parent, stage.config)
    prune(repo, policy.keep_versions)
    history = json.loads((repo / REPOSITORY_FILE).read_text(encoding="utf-8")) if (repo / REPOSITORY_FILE).exists() else {"versions": []}
    history["versions"].append(lineage | {
        "models": {m: {"format": r["format"], "sources": r["source_checkpoints"], "max_abs_diff": r["max_abs_diff"]}
                   for m, r in records.items()},
        "ensembles": list(api.ENSEMBLES)})
    history["latest"] = version
    history["interface"] = json.loads(interface.to_json())
    atomic_write_json(repo / REPOSITORY_FILE, history)
    return Published(version, {m: r["format"] for m, r in records.items()}, interface, repo)
