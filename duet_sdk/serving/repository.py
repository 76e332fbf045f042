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
from datetime import datetime, timezone
from pathlib import Path

from duet_sdk.checkpoint import atomic_write_json
from duet_sdk.errors import CheckpointError, ConfigError
from duet_sdk.export.manifest import read_manifest
from duet_sdk.serving import interface as api
from duet_sdk.serving.config import ServingPolicy, Step, ensemble_config, platform_config, runner_config, write_config

RUNNER = Path(__file__).parent / "runner" / "model.py"
REPOSITORY_FILE = "repository.json"
TARGETS = {"cpu": ("onnx", "torchscript"), "gpu": ("tensorrt", "onnx", "torchscript")}  # format preference
RANKER = "ranker"
# Histories are left-padded (most recent event last); candidates are padded at the end.
SEQUENCE_SIDE, CANDIDATE_SIDE = "left", "right"


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
    if RANKER not in chosen or not any(m.endswith("_encoder") for m in chosen):
        raise ConfigError("manifest.artifacts", "at least one encoder and the ranker", sorted(chosen))
    return chosen


def _require_accepted(records: dict[str, dict]) -> None:
    """Every gated source (encoders, rankers) was accepted; codecs are not gated but pinned by digest."""
    for model, record in records.items():
        for source in record["source_checkpoints"]:
            if source["role"] != "codec" and source.get("accepted") is not True:
                raise CheckpointError(f"{model}: source checkpoint {source['path']} was not accepted by the gate; "
                                      "only gated checkpoints are published")


def _pad_sides(record: dict) -> dict[str, str]:
    """Padding side of every non-batch symbolic dim of ``record``."""
    dims = {d for spec in (*record["inputs"], *record["outputs"]) for d in spec["shape"][1:] if isinstance(d, str)}
    return {d: CANDIDATE_SIDE if d == "candidates" else SEQUENCE_SIDE for d in sorted(dims)}


def _tasks(ranker: dict) -> tuple[str, ...]:
    """Task names of the ranker, from its source checkpoint's config."""
    source = next(s for s in ranker["source_checkpoints"] if s["role"] == "ranker")
    config = json.loads((Path(source["path"]) / "config.json").read_text(encoding="utf-8"))
    return tuple(t["name"] for t in config["model"]["tasks"])


def build_interface(records: dict[str, dict], version: int) -> api.ServingInterface:
    """The ``ServingInterface`` of the published models, read off their tensor specs."""
    ranker = records[RANKER]
    specs = {s["name"]: s for r in records.values() for s in (*r["inputs"], *r["outputs"])}
    encoders = [r for m, r in records.items() if m.endswith("_encoder")]
    streams = {}
    for record in encoders:
        for spec in record["inputs"]:
            if spec["name"].endswith("_ids"):
                length_dim = spec["shape"][1]
                streams[spec["name"].removesuffix("_ids")] = api.StreamInfo(record["dims"][length_dim]["max"], spec["shape"][2])
    embeddings = {}
    for record in encoders:
        name = record["model"].removesuffix("_encoder")
        codes = specs[f"{name}_codes"]
        high = next((s.get("range", [0, 0])[1] for s in ranker["inputs"] if s["name"] == codes["name"]), 0)
        embeddings[name] = api.EmbeddingInfo(codes["shape"][1], high, specs[f"{name}_embedding"]["shape"][1])
    return api.ServingInterface(
        streams=streams, embeddings=embeddings,
        static_sparse=specs["static_sparse"]["shape"][1], static_dense=specs["static_dense"]["shape"][1],
        item_sparse=specs["item_sparse"]["shape"][2], item_dense=specs["item_dense"]["shape"][2],
        tasks=_tasks(ranker), max_batch=min(r["dims"]["batch"]["max"] for r in records.values()),
        max_candidates=ranker["dims"]["candidates"]["max"], version=str(version))


def _unique(specs: list[dict]) -> list[dict]:
    seen: dict[str, dict] = {}
    for spec in specs:
        seen.setdefault(spec["name"], spec)
    return list(seen.values())


def ensembles(records: dict[str, dict], interface: api.ServingInterface) -> list:
    """The configs of duet_upstream, duet_downstream and duet_fresh."""
    encoders = {m: r for m, r in records.items() if m.endswith("_encoder")}
    ranker = records[RANKER]
    identity = lambda specs: {s["name"]: s["name"] for s in specs}  # noqa: E731
    encoder_steps = [Step(m, identity(r["inputs"]), identity(r["outputs"])) for m, r in encoders.items()]
    up_inputs = _unique([s for r in encoders.values() for s in r["inputs"]])
    up_outputs = [s for r in encoders.values() for s in r["outputs"]]
    produced = {s["name"] for s in up_outputs}
    codes = [s for s in up_outputs if s["name"] in {i["name"] for i in ranker["inputs"]}]
    ranker_step = Step(RANKER, identity(ranker["inputs"]), identity(ranker["outputs"]))
    fresh_encoder_steps = [Step(m, identity(r["inputs"]), identity([s for s in r["outputs"] if s["name"].endswith("_codes")]))
                           for m, r in encoders.items()]
    max_batch = interface.max_batch
    params = {api.PARAMETER: interface.to_json()}
    return [
        ensemble_config(api.UPSTREAM, up_inputs, up_outputs, encoder_steps, max_batch, params),
        ensemble_config(api.DOWNSTREAM, ranker["inputs"], ranker["outputs"], [ranker_step], max_batch, params),
        ensemble_config(api.FRESH, _unique(up_inputs + [s for s in ranker["inputs"] if s["name"] not in produced]),
                        [*ranker["outputs"], *codes], [*fresh_encoder_steps, ranker_step], max_batch, params),
    ]


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
    signature = {k: record[k] for k in ("inputs", "outputs", "dims")} | {"pad": _pad_sides(record)}
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


def publish(export_dir: Path, repo: Path, target: str = "cpu", policy: ServingPolicy = ServingPolicy(),
            precision: str = "fp16", formats: tuple[str, ...] | None = None) -> Published:
    """Publish the artifacts of ``export_dir/manifest.json`` into ``repo`` as one new version.

    ``formats``: artifact formats in order of preference (default: tensorrt, onnx, torchscript for gpu;
    onnx, torchscript for cpu). ``precision`` is the gpu ONNX Runtime TensorRT accelerator's.

    Components are written before the ensembles that use them; ``repository.json`` is updated last.
    """
    export_dir, repo = Path(export_dir), Path(repo)
    manifest = read_manifest(export_dir)
    records = _select(manifest, target, formats)
    _require_accepted(records)
    repo.mkdir(parents=True, exist_ok=True)
    version = max(existing_versions(repo), default=0) + 1
    interface = build_interface(records, version)
    published_at = datetime.now(timezone.utc).isoformat()
    lineage = {"version": version, "target": target, "published_at": published_at,
               "export_manifest": str((export_dir / "manifest.json").resolve()), "export_created_at": manifest.get("created_at")}
    staged: list[_Staged] = []
    try:
        for model, record in records.items():
            _stage_model(repo, model, record, export_dir, target, version, lineage, policy, precision, staged)
        for config in ensembles(records, interface):
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
