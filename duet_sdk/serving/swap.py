"""Make a release current on a running tritonserver, all or nothing, and keep the last K loaded.

Why release names: a Triton ``config.pbtxt`` belongs to a model and is shared by all its versions, so one
ensemble cannot pin version V's steps to V and version V+1's to V+1. Each release therefore has its own
models (``click_encoder_v3``, ``ranker_v3``, the guards ``duet_fresh_guard_v3`` ..., ``duet_fresh_v3``, ...:
version directory 3, ensemble steps pinned to version 3 of the release's guards and components), and the
unversioned ensembles ``duet_upstream``, ``duet_downstream``, ``duet_fresh`` are aliases whose config is a
copy of the current release's.

A swap to release T (``swap_release``):
1. loads every model of T that is not loaded yet, components and guards before ensembles, each waited on
   until ready; nothing that serves changes;
2. re-points the three aliases to T (config rewritten, model reloaded: Triton keeps serving the old alias
   until the new one is ready, so no request fails), each checked ready at version T;
3. records T as current in ``repository.json``; releases beyond the newest ``keep_loaded`` are unloaded
   (Triton lets their in-flight requests finish first).
A failure at step 1 or 2 unloads what T loaded, points every alias back to the release that was current,
marks T "failed" in ``repository.json`` (with the error), and raises ``SwapError`` saying so.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from duet_sdk import interface as api
from duet_sdk.errors import DuetError
from duet_sdk.serving import releases
from duet_sdk.serving.server import TritonServer, TritonServerError

log = logging.getLogger(__name__)


class SwapError(TritonServerError):
    """A swap failed; ``current`` is the release still current for every model."""

    def __init__(self, message: str, target: int, current: int | None) -> None:
        self.target, self.current = target, current
        super().__init__(message)


@dataclass(frozen=True)
class SwapReport:
    """A finished swap: from and to which release, how long it took, what it loaded and unloaded."""

    previous: int | None
    current: int
    duration_s: float
    loaded: tuple[str, ...]
    unloaded: tuple[str, ...]


def _load(client, name: str, version: int, timeout_s: float) -> None:
    """``load_model(name)`` and wait until ``version`` of it is ready; TritonServerError otherwise."""
    from tritonclient.utils import InferenceServerException

    try:
        client.load_model(name)
    except InferenceServerException as exc:
        raise TritonServerError(f"loading {name} failed: {exc.message()}") from exc
    deadline = time.monotonic() + timeout_s
    while not client.is_model_ready(name, str(version)):
        if time.monotonic() > deadline:
            raise TritonServerError(f"{name} version {version} not ready after {timeout_s:.0f}s")
        time.sleep(0.05)


def _unload(client, names: list[str]) -> None:
    from tritonclient.utils import InferenceServerException

    for name in names:
        try:
            client.unload_model(name)
        except InferenceServerException as exc:  # already gone
            log.warning("unloading %s: %s", name, exc.message())


def _point_aliases(server: TritonServer, client, version: int, timeout_s: float) -> None:
    """Re-point every alias ensemble to ``version`` and wait until each serves it."""
    for ensemble in api.ENSEMBLES:
        releases.point_alias(server.repository, ensemble, version)
        _load(client, ensemble, version, timeout_s)


def swap_release(server: TritonServer, target: int, keep_loaded: int = 2, timeout_s: float = 120.0) -> SwapReport:
    """Make ``target`` current on ``server`` (see the module docstring); SwapError if it cannot be."""
    started = time.monotonic()
    repo = server.repository
    index = releases.read_index(repo)
    previous = index["current"]
    entry = releases.usable(index, target)
    newly = [] if target in index["loaded"] else releases.release_models(entry)
    with server.client() as client:
        loading = True  # a failure while loading the release's own models marks it failed
        try:
            for name in newly:
                _load(client, name, target, timeout_s)
            loading = False
            if previous != target:
                _point_aliases(server, client, target, timeout_s)
        except DuetError as exc:  # tritonserver refused a model, or a config could not be read
            _undo(server, client, newly, previous, timeout_s)
            with releases.locked_index(repo) as index:
                entry = releases.release(index, target)
                entry["error"] = str(exc)
                if loading:
                    entry["status"] = releases.FAILED
                if index["target"] == target:
                    index["target"] = previous
            raise SwapError(f"swap to release {target} failed: {exc}\n{server.log_tail(10)}\n"
                            f"release {previous} is still current for every model"
                            + (f"; release {target} is marked failed" if loading else ""), target, previous) from exc
        with releases.locked_index(repo) as index:
            loaded = [target, *(v for v in index["loaded"] if v != target)]
            index["current"], index["loaded"] = target, loaded[:keep_loaded]
            retired = loaded[keep_loaded:]
        unloaded = [n for v in retired for n in releases.release_models(releases.release(index, v))[::-1]]
        _unload(client, unloaded)  # ensembles before the components they call
    report = SwapReport(previous, target, time.monotonic() - started, tuple(newly), tuple(unloaded))
    log.info(
        "release %d current (was %s) after %.2fs; unloaded %s", target, previous, report.duration_s, retired or "none"
    )
    return report


def _undo(server: TritonServer, client, newly: list[str], previous: int | None, timeout_s: float) -> None:
    """Point the aliases back to ``previous`` and unload what the failed swap loaded."""
    if previous is not None:
        for ensemble in api.ENSEMBLES:
            releases.point_alias(server.repository, ensemble, previous)
            if not client.is_model_ready(ensemble, str(previous)):
                _load(client, ensemble, previous, timeout_s)
    _unload(client, newly[::-1])
