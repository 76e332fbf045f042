"""Coordinate descent over the component configs of whole ensembles, on a private tritonserver.

The release under tuning is copied into a scratch repository and served by its own tritonserver (the
deployed repository is only read). A candidate is applied by reloading each changed component with a
config override (Triton's model control; the ensembles keep their steps), read back from the server
(the point records the settings the server reports, not the ones asked for), and then the *ensemble*
is loaded the way the objective says (``measure.py``). Per pipeline, each of its not yet tuned
components is walked one dimension at a time (queue delay, preferred batch sizes, instances, intra-
and inter-op threads), keeping a value when the objective improves; rounds repeat until nothing
improves or the budget is spent. A component shared by two pipelines is tuned in the first one that
calls it; the later one is measured with that choice. The budget bounds when a measurement may
start: none starts unless its shortest possible run fits (the current config of each pipeline is
always measured); it counts from the moment the scratch server is ready.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as pb

from duet_sdk import interface as api
from duet_sdk.client.client import interface_from_config
from duet_sdk.errors import DuetError
from duet_sdk.serving import releases
from duet_sdk.serving.config import read_config
from duet_sdk.serving.server import TritonServer
from duet_sdk.tune.measure import MeasureConfig, Measurement, measure_concurrency, measure_rate
from duet_sdk.tune.objective import Objective
from duet_sdk.tune.requests import ensemble_requests, infer_inputs
from duet_sdk.tune.settings import DIMENSIONS, ModelSettings, SearchSpace, apply_settings, read_settings

log = logging.getLogger(__name__)


class TuneError(DuetError):
    """The tuner could not measure, choose or publish; the message says which and why."""


@dataclass(frozen=True)
class Point:
    """One measured candidate: the settings of the pipeline's components (model -> settings) and its load."""

    pipeline: str
    settings: dict[str, ModelSettings]
    measurement: Measurement

    def to_dict(self) -> dict:
        return {"pipeline": self.pipeline, "settings": {m: dataclasses.asdict(s) for m, s in self.settings.items()},
                "measurement": self.measurement.to_dict()}


@dataclass(frozen=True)
class Request:
    """What each measured request holds: ``users`` users, ``candidates`` candidates each."""

    users: int = 1
    candidates: int = 16


def scratch_copy(repo: Path, entry: dict, into: Path) -> Path:
    """A repository holding only ``entry``'s release models (copied) and its index; returns it."""
    for name in releases.release_models(entry):
        shutil.copytree(Path(repo) / name, into / name)
    index = releases.empty_index() | {"releases": [entry], "current": entry["version"], "loaded": [entry["version"]]}
    (into / releases.INDEX).write_text(json.dumps(index), encoding="utf-8")
    return into


class PipelineTuner:
    """Tunes the components of release ``entry``'s ensembles on ``server`` (a scratch copy) for ``objective``."""

    def __init__(self, server: TritonServer, entry: dict, objective: Objective, space: SearchSpace,
                 measure: MeasureConfig, request: Request, deadline: float, max_rounds: int = 2) -> None:
        self.server, self.version = server, entry["version"]
        self.objective, self.space, self.measure_config, self.request = objective, space, measure, request
        self.deadline, self.max_rounds = deadline, max_rounds
        repo = server.repository
        self.configs = {
            m: read_config(repo / api.release_model(m, self.version) / "config.pbtxt") for m in entry["models"]
        }
        self.loaded = {m: read_settings(c) for m, c in self.configs.items()}
        with server.client() as client:
            self.interface = interface_from_config(
                client.get_model_config(api.release_model(api.UPSTREAM, self.version), as_json=True)
            )
        self.points: list[Point] = []
        self.tuned: set[str] = set()

    def components(self, pipeline: str) -> list[str]:
        """The tunable components (encoders, ranker; not guards) an ensemble calls, in step order."""
        config = read_config(self.server.repository / api.release_model(pipeline, self.version) / "config.pbtxt")
        names = [api.split_release_model(s.model_name)[0] for s in config.ensemble_scheduling.step]
        return [n for n in dict.fromkeys(names) if n in self.configs]

    def apply(self, settings: dict[str, ModelSettings]) -> dict[str, ModelSettings]:
        """Reload the components whose settings differ (model -> settings); returns the settings the server
        reports (TuneError if they differ from the ones asked for)."""
        from tritonclient.utils import InferenceServerException

        with self.server.client() as client:
            for model, wanted in settings.items():
                if self.loaded[model] == wanted:
                    continue
                name = api.release_model(model, self.version)
                override = apply_settings(self.configs[model], wanted)
                try:
                    client.load_model(
                        name, config=json_format.MessageToJson(override, preserving_proto_field_name=True)
                    )
                except InferenceServerException as exc:
                    raise TuneError(f"reloading {name} with {wanted.describe()} failed: {exc.message()}") from exc
                served = json_format.Parse(
                    json.dumps(client.get_model_config(name, as_json=True)["config"]),
                    pb.ModelConfig(),
                    ignore_unknown_fields=True,
                )
                self.loaded[model] = read_settings(served)
                if self.loaded[model] != wanted:
                    raise TuneError(
                        f"{name}: the server reports {self.loaded[model].describe()} after loading {wanted.describe()}"
                    )
            for ensemble in api.ENSEMBLES:
                name = api.release_model(ensemble, self.version)
                if not client.is_model_ready(name, str(self.version)):
                    client.load_model(name)
        return {m: self.loaded[m] for m in settings}

    def measure(self, pipeline: str, settings: dict[str, ModelSettings]) -> Point:
        """Apply ``settings`` and load ``pipeline`` as the objective says; the point is recorded."""
        served = self.apply(settings)
        requests = [
            infer_inputs(r)
            for r in ensemble_requests(self.interface, pipeline, self.request.users, self.request.candidates, n=8)
        ]
        name = api.release_model(pipeline, self.version)
        url = self.server.endpoints.grpc_url
        if self.objective.kind == "throughput":
            m = measure_concurrency(url, name, requests, self.objective.concurrency, self.measure_config)
        else:
            m = measure_rate(url, name, requests, self.objective.rate, self.measure_config)
        point = Point(pipeline, served, m)
        self.points.append(point)
        log.info(
            "%s %s: %.1f req/s p99 %.2f ms%s%s",
            pipeline,
            "; ".join(f"{k}: {v.describe()}" for k, v in served.items()),
            m.rps,
            m.p99_ms,
            "" if m.stable else " (unstable)",
            f", {m.errors} errors" if m.errors else "",
        )
        return point

    def _fits(self) -> bool:
        c = self.measure_config
        return time.monotonic() + c.warmup_s + c.stable_windows * c.window_s <= self.deadline

    def tune(self, pipeline: str) -> list[Point]:
        """Coordinate descent over ``pipeline``'s untuned components; returns its measured points."""
        models = self.components(pipeline)
        current = {m: self.loaded[m] for m in models}
        seen = {self._key(current): self.measure(pipeline, current)}
        best = seen[self._key(current)]
        todo = [m for m in models if m not in self.tuned]
        for _ in range(self.max_rounds):
            improved = False
            for model in todo:
                max_batch = self.configs[model].max_batch_size
                for dimension in DIMENSIONS:
                    for value in self.space.values(dimension, max_batch):
                        candidate = {
                            **best.settings,
                            model: dataclasses.replace(best.settings[model], **{dimension: value}),
                        }
                        if self._key(candidate) in seen:
                            continue
                        if not self._fits():
                            log.info("%s: budget spent", pipeline)
                            return self._finish(pipeline, todo, best)
                        point = seen[self._key(candidate)] = self.measure(pipeline, candidate)
                        if self.objective.key(point.measurement) > self.objective.key(best.measurement):
                            best, improved = point, True
            if not improved:
                break
        return self._finish(pipeline, todo, best)

    def _finish(self, pipeline: str, todo: Sequence[str], best: Point) -> list[Point]:
        """Leave the server on the best point's settings (so later pipelines see them); mark them tuned."""
        self.apply(best.settings)
        self.tuned.update(todo)
        return [p for p in self.points if p.pipeline == pipeline]

    @staticmethod
    def _key(settings: dict[str, ModelSettings]) -> tuple:
        return tuple(sorted(settings.items()))


def run_search(
    repo: Path,
    version: int,
    objective: Objective,
    space: SearchSpace,
    measure: MeasureConfig,
    request: Request,
    pipelines: Sequence[str],
    budget_s: float,
) -> list[Point]:
    """Serve a scratch copy of release ``version`` of ``repo`` and tune ``pipelines`` in order within
    ``budget_s``; returns every measured point."""
    entry = releases.usable(releases.read_index(repo), version)
    with tempfile.TemporaryDirectory(prefix="duet-tune-") as tmp:
        scratch = scratch_copy(Path(repo), entry, Path(tmp))
        with TritonServer(scratch, models=releases.release_models(entry)) as server:
            deadline = time.monotonic() + budget_s  # the search's budget: from a ready server on
            tuner = PipelineTuner(server, entry, objective, space, measure, request, deadline)
            for k, pipeline in enumerate(pipelines):  # the budget left is shared by the pipelines left
                tuner.deadline = time.monotonic() + (deadline - time.monotonic()) / (len(pipelines) - k)
                tuner.tune(pipeline)
            return tuner.points
