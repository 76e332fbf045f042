"""Publish a verified export as one new release of a Triton model repository.

Layout written for release ``V`` (see ``releases`` for ``repository.json``)::

    <repo>/repository.json                    releases, current, loaded, target
    <repo>/<model>_vV/config.pbtxt, V/        click_encoder_vV, conv_encoder_vV, ranker_vV (gpu: also the prep
                                              models click_prep_vV, conv_prep_vV): artifact files,
                                              signature.json (with every file's sha256), lineage.json[, model.py]
    <repo>/<ensemble>_guard_vV/config.pbtxt, V/  duet_upstream_guard_vV, duet_fresh_guard_vV (``guard.py``): the
                                              runner in checks-only mode, signature.json, model.py; no artifact
    <repo>/<ensemble>_vV/config.pbtxt, V/     duet_upstream_vV, duet_downstream_vV, duet_fresh_vV: steps pinned
                                              to the release's guards (cpu) and components, version V (gpu: each
                                              engine step preceded by its prep step, both release V)
    <repo>/<ensemble>/config.pbtxt, V/        duet_upstream, ...: aliases of the current release (written by a swap,
                                              or by the first publish)

Atomicity: every model directory of the release is assembled under a hidden name at the repository root
and checked against the manifest's sha256 there; only then are they renamed into place, and the release
enters ``repository.json`` last. A directory that belongs to no recorded release (what an interrupted
publish leaves) is removed before the next publish, which then takes the next number after the recorded
releases. No server loads a release before a swap asks for it. Only artifacts whose source checkpoints
the gate accepted are published.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from duet_sdk import interface as api
from duet_sdk.errors import ArtifactError, CheckpointError, ConfigError
from duet_sdk.export.manifest import MANIFEST, read_manifest, sha256_file
from duet_sdk.export.toolchain import check_plans
from duet_sdk.serving import releases
from duet_sdk.serving.config import ServingPolicy, only_version, platform_config, runner_config, write_config
from duet_sdk.serving.guard import FORMAT as GUARD
from duet_sdk.serving.guard import guard_config
from duet_sdk.serving.wiring import (
    RANKER,
    build_interface,
    client_records,
    ensembles,
    gpu_ensembles,
    guards,
    pad_sides,
    require_roles,
    trim_dims,
)

log = logging.getLogger(__name__)
RUNNER = Path(__file__).parent / "runner" / "model.py"
TARGETS = {"cpu": ("onnx", "torchscript"), "gpu": ("tensorrt", "onnx", "torchscript")}  # format preference


@dataclass(frozen=True)
class Published:
    """What one publish wrote: the release number, models (with their format) and the interface."""

    version: int
    models: dict[str, str]
    interface: api.ServingInterface
    repository: Path


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
            raise ConfigError(
                "manifest.artifacts", f"an encoder producing the ranker's input {spec['name']}", sorted(chosen)
            )
    return chosen


def _require_accepted(records: dict[str, dict]) -> None:
    """Every gated source (encoders, rankers) was accepted; codecs are not gated but pinned by digest."""
    for model, record in records.items():
        for source in record["source_checkpoints"]:
            if source["role"] != "codec" and source.get("accepted") is not True:
                raise CheckpointError(
                    f"{model}: source checkpoint {source['path']} was not accepted by the gate; "
                    "only gated checkpoints are published"
                )


def _require_complete(export_dir: Path, records: dict[str, dict]) -> None:
    """Every file of every chosen artifact exists and has a recorded sha256; ArtifactError naming what is not."""
    missing, undigested = [], []
    for model, record in records.items():
        source = (export_dir / record["path"]).parent
        for name in record["files"]:
            if not (source / name).is_file():
                missing.append(f"{model} ({record['format']}): {source / name}")
            if name not in record.get("sha256", {}):
                undigested.append(f"{model} ({record['format']}): {name}")
    if missing:
        raise ArtifactError(
            f"{export_dir} is a partial export; missing {len(missing)} file(s): {'; '.join(missing)} "
            "(re-run duet-export)"
        )
    if undigested:
        raise ArtifactError(
            f"{export_dir / MANIFEST} records no sha256 for: {'; '.join(undigested)} (re-export with this duet-export)"
        )


def check_digests(directory: Path, digests: dict[str, str], what: str) -> None:
    """Every file of ``digests`` in ``directory`` has its recorded sha256; ArtifactError naming the first that
    does not."""
    for name, want in sorted(digests.items()):
        path = Path(directory) / name
        got = sha256_file(path) if path.is_file() else "missing"
        if got != want:
            raise ArtifactError(
                f"{what}: {name} has sha256 {got}, the manifest records {want}; refusing a tampered or corrupt artifact"
            )


def _stage_model(root: Path, name: str, version: int, config, files: dict[str, Path], payload: dict[str, str]) -> Path:
    """``<root>/.staging-<name>-*/`` holding ``config.pbtxt`` and ``<version>/``: ``files`` copied, ``payload``
    written (name -> text); returns the staging directory."""
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=root))
    try:
        (staging / str(version)).mkdir()
        for target, source in files.items():
            shutil.copy2(source, staging / str(version) / target)
        for target, text in payload.items():
            (staging / str(version) / target).write_text(text, encoding="utf-8")
        config.name = name
        write_config(staging, only_version(config, version))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _stage_component(
    root: Path,
    model: str,
    record: dict,
    export_dir: Path,
    target: str,
    version: int,
    lineage: dict,
    policy: ServingPolicy,
    precision: str,
) -> Path:
    """Stage ``model``'s release directory: artifact files (digests checked on the copies), signature.json
    with their sha256, lineage and, for cpu and guards (``guard.py``: no artifact files), the runner."""
    name = api.release_model(model, version)
    guard = record["format"] == GUARD
    if guard:
        config = guard_config(name, record, policy)
    else:
        config = (
            runner_config(name, record, policy) if target == "cpu" else platform_config(name, record, policy, precision)
        )
    digests = record.get("sha256", {})
    signature = {k: record[k] for k in ("inputs", "outputs", "dims")} | {"pad": pad_sides(record), "sha256": digests,
                                                                       "trim": trim_dims(record)}
    files = {n: (export_dir / record["path"]).parent / n for n in record["files"]}
    files |= {"model.py": RUNNER} if target == "cpu" or guard else {}
    staging = _stage_model(
        root,
        name,
        version,
        config,
        files,
        {
            "signature.json": json.dumps(signature, indent=2),
            "lineage.json": json.dumps(lineage | {"artifact": record}, indent=2),
        },
    )
    try:
        check_digests(staging / str(version), digests, f"{model} ({record['format']}) of {export_dir}")
    except ArtifactError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _remove(path: Path) -> None:
    """Rename ``path`` away (a hidden name Triton ignores), then delete it."""
    trash = path.parent / f".removed-{path.name}-{os.getpid()}"
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def remove_orphans(repo: Path, index: dict) -> list[Path]:
    """Remove what no recorded release owns: staging leftovers, release directories of unrecorded numbers,
    alias version directories of unrecorded numbers (an interrupted publish); returns what was removed."""
    recorded = {e["version"] for e in index["releases"] if e["status"] != releases.PRUNED}
    removed = []
    for path in sorted(Path(repo).iterdir()):
        if not path.is_dir():
            continue
        split = api.split_release_model(path.name)
        if path.name.startswith((".staging-", ".removed-")) or (split and split[1] not in recorded):
            removed.append(path)
        elif path.name in api.ENSEMBLES:
            removed += [
                v for v in path.iterdir() if v.is_dir() and (not v.name.isdigit() or int(v.name) not in recorded)
            ]
    for path in removed:
        log.warning("removing %s: it belongs to no published release (an interrupted publish?)", path)
        if path.name.startswith(".removed-"):
            shutil.rmtree(path, ignore_errors=True)
        else:
            _remove(path)
    return removed


def prune(repo: Path, index: dict, keep: int) -> list[int]:
    """Remove the files of releases beyond the newest ``keep`` ready ones, and of failed ones; never the
    current, a loaded or the target release. Their entries stay (status "pruned"). Returns their numbers."""
    protected = {index["current"], index["target"], *index["loaded"]}
    ready = sorted((e["version"] for e in index["releases"] if e["status"] == releases.READY), reverse=True)
    doomed = [
        e
        for e in index["releases"]
        if e["version"] not in protected
        and (e["status"] == releases.FAILED or (e["status"] == releases.READY and e["version"] not in ready[:keep]))
    ]
    for entry in doomed:
        for name in releases.release_models(entry):
            if (Path(repo) / name).exists():
                _remove(Path(repo) / name)
        for ensemble in api.ENSEMBLES:
            if (Path(repo) / ensemble / str(entry["version"])).exists():
                _remove(Path(repo) / ensemble / str(entry["version"]))
        entry["status"] = releases.PRUNED
    return [e["version"] for e in doomed]


def publish(export_dir: Path, repo: Path, target: str = "cpu", policy: ServingPolicy | None = None,
            precision: str = "fp16", formats: tuple[str, ...] | None = None, activate: bool = True,
            force: bool = False, policies: dict[str, ServingPolicy] | None = None) -> Published:
    """Publish the artifacts of ``export_dir/manifest.json`` into ``repo`` as one new release.

    ``formats``: artifact formats in order of preference (default: tensorrt, onnx, torchscript for gpu;
    onnx, torchscript for cpu). ``precision`` is the gpu ONNX Runtime TensorRT accelerator's where the
    manifest does not say. gpu: encoders are prep + engine chains (the prep models are components of the
    release too: ``click_prep_vV``); a TensorRT plan built with another TensorRT/CUDA/GPU than this
    host's is refused unless ``force`` (then recorded as a warning in the release's lineage).
    ``activate``: make it the target release (duet-serve swaps to it); the first release is current at once.
    ``policies``: per-model policies (``ranker`` -> ServingPolicy, e.g. ``duet-tune``'s choice) overriding
    ``policy`` for those models.
    ArtifactError if the export is partial or a file differs from its manifest sha256 (nothing is written).
    """
    export_dir, repo, policy = Path(export_dir), Path(repo), policy or ServingPolicy()
    if not (export_dir / MANIFEST).is_file():
        raise ArtifactError(f"{export_dir}: no {MANIFEST}; expected a complete duet-export output directory")
    manifest = read_manifest(export_dir)
    records = _select(manifest, target, formats)
    require_roles(records, target)
    _require_accepted(records)
    _require_complete(export_dir, records)
    warnings = check_plans(records, force) if target == "gpu" else []
    with releases.locked_index(repo) as index:
        remove_orphans(repo, index)
        version = max((e["version"] for e in index["releases"]), default=0) + 1
        interface = build_interface(manifest, client_records(records) if target == "gpu" else records, version)
        lineage = {
            "version": version,
            "target": target,
            "published_at": datetime.now(UTC).isoformat(),
            "export_manifest": str((export_dir / MANIFEST).resolve()),
            "export_created_at": manifest.get("created_at"),
            **({"warnings": warnings} if warnings else {}),
        }
        name = lambda model: api.release_model(model, version)  # noqa: E731
        configs = (
            gpu_ensembles(records, interface, version, model_name=name)
            if target == "gpu"
            else ensembles(records, interface, version)
        )
        guarded = guards(client_records(records) if target == "gpu" else records)  # checks-only runners, both targets
        staged: list[tuple[Path, str]] = []
        try:
            for model, record in {**records, **guarded}.items():  # gpu: prep models too; guards before their ensembles
                path = _stage_component(repo, model, record, export_dir, target, version, lineage,
                                        (policies or {}).get(model, policy), precision)
                staged.append((path, name(model)))
            for config in configs:
                staged.append(
                    (
                        _stage_model(repo, config.name, version, config, {}, {"lineage.json": json.dumps(lineage)}),
                        config.name,
                    )
                )
        except BaseException:
            for path, _ in staged:
                shutil.rmtree(path, ignore_errors=True)
            raise
        for path, release_name in staged:  # components before the ensembles that use them
            os.rename(path, repo / release_name)
        index["releases"].append(
            lineage
            | {
                "status": releases.READY,
                "models": {
                    m: {
                        "format": r["format"],
                        "role": r.get("role", "fused"),
                        "sources": r["source_checkpoints"],
                        "max_abs_diff": r["max_abs_diff"],
                        "sha256": r["sha256"],
                    }
                    for m, r in records.items()
                },
                "guards": list(guarded),
                "ensembles": list(api.ENSEMBLES),
                "interface": json.loads(interface.to_json()),
            }
        )
        if index["current"] is None:  # the first release is current at once
            for ensemble in api.ENSEMBLES:
                releases.point_alias(repo, ensemble, version)
            index["current"], index["loaded"] = version, [version]
        if activate or index["target"] is None:
            index["target"] = version
        for old in prune(repo, index, policy.keep_versions):
            log.info("pruned release %d (beyond the newest %d on disk)", old, policy.keep_versions)
    return Published(version, {m: r["format"] for m, r in records.items()}, interface, repo)


def request_rollback(repo: Path, version: int) -> dict:
    """Make ``version`` (a ready release still on disk) the target; duet-serve swaps back to it. Returns its entry."""
    with releases.locked_index(repo) as index:
        entry = releases.usable(index, version)
        index["target"] = version
    return entry
