"""Checkpoints: directories of weights, config, metrics and lineage, plus a ``digest.json`` over them.

A checkpoint is written in a temporary directory and renamed into place, so it is complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from duet_sdk._extras import missing_extra

try:
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save
except ModuleNotFoundError as exc:  # the [train] extra is not installed
    raise missing_extra(exc, __name__) from exc

from duet_sdk.atomic_io import fsync_dir, to_json, write_synced
from duet_sdk.errors import CheckpointError, ConfigError
from duet_sdk.validation import require_int

WEIGHTS = "model.safetensors"
JSON_FILES = ("config.json", "metrics.json", "lineage.json")
CONTENT_FILES = (WEIGHTS, *JSON_FILES)
DIGEST_FILE = "digest.json"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint directory's metadata; the weights are read on demand."""

    path: Path
    kind: str
    config: dict
    metrics: dict
    lineage: dict
    digest: str

    @property
    def primary_task(self) -> str:
        if "val_ne" not in self.metrics:
            raise CheckpointError(f"{self.path}: metrics.json has no val_ne")
        return self.metrics["primary_task"]

    @property
    def val_ne(self) -> dict[str, float]:
        return dict(self.metrics["val_ne"])

    @property
    def primary_ne(self) -> float:
        return float(self.metrics["val_ne"][self.primary_task])

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights, read from ``model.safetensors`` (CPU tensors)."""
        try:
            return load_file(self.path / WEIGHTS)
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(f"{self.path / WEIGHTS}: cannot read weights: {exc}") from exc


def save_checkpoint(
    parent: Path, name: str, state_dict: Mapping[str, torch.Tensor], config: dict, metrics: dict, lineage: dict
) -> Checkpoint:
    """Write a checkpoint to ``parent/name`` atomically; never overwrites an existing one."""
    target = Path(parent) / _check_name(name)
    payloads = {
        WEIGHTS: save(_check_state_dict(state_dict), metadata={"format": "pt"}),
        "config.json": to_json(_check_config(config), "config"),
        "metrics.json": to_json(_check_metrics(metrics), "metrics"),
        "lineage.json": to_json(_check_lineage(lineage), "lineage"),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    _refuse_existing(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=target.parent))
    try:
        digest = _write_contents(tmp, payloads)
        _refuse_existing(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)
    config, metrics, lineage = (json.loads(payloads[f]) for f in JSON_FILES)
    return Checkpoint(target, config["kind"], config, metrics, lineage, digest)


def load_checkpoint(path: Path, verify: bool = True) -> Checkpoint:
    """Read a checkpoint's metadata; with ``verify``, check every file against ``digest.json``."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no checkpoint directory")
    for name in (*CONTENT_FILES, DIGEST_FILE):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: missing {name}")
    recorded = _read_json(path, DIGEST_FILE)
    if not isinstance(recorded.get("digest"), str):
        raise CheckpointError(f"{path}: corrupt {DIGEST_FILE}: no digest")
    if verify:
        _verify(path, recorded)
    config = _read_json(path, "config.json", _check_config)
    metrics = _read_json(path, "metrics.json", _check_metrics)
    lineage = _read_json(path, "lineage.json", _check_lineage)
    return Checkpoint(path, config["kind"], config, metrics, lineage, recorded["digest"])


def compute_digest(path: Path) -> str:
    """The digest of a checkpoint directory, recomputed from its content files."""
    return _combine(_file_hashes(Path(path)))


def _write_contents(tmp: Path, payloads: dict[str, bytes]) -> str:
    """Write the content files and ``digest.json`` into ``tmp``, synced; return the digest."""
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in payloads.items()}
    digest = _combine(hashes)
    record = {"algorithm": "sha256", "files": hashes, "digest": digest}
    payloads = {**payloads, DIGEST_FILE: to_json(record, DIGEST_FILE)}
    for name, data in payloads.items():
        write_synced(tmp / name, data)
    fsync_dir(tmp)
    return digest


def _verify(path: Path, recorded: dict) -> None:
    if recorded.get("algorithm") != "sha256":
        raise CheckpointError(f"{path / DIGEST_FILE}: unsupported algorithm {recorded.get('algorithm')!r}")
    expected_files = recorded.get("files") if isinstance(recorded.get("files"), dict) else {}
    actual_files = _file_hashes(path)
    actual = _combine(actual_files)
    if actual != recorded.get("digest") or actual_files != expected_files:
        changed = sorted(n for n in actual_files.keys() | expected_files.keys()
                         if actual_files.get(n) != expected_files.get(n))
        raise CheckpointError(
            f"{path}: digest mismatch (expected {recorded.get('digest')}, actual {actual}); changed: {changed}"
        )


def _file_hashes(path: Path) -> dict[str, str]:
    hashes = {}
    for name in CONTENT_FILES:
        try:
            with open(path / name, "rb") as f:
                hashes[name] = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read {name}: {exc}") from exc
    return hashes


def _combine(hashes: dict[str, str]) -> str:
    lines = "".join(f"{name}:{sha}\n" for name, sha in sorted(hashes.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _read_json(path: Path, name: str, check: Callable[[dict], dict] = dict) -> dict:
    """``path/name`` as a JSON object passed through ``check``; any problem is a ``CheckpointError``."""
    try:
        data = json.loads((path / name).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return check(data)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: invalid {name}: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt {name}: {exc}") from exc


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or name.startswith(".") or Path(name).name != name:
        raise ConfigError("name", "a plain directory name not starting with '.'", name)
    return name


def _check_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not isinstance(state_dict, Mapping):
        raise ConfigError("state_dict", "a mapping of str to torch.Tensor", type(state_dict).__name__)
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ConfigError(f"state_dict.{key}", "a torch.Tensor under a str key", type(value).__name__)
    # Cloning gives every tensor its own contiguous CPU storage, as safetensors requires.
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in state_dict.items()}


def _check_config(config: dict) -> dict:
    _require_mapping(config, "config")
    kind = config.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ConfigError("config.kind", "a non-empty str", kind)
    _require_mapping(config.get("interface"), "config.interface")
    _require_mapping(config.get("model"), "config.model")
    return config


def _check_metrics(metrics: dict) -> dict:
    """``val_ne`` is optional (a SIDE codec has none); where present it names a primary task."""
    _require_mapping(metrics, "metrics")
    if "val_ne" not in metrics:
        return metrics
    val_ne = metrics.get("val_ne")
    if not isinstance(val_ne, dict) or not val_ne:
        raise ConfigError("metrics.val_ne", "a non-empty mapping of task to float", val_ne)
    for task, ne in val_ne.items():
        if not isinstance(task, str) or not isinstance(ne, (int, float)) or isinstance(ne, bool) or math.isinf(ne):
            raise ConfigError(f"metrics.val_ne.{task}", "a finite or NaN float under a str task", ne)
    if not isinstance(metrics.get("primary_task"), str) or metrics["primary_task"] not in val_ne:
        raise ConfigError("metrics.primary_task", f"one of {sorted(val_ne)}", metrics.get("primary_task"))
    return {**metrics, "val_ne": {task: float(ne) for task, ne in val_ne.items()}}


def _check_lineage(lineage: dict) -> dict:
    """Validate lineage; ``created_at`` defaults to now (UTC)."""
    _require_mapping(lineage, "lineage")
    lineage = {"created_at": datetime.now(UTC).isoformat(), **lineage}
    if not isinstance(lineage.get("predecessor", 0), (str, type(None))):
        raise ConfigError("lineage.predecessor", "a digest str or None", lineage.get("predecessor", "<missing>"))
    _require_mapping(lineage.get("data"), "lineage.data")
    require_int("lineage.step", lineage.get("step"), minimum=0)
    require_int("lineage.seed", lineage.get("seed"))
    try:
        datetime.fromisoformat(lineage["created_at"])
    except (TypeError, ValueError) as exc:
        raise ConfigError("lineage.created_at", "an ISO 8601 timestamp", lineage["created_at"]) from exc
    return lineage


def _require_mapping(value: Any, field: str) -> None:
    if not isinstance(value, dict):
        raise ConfigError(field, "a mapping", value)


def _refuse_existing(target: Path) -> None:
    if os.path.lexists(target):
        raise CheckpointError(f"{target}: already exists; checkpoints are never overwritten")
