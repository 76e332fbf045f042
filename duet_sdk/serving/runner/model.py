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
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

DTYPES = {"int64": np.int64, "float32": np.float32}


class OnnxRuntimeSession:
    """``run(inputs: dict[name, ndarray]) -> list[ndarray]`` in output order, via ONNX Runtime on CPU."""

    def __init__(self, path: Path, outputs: list[str], threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
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
            raise RuntimeError(f"{directory / name}: sha256 {digest.hexdigest()} differs from the recorded {want}; "
                               "refusing a tampered or corrupt artifact")


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        directory = Path(args["model_repository"]) / args["model_version"]
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.signature = json.loads((directory / "signature.json").read_text(encoding="utf-8"))
        verify_artifacts(directory, self.signature)
        self.pad = self.signature["pad"]
        self.max_dims = {name: rng["max"] for name, rng in self.signature["dims"].items()}
        self.inputs = self.signature["inputs"]
        self.outputs = self.signature["outputs"]
        threads = int(params.get("threads", "1"))
        artifact = directory / params["artifact"]
        if params["runtime"] == "onnxruntime":
            self.session = OnnxRuntimeSession(artifact, [o["name"] for o in self.outputs], threads)
        else:
            self.session = TorchScriptSession(artifact, [i["name"] for i in self.inputs], threads)

    def _read(self, request) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """The request's inputs and the size of each symbolic dim in it; ValueError if inconsistent."""
        tensors, sizes = {}, {}
        for spec in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec["name"])
            if tensor is None:
                raise ValueError(f"input {spec['name']}: missing")
            array = tensor.as_numpy()
            if array.ndim != len(spec["shape"]):
                raise ValueError(f"input {spec['name']}: expected {len(spec['shape'])} dims {spec['shape']}, got shape {array.shape}")
            for axis, dim in enumerate(spec["shape"]):
                size = array.shape[axis]
                if isinstance(dim, int) and size != dim:
                    raise ValueError(f"input {spec['name']}: expected size {dim} on axis {axis}, got shape {array.shape}")
                if isinstance(dim, str):
                    if sizes.setdefault(dim, size) != size:
                        raise ValueError(f"input {spec['name']}: dim {dim} is {size} here but {sizes[dim]} in another input")
                    if not 1 <= size <= self.max_dims[dim]:
                        raise ValueError(f"input {spec['name']}: dim {dim} must be in [1, {self.max_dims[dim]}], got {size}")
            tensors[spec["name"]] = np.ascontiguousarray(array, dtype=DTYPES[spec["dtype"]])
        return tensors, sizes

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        batch: list[tuple[int, dict[str, np.ndarray], dict[str, int]]] = []
        for i, request in enumerate(requests):
            try:
                tensors, sizes = self._read(request)
                batch.append((i, tensors, sizes))
            except ValueError as exc:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
        if batch:
            try:
                for i, response in self._run(batch):
                    responses[i] = response
            except Exception as exc:  # a runtime failure fails this group only, with the runtime's message
                for i, _, _ in batch:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
        return responses

    def _run(self, batch: list) -> list:
        """Pad the group to its longest request per symbolic dim, run once, cut per request."""
        longest = {dim: max(sizes[dim] for _, _, sizes in batch) for dim in self.pad}
        merged = {}
        for spec in self.inputs:
            parts = []
            for _, tensors, _ in batch:
                array = tensors[spec["name"]]
                for axis, dim in _symbolic_axes(spec):
                    array = pad_to(array, axis, longest[dim], self.pad[dim])
                parts.append(array)
            merged[spec["name"]] = np.concatenate(parts, axis=0)
        results = self.session.run(merged)
        out, start = [], 0
        for i, tensors, sizes in batch:
            rows = next(iter(tensors.values())).shape[0]
            tensors_out = []
            for spec, result in zip(self.outputs, results):
                array = result[start:start + rows]
                for axis, dim in _symbolic_axes(spec):
                    array = cut_to(array, axis, sizes[dim], self.pad[dim])
                tensors_out.append(pb_utils.Tensor(spec["name"], np.ascontiguousarray(array, dtype=DTYPES[spec["dtype"]])))
            out.append((i, pb_utils.InferenceResponse(output_tensors=tensors_out)))
            start += rows
        return out
