"""Crash-safe file writes without heavy imports: a file is complete or absent, never half-written.

Used by checkpoints, export manifests, the release index and backfill cursors; it imports nothing
beyond the standard library so that light (serving-client) code can use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from duet_sdk.errors import ConfigError


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` via a synced temporary file and ``os.replace``."""
    path = Path(path)
    data = to_json(obj, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        write_synced(Path(tmp), data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def to_json(obj: Any, field: str) -> bytes:
    """``obj`` as indented, key-sorted JSON bytes; ConfigError naming ``field`` if it cannot be."""
    try:
        return json.dumps(obj, indent=2, sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise ConfigError(field, "JSON-serializable values", str(exc)) from exc


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that renames into it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
