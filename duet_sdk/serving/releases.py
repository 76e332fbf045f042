"""``<repo>/repository.json``: every release, which one is current, which are loaded, which is wanted.

Fields::

    releases   [{version, status, published_at, models, guards, ensembles, interface, ...}]  status: "ready" (published,
               digests verified), "failed" (a swap to it failed; ``error`` says why), "pruned" (files removed)
    current    the release the alias ensembles (duet_upstream, ...) point to
    loaded     releases a server loads, most recently current first (current first)
    target     the release duet-serve should make current (set by duet-publish and a rollback)

Every read-modify-write holds an exclusive ``flock`` on ``<repo>/.repository.lock`` and replaces the file
by rename, so duet-publish and duet-serve never lose each other's updates.

Example:
    >>> with locked_index(repo) as index:
    ...     index["target"] = 2
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path

from duet_sdk import interface as api
from duet_sdk.atomic_io import atomic_write_json
from duet_sdk.errors import ConfigError

INDEX = "repository.json"
LOCK = ".repository.lock"
READY, FAILED, PRUNED = "ready", "failed", "pruned"


def empty_index() -> dict:
    return {"releases": [], "current": None, "loaded": [], "target": None}


def read_index(repo: Path) -> dict:
    """The index of ``repo`` (an empty one before the first publish); ConfigError if unreadable."""
    path = Path(repo) / INDEX
    if not path.exists():
        return empty_index()
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), "a readable repository index (JSON)", str(exc)) from exc
    if "releases" not in index:
        raise ConfigError(str(path), "a repository index with 'releases' (published by this duet-publish)",
                          sorted(index))
    return index


@contextlib.contextmanager
def locked_index(repo: Path) -> Iterator[dict]:
    """The index under an exclusive lock; written back (atomically) when the block exits normally."""
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    with open(repo / LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            index = read_index(repo)
            yield index
            atomic_write_json(repo / INDEX, index)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def release(index: dict, version: int) -> dict:
    """The entry of release ``version``; ConfigError naming the releases there are."""
    for entry in index["releases"]:
        if entry["version"] == version:
            return entry
    raise ConfigError("release", f"one of the published releases {[e['version'] for e in index['releases']]}", version)


def usable(index: dict, version: int) -> dict:
    """The entry of ``version`` if it can be served (status ready), else ConfigError saying why not."""
    entry = release(index, version)
    if entry["status"] != READY:
        raise ConfigError("release", f"a release with status {READY!r}; release {version} is {entry['status']!r}"
                          + (f" ({entry['error']})" if entry.get("error") else ""), version)
    return entry


def components(entry: dict) -> list[str]:
    """Release names of ``entry``'s components (encoders before the ranker; gpu: the prep models too), then of
    its guards (``duet_fresh_guard_v3``, ``serving/guard.py``; absent from releases recorded before guards existed)."""
    return [api.release_model(m, entry["version"]) for m in [*entry["models"], *entry.get("guards", [])]]


def release_ensembles(entry: dict) -> list[str]:
    """Release names of ``entry``'s ensembles (``duet_fresh_v3``, ...)."""
    return [api.release_model(e, entry["version"]) for e in api.ENSEMBLES]


def release_models(entry: dict) -> list[str]:
    """Every model of a release in load order: components before the ensembles that call them."""
    return [*components(entry), *release_ensembles(entry)]


def startup_models(index: dict) -> list[str]:
    """What a server loads at start: every loaded release's models, then the aliases of the current one."""
    names = [name for version in index["loaded"] for name in release_models(release(index, version))]
    return [*names, *api.ENSEMBLES] if index["current"] is not None else names


def point_alias(repo: Path, ensemble: str, version: int) -> Path:
    """Write ``<repo>/<ensemble>/config.pbtxt`` as a copy of ``<ensemble>_v<version>``'s config (so its steps
    are pinned to that release) serving only version ``version``, whose directory it creates; returns the dir."""
    from duet_sdk.serving.config import read_config, write_config

    config = read_config(Path(repo) / api.release_model(ensemble, version) / "config.pbtxt")
    config.name = ensemble
    alias = Path(repo) / ensemble
    (alias / str(version)).mkdir(parents=True, exist_ok=True)
    write_config(alias, config)
    return alias
