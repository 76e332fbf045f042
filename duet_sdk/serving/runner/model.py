"""Triton Python-backend runner: one exported DUET model (ONNX Runtime or TorchScript) behind Triton's
dynamic batcher. Copied verbatim into each ``<repo>/<model>/<version>/`` of the cpu target; it needs
only numpy and onnxruntime (or torch), never duet_sdk.

The version directory holds the artifact and ``signature.json``: inputs/outputs with shapes whose
symbolic dims (``"batch"``, ``"click_len"``, ``"candidates"``) are given a padding side in ``pad``.
Triton hands ``execute`` the requests its dynamic batcher grouped. Requests may differ in symbolic dims
(the inputs allow ragged batching), so each group is padded to its longest request on the declared side
("left" for histories, most recent event last; "right" for candidates), run once, and every output is
cut back to each request's own rows and sizes. Padding is neutral: histories carry their lengths and
candidates are scored independently.

Every request is judged alone before it joins the group (``check_request``): shapes, then values —
finite floats, integer inputs that index a table (``range`` in the signature, e.g. SIDE codes) within
it, ``0 <= <s>_len <= T``, ``request_time`` in [0, 2**32] and every real event's time in
[0, request_time]. A request that breaks one fails alone with INVALID_ARGUMENT naming the input and
what was expected; the rest of the group runs. A dim listed in the signature's ``trim`` (dim -> its
length input; the ranker's target-attention history) may exceed its max, or be 0: a longer request is
cut to its most recent ``max`` entries (left-padded, so the last ones) and its length clamped to
``max``, which changes nothing the model computes (it reads only the most recent ``max`` events).
Should the runtime still fail a group, each of its requests is run alone, so only the one that fails
gets an (INTERNAL) error. With ``DUET_RUNNER_PROFILE`` naming a directory in tritonserver's environment,
each instance keeps its step times there (``Profile``; ``benchmarks/serving_profile.py`` reads them).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

DTYPES = {"int64": np.int64, "float32": np.float32}
TS_MAX = 2**32  # request times and event times are Unix seconds in [0, 2**32], as the client checks
PROFILE_ENV = "DUET_RUNNER_PROFILE"  # a directory: each instance keeps its step times there (``Profile``)
PROFILE_FIELDS = ("executions", "requests", "execute_ns", "checks_ns", "run_ns")


class InvalidInput(ValueError):
    """A request breaks the model's input contract; the message names the input and the expectation."""


class Profile:
    """Cumulative ``PROFILE_FIELDS`` of one instance: executions, requests, and ns spent in ``execute``, in
    its per-request checks and in the runtime's run (the rest of execute is padding, cutting and response
    tensors). Kept in a memory-mapped file ``<directory>/<model>.<pid>.prof`` (int64 each, updated in
    place) that a profiler reads at any time (``benchmarks/serving_profile.py``); only when the
    environment names ``<directory>`` in ``DUET_RUNNER_PROFILE``."""

    def __init__(self, directory: str, model: str) -> None:
        path = Path(directory) / f"{model}.{os.getpid()}.prof"
        self.counters = np.memmap(path, dtype=np.int64, mode="w+", shape=(len(PROFILE_FIELDS),))

    def add(self, requests: int, execute_ns: int, checks_ns: int, run_ns: int) -> None:
        self.counters += np.array([1, requests, execute_ns, checks_ns, run_ns], dtype=np.int64)


class OnnxRuntimeSession:
    """``run(inputs: dict[name, ndarray]) -> list[ndarray]`` in output order, via ONNX Runtime on CPU."""

    def __init__(self, path: Path, outputs: list[str], threads: int, inter_op_threads: int = 1) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = inter_op_threads
        # idle pool threads sleep instead of spinning: on a CPU shared with tritonserver, its stubs and other
        # instances, spinning took the cores the work needed (2 threads, 128 candidates, a busy 2-core
        # machine: 11.4 ms per run and 5.6 ms CPU spinning, 5.2 ms and 2.8 ms not; 1 thread 5.5 and 2.8 ms)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if inter_op_threads > 1:  # inter-op threads only run independent nodes in parallel
            options.execution_mode = onnxruntime.ExecutionMode.ORT_PARALLEL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.outputs = outputs

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.outputs, inputs)


class TorchScriptSession:
    """``run(inputs) -> list[ndarray]`` via a TorchScript module taking the inputs positionally."""

    def __init__(self, path: Path, input_names: list[str], threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.torch = torch
        self.module = torch.jit.load(str(path), map_location="cpu").eval()
        self.input_names = input_names

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self.torch.inference_mode():
            outputs = self.module(*(self.torch.from_numpy(inputs[n]) for n in self.input_names))
        return [o.numpy() for o in outputs]


def _symbolic_axes(spec: dict) -> list[tuple[int, str]]:
    """(axis, dim name) of the non-batch symbolic axes of one tensor spec."""
    return [(axis, dim) for axis, dim in enumerate(spec["shape"]) if isinstance(dim, str) and axis > 0]


def pad_to(array: np.ndarray, axis: int, size: int, side: str) -> np.ndarray:
    """Zero-pad ``array`` along ``axis`` to ``size`` on ``side`` ("left" or "right")."""
    missing = size - array.shape[axis]
    if missing <= 0:
        return array
    widths = [(0, 0)] * array.ndim
    widths[axis] = (missing, 0) if side == "left" else (0, missing)
    return np.pad(array, widths)


def cut_to(array: np.ndarray, axis: int, size: int, side: str) -> np.ndarray:
    """Undo ``pad_to``: keep ``size`` entries of ``axis`` from ``side``."""
    index = [slice(None)] * array.ndim
    index[axis] = slice(array.shape[axis] - size, None) if side == "left" else slice(0, size)
    return array[tuple(index)]


def verify_artifacts(directory: Path, signature: dict) -> None:
    """Every artifact file has the sha256 recorded at export (``signature["sha256"]``: name -> hex digest);
    a missing record, a missing file or a mismatch raises, so Triton never marks this version ready."""
    digests = signature.get("sha256")
    if not digests:
        raise RuntimeError(f"{directory}/signature.json records no sha256 of the artifact files; republish it")
    for name, want in sorted(digests.items()):
        if not (directory / name).is_file():
            raise RuntimeError(f"{directory / name}: missing; the release is incomplete")
        digest = hashlib.sha256()
        with open(directory / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != want:
            raise RuntimeError(
                f"{directory / name}: sha256 {digest.hexdigest()} differs from the recorded {want}; "
                "refusing a tampered or corrupt artifact"
            )


def invalid_argument(message: str):
    """A TritonError with gRPC status INVALID_ARGUMENT (Triton >= 23.07's Python backend)."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_values(specs: list[dict], tensors: dict[str, np.ndarray]) -> None:
    """InvalidInput unless every value of one request is one the model is defined on (see module doc).

    Args:
        specs: the signature's input specs (``name``, ``dtype``, ``shape``, optional ``range`` [lo, hi)).
        tensors: the request's inputs by name, already shape-checked; ``<s>_len`` (B,), ``<s>_ts`` (B, T).
    """
    for spec in specs:
        name, array = spec["name"], tensors[spec["name"]]
        if spec["dtype"] == "float32" and not np.isfinite(array).all():
            at = _first_bad(~np.isfinite(array))
            raise InvalidInput(f"input {name}: expected finite float32 values, got {array[at]} at {at}")
        if "range" in spec:
            lo, hi = spec["range"]
            bad = (array < lo) | (array >= hi)
            if bad.any():
                at = _first_bad(bad)
                raise InvalidInput(
                    f"input {name}: expected values in [{lo}, {hi}) (codes per level), got {array[at]} at {at}"
                )
    request_time = tensors.get("request_time")
    if request_time is not None:
        bad = (request_time < 0) | (request_time > TS_MAX)
        if bad.any():
            at = _first_bad(bad)
            raise InvalidInput(
                f"input request_time: expected Unix seconds in [0, 2**32], got {request_time[at]} at {at}"
            )
    for name, lengths in tensors.items():
        stream = name.removesuffix("_len")
        sequence = next((f"{stream}_{kind}" for kind in ("ts", "ids") if f"{stream}_{kind}" in tensors), None)
        if not name.endswith("_len") or sequence is None:
            continue
        width = tensors[sequence].shape[1]  # (B, T, ...), left-padded: the last len[b] slots are real events
        bad = (lengths < 0) | (lengths > width)
        if bad.any():
            at = _first_bad(bad)
            raise InvalidInput(
                f"input {name}: expected a length in [0, T={width}] (T = {sequence}.shape[1]), "
                f"got {lengths[at]} at {at}"
            )
        if request_time is None or f"{stream}_ts" not in tensors:
            continue
        ts = tensors[f"{stream}_ts"]  # (B, T)
        real = np.arange(width)[None, :] >= (width - lengths)[:, None]  # (B, T)
        bad = real & ((ts < 0) | (ts > request_time[:, None]))
        if bad.any():
            at = _first_bad(bad)
            raise InvalidInput(
                f"input {stream}_ts: expected event times in [0, request_time={request_time[at[0]]}], "
                f"got {ts[at]} at {at}"
            )


def trim(
    specs: list[dict], tensors: dict[str, np.ndarray], sizes: dict[str, int], limits: dict[str, tuple[str, int]]
) -> None:
    """Cut each over-long trimmed dim of one checked request to its most recent ``max`` entries, in place.

    Args:
        specs: the signature's input specs; tensors: the request's inputs; sizes: its symbolic dim sizes.
        limits: trimmed dim -> (its length input, max), e.g. ``{"history_len": ("history_len", 1000)}``.
    """
    for dim, (length, most) in limits.items():
        if sizes.get(dim, 0) <= most:
            continue
        for spec in specs:
            for axis, name in _symbolic_axes(spec):
                if name == dim:
                    tensors[spec["name"]] = np.ascontiguousarray(cut_to(tensors[spec["name"]], axis, most, "left"))
        tensors[length] = np.minimum(tensors[length], most)
        sizes[dim] = most


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        directory = Path(args["model_repository"]) / args["model_version"]
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.signature = json.loads((directory / "signature.json").read_text(encoding="utf-8"))
        self.pad = self.signature["pad"]
        self.max_dims = {name: rng["max"] for name, rng in self.signature["dims"].items()}
        self.inputs = self.signature["inputs"]
        self.outputs = self.signature["outputs"]
        self.trim = {dim: (length, self.max_dims[dim]) for dim, length in self.signature.get("trim", {}).items()}
        self.axes = {spec["name"]: _symbolic_axes(spec) for spec in (*self.inputs, *self.outputs)}  # parsed once
        threads = int(params.get("threads", "1"))
        profile = os.environ.get(PROFILE_ENV)
        self.profile = Profile(profile, args["model_name"]) if profile else None
        self.run_ns = 0  # the runtime's time in the current execute
        if params["runtime"] == "guard":  # checks only (serving/guard.py): no artifact, no session
            self.session = None
            return
        verify_artifacts(directory, self.signature)
        artifact = directory / params["artifact"]
        if params["runtime"] == "onnxruntime":
            self.session = OnnxRuntimeSession(artifact, [o["name"] for o in self.outputs], threads,
                                              int(params.get("inter_op_threads", "1")))
        else:
            self.session = TorchScriptSession(artifact, [i["name"] for i in self.inputs], threads)

    def _read(self, request) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """The request's inputs and the size of each symbolic dim in it; InvalidInput if inconsistent."""
        tensors, sizes = {}, {}
        given = {t.name(): t for t in request.inputs()}  # one pass (get_input_tensor_by_name lists them per call)
        for spec in self.inputs:
            tensor = given.get(spec["name"])
            if tensor is None:
                raise InvalidInput(f"input {spec['name']}: expected a tensor, got none")
            array = tensor.as_numpy()
            if array.ndim != len(spec["shape"]):
                raise InvalidInput(
                    f"input {spec['name']}: expected {len(spec['shape'])} dims {spec['shape']}, got shape {array.shape}"
                )
            for axis, dim in enumerate(spec["shape"]):
                size = array.shape[axis]
                if isinstance(dim, int) and size != dim:
                    raise InvalidInput(
                        f"input {spec['name']}: expected size {dim} on axis {axis}, got shape {array.shape}"
                    )
                if isinstance(dim, str):
                    if sizes.setdefault(dim, size) != size:
                        raise InvalidInput(
                            f"input {spec['name']}: expected dim {dim} = {sizes[dim]} as in the other inputs, "
                            f"got {size} (shape {array.shape})"
                        )
                    if dim in self.trim:  # any size: trimmed after the checks, an empty one padded to 1
                        continue
                    if not 1 <= size <= self.max_dims[dim]:
                        raise InvalidInput(
                            f"input {spec['name']}: expected dim {dim} in [1, {self.max_dims[dim]}], got {size}"
                        )
            tensors[spec["name"]] = np.ascontiguousarray(array, dtype=DTYPES[spec["dtype"]])
        rows = {name: a.shape[0] for name, a in tensors.items()}
        if len(set(rows.values())) > 1 or min(rows.values(), default=1) < 1:
            raise InvalidInput(f"inputs: expected the same batch size >= 1 in every input, got {rows}")
        return tensors, sizes

    def execute(self, requests: list) -> list:
        start, self.run_ns = time.perf_counter_ns(), 0
        responses, checked = self._execute(requests)
        if self.profile is not None:
            self.profile.add(len(requests), time.perf_counter_ns() - start, checked - start, self.run_ns)
        return responses

    def _execute(self, requests: list) -> tuple[list, int]:
        """The responses, and when (perf_counter_ns) every request had been checked."""
        responses: list = [None] * len(requests)
        batch: list[tuple[int, dict[str, np.ndarray], dict[str, int]]] = []
        for i, request in enumerate(requests):
            try:
                tensors, sizes = self._read(request)
                check_values(self.inputs, tensors)
                trim(self.inputs, tensors, sizes, self.trim)
                batch.append((i, tensors, sizes))
            except InvalidInput as exc:
                responses[i] = pb_utils.InferenceResponse(error=invalid_argument(str(exc)))
        checked = time.perf_counter_ns()
        if self.session is None:  # a guard: each valid request answers its checked request_time
            for i, tensors, _ in batch:
                answer = pb_utils.Tensor(self.outputs[0]["name"], tensors["request_time"])
                responses[i] = pb_utils.InferenceResponse(output_tensors=[answer])
            return responses, checked
        for i, response in self._run_isolated(batch):
            responses[i] = response
        return responses, checked

    def _run_isolated(self, batch: list) -> list:
        """``_run`` on the group; if the runtime fails it, each request alone, so only a failing one errs."""
        if not batch:
            return []
        try:
            return self._run(batch)
        except Exception as exc:  # noqa: BLE001 - the runtime's message goes back to the caller
            if len(batch) == 1:
                return [
                    (
                        batch[0][0],
                        pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")),
                    )
                ]
        return [pair for item in batch for pair in self._run_isolated([item])]

    def _run(self, batch: list) -> list:
        """Pad the group to its longest request per symbolic dim, run once, cut per request."""
        longest = {dim: max(1, *(sizes[dim] for _, _, sizes in batch)) for dim in self.pad}  # an empty history: 1 slot
        merged = {}
        for spec in self.inputs:
            parts = []
            for _, tensors, _ in batch:
                array = tensors[spec["name"]]
                for axis, dim in self.axes[spec["name"]]:
                    array = pad_to(array, axis, longest[dim], self.pad[dim])
                parts.append(array)
            merged[spec["name"]] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)  # one: no copy
        start = time.perf_counter_ns()
        results = self.session.run(merged)
        self.run_ns += time.perf_counter_ns() - start
        out, start = [], 0
        for i, tensors, sizes in batch:
            rows = next(iter(tensors.values())).shape[0]
            tensors_out = []
            for spec, result in zip(self.outputs, results):
                array = result[start : start + rows]
                for axis, dim in self.axes[spec["name"]]:
                    array = cut_to(array, axis, sizes[dim], self.pad[dim])
                tensors_out.append(
                    pb_utils.Tensor(spec["name"], np.ascontiguousarray(array, dtype=DTYPES[spec["dtype"]]))
                )
            out.append((i, pb_utils.InferenceResponse(output_tensors=tensors_out)))
            start += rows
        return out
