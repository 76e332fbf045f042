"""Guards: a first, single step of every ensemble whose steps fan out in parallel (``duet_upstream``,
``duet_fresh``), which judges each request before any parallel step runs.

Why: tritonserver 2.51 leaks a request when a step of a parallel fan-out fails: the ensemble answers
the error, but the request stays counted in flight forever, so a later stop waits out its whole exit
timeout (measured: 5 refused requests held a stop for 30 s). A guard fails a bad request alone, at
the first step, where failing is clean; the parallel steps then only see requests the models are
defined on.

A guard is the cpu runner (``runner/model.py``) with runtime ``guard``: it reads every input of its
ensemble, applies the runner's checks (shapes, finite floats, code ranges, lengths, times) and
answers ``request_time_checked`` (B,), which the ensemble's first-stage steps take as their
``request_time``, so none of them starts before the guard has passed the request.
"""

from __future__ import annotations

import dataclasses

from tritonclient.grpc import model_config_pb2 as pb

from duet_sdk.serving.config import ServingPolicy, _scheduled

OUTPUT = "request_time_checked"
FORMAT = "guard"


def guard_name(ensemble: str) -> str:
    return f"{ensemble}_guard"


def guard_record(ensemble: str, inputs: list[dict], records: dict[str, dict]) -> dict:
    """A manifest-like record of the guard of ``ensemble`` with ``inputs`` (its ensemble's inputs):
    the symbolic dims and their ranges come from the models that read those inputs."""
    names = {d for spec in inputs for d in spec["shape"] if isinstance(d, str)}
    dims = {}
    for record in records.values():
        for name, rng in record["dims"].items():
            if name in names:
                dims[name] = {k: min(dims.get(name, rng)[k], rng[k]) if k == "max" else rng[k] for k in rng}
    return {"model": guard_name(ensemble), "format": FORMAT, "files": [], "inputs": inputs, "dims": dims,
            "outputs": [{"name": OUTPUT, "dtype": "int64", "shape": ["batch"]}], "source_checkpoints": []}


def guard_config(name: str, record: dict, policy: ServingPolicy) -> pb.ModelConfig:
    """The guard on Triton's Python backend; batched without queue delay (its work is a few checks)."""
    config = _scheduled(name, record, record["dims"]["batch"]["max"], dataclasses.replace(policy, max_queue_delay_us=0),
                        pb.ModelInstanceGroup.KIND_CPU, ragged=True)
    config.backend = "python"
    config.parameters["runtime"].string_value = FORMAT
    return config
