"""Triton ``config.pbtxt`` files built from Triton's own protobuf messages (``model_config_pb2``).

Tensor specs come from the export manifest: ``{"name", "dtype", "shape"}`` with the batch dim first
and symbolic dims (strings) that become ``-1``. Three kinds of model config:

- ``runner_config``: the cpu target, Triton's Python backend running ONNX Runtime or TorchScript;
  inputs with symbolic non-batch dims allow ragged batching (the runner pads each batched group).
- ``platform_config``: the gpu target, ``tensorrt_plan``, ``onnxruntime_onnx`` (TensorRT accelerator)
  or ``pytorch_libtorch``; these need same-shaped requests to batch, so clients pad to buckets. A
  prep model (``role: "prep"``) runs under ``onnxruntime_onnx`` on CPU instances.
- ``ensemble_config``: ``platform: "ensemble"`` steps wiring models together by tensor name, every step
  pinned to one version (the release's), never "latest".
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from duet_sdk.errors import ConfigError
from duet_sdk.validation import require_int

DATA_TYPES = {"int64": pb.TYPE_INT64, "int32": pb.TYPE_INT32, "float32": pb.TYPE_FP32}
PLATFORMS = {"tensorrt": "tensorrt_plan", "onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch"}
FILENAMES = {"tensorrt": "model.plan", "onnx": "model.onnx", "torchscript": "model.pt"}
RUNTIMES = {"onnx": "onnxruntime", "torchscript": "torchscript"}


@dataclass(frozen=True)
class ServingPolicy:
    """How each model is scheduled and how many versions are served and kept on disk.

    ``batching``: Triton's dynamic batcher on (off: one request per execution, for comparison);
    ``max_queue_delay_us``: how long the dynamic batcher waits to fill a batch (default 0: no request
    waits for others to arrive, so a lone request pays nothing at low load, while under load the batcher
    still groups whatever queued while an instance was busy; raise it, or let ``duet-tune`` choose, for
    throughput at high load); ``preferred_batch_sizes``: batch sizes the batcher forms first (None: the
    export's optimal batch); ``instances``: model instances per device; ``threads``: runtime intra-op
    threads per cpu instance; ``inter_op_threads``: ONNX Runtime inter-op threads; ``serve_versions``: releases
    the server keeps loaded (K: the current one and K-1 before it, for pinned requests and rollback);
    ``keep_versions``: releases kept on disk (>= serve_versions; older ones are pruned at publish).
    """

    max_queue_delay_us: int = 0
    batching: bool = True
    instances: int = 1
    threads: int = 1
    inter_op_threads: int = 1
    preferred_batch_sizes: tuple[int, ...] | None = None
    serve_versions: int = 2
    keep_versions: int = 3
    warmup: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name not in ("warmup", "batching", "preferred_batch_sizes"):
                require_int(f"policy.{f.name}", getattr(self, f.name), 0 if f.name == "max_queue_delay_us" else 1)
        for size in self.preferred_batch_sizes or ():
            require_int("policy.preferred_batch_sizes[]", size, 1)
        if self.keep_versions < self.serve_versions:
            raise ConfigError("policy.keep_versions", f">= serve_versions ({self.serve_versions})", self.keep_versions)


def _dims(shape: Sequence[int | str]) -> list[int]:
    """Triton dims (batch dim dropped): symbolic dims become -1."""
    return [-1 if isinstance(d, str) else int(d) for d in shape[1:]]


def _data_type(spec: dict) -> int:
    if spec["dtype"] not in DATA_TYPES:
        raise ConfigError(f"tensor {spec['name']}.dtype", f"one of {tuple(DATA_TYPES)}", spec["dtype"])
    return DATA_TYPES[spec["dtype"]]


def model_input(spec: dict, ragged: bool = False, reshape: bool = True) -> pb.ModelInput:
    """A per-row scalar (shape ``(batch,)``) travels as ``[batch, 1]``; a model reshapes it to ``[batch]``
    (``reshape``), an ensemble passes ``[batch, 1]`` on to its models."""
    is_ragged = ragged and any(isinstance(d, str) for d in spec["shape"][1:])
    dims = _dims(spec["shape"])
    message = pb.ModelInput(
        name=spec["name"], data_type=_data_type(spec), dims=dims or [1], allow_ragged_batch=is_ragged
    )
    if not dims and reshape:
        message.reshape.SetInParent()
    return message


def model_output(spec: dict) -> pb.ModelOutput:
    dims = _dims(spec["shape"])
    message = pb.ModelOutput(name=spec["name"], data_type=_data_type(spec), dims=dims or [1])
    if not dims:
        message.reshape.SetInParent()
    return message


def _warmup(inputs: Sequence[dict]) -> pb.ModelWarmup:
    """One zero-filled batch of 1 with every symbolic dim 1 (empty histories are valid inputs)."""
    return pb.ModelWarmup(
        name="zeros_batch_1",
        batch_size=1,
        count=1,
        inputs={
            spec["name"]: pb.ModelWarmup.Input(
                data_type=_data_type(spec),
                dims=[1 if d == -1 else d for d in _dims(spec["shape"])] or [1],
                zero_data=True,
            )
            for spec in inputs
        },
    )


def _scheduled(
    name: str, record: dict, max_batch: int, policy: ServingPolicy, kind: int, ragged: bool
) -> pb.ModelConfig:
    """The parts shared by every non-ensemble model."""
    opt = record["dims"]["batch"]["opt"]
    config = pb.ModelConfig(
        name=name,
        max_batch_size=max_batch,
        input=[model_input(s, ragged) for s in record["inputs"]],
        output=[model_output(s) for s in record["outputs"]],
        instance_group=[pb.ModelInstanceGroup(kind=kind, count=policy.instances)],
    )
    if policy.batching:
        preferred = list(policy.preferred_batch_sizes if policy.preferred_batch_sizes is not None
                         else [opt] if opt < max_batch else [])
        if any(size > max_batch for size in preferred):
            raise ConfigError(f"{name} preferred_batch_sizes", f"sizes <= max_batch_size {max_batch}", list(preferred))
        config.dynamic_batching.CopyFrom(pb.ModelDynamicBatching(
            preferred_batch_size=preferred, max_queue_delay_microseconds=policy.max_queue_delay_us))
    if policy.warmup:
        config.model_warmup.append(_warmup(record["inputs"]))
    return config


def runner_config(name: str, record: dict, policy: ServingPolicy) -> pb.ModelConfig:
    """cpu target: Triton's Python backend running ``record``'s artifact (ONNX Runtime or TorchScript)."""
    if record["format"] not in RUNTIMES:
        raise ConfigError(f"{name}.format", f"one of {tuple(RUNTIMES)} for the cpu target", record["format"])
    config = _scheduled(
        name, record, record["dims"]["batch"]["max"], policy, pb.ModelInstanceGroup.KIND_CPU, ragged=True
    )
    config.backend = "python"
    for key, value in {"runtime": RUNTIMES[record["format"]], "artifact": FILENAMES[record["format"]],
                       "threads": str(policy.threads), "inter_op_threads": str(policy.inter_op_threads)}.items():
        config.parameters[key].string_value = value
    return config


def prep_config(name: str, record: dict, policy: ServingPolicy) -> pb.ModelConfig:
    """gpu target: a prep model (int64 hashing, time features) under ``onnxruntime_onnx`` on CPU instances."""
    if record["format"] != "onnx":
        raise ConfigError(f"{name}.format", "onnx for a prep model", record["format"])
    config = _scheduled(
        name, record, record["dims"]["batch"]["max"], policy, pb.ModelInstanceGroup.KIND_CPU, ragged=False
    )
    config.platform = PLATFORMS["onnx"]
    config.default_model_filename = FILENAMES["onnx"]
    return config


def platform_config(name: str, record: dict, policy: ServingPolicy, precision: str = "fp16") -> pb.ModelConfig:
    """gpu target: the artifact under its native Triton platform on GPU instances (a prep model: on CPU).

    An ONNX engine gets the TensorRT accelerator at the precision its ``fallback`` was verified at
    (``precision`` where the manifest has none)."""
    if record.get("role") == "prep":
        return prep_config(name, record, policy)
    fmt = record["format"]
    if fmt not in PLATFORMS:
        raise ConfigError(f"{name}.format", f"one of {tuple(PLATFORMS)}", fmt)
    config = _scheduled(
        name, record, record["dims"]["batch"]["max"], policy, pb.ModelInstanceGroup.KIND_GPU, ragged=False
    )
    config.platform = PLATFORMS[fmt]
    config.default_model_filename = FILENAMES[fmt]
    if fmt == "onnx":
        precision = (record.get("fallback") or {}).get("precision", precision)
        trt = pb.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator(
            name="tensorrt",
            parameters={
                "precision_mode": "FP16" if precision == "fp16" else "FP32",
                "max_workspace_size_bytes": str(1 << 31),
            },
        )
        config.optimization.execution_accelerators.gpu_execution_accelerator.append(trt)
    return config


@dataclass(frozen=True)
class Step:
    """One ensemble step: ``model`` with ``inputs``/``outputs`` maps of model tensor -> ensemble tensor."""

    model: str
    inputs: dict[str, str]
    outputs: dict[str, str]


def only_version(config: pb.ModelConfig, version: int) -> pb.ModelConfig:
    """``config`` serving exactly ``version`` (version policy ``specific``); returns it."""
    config.version_policy.CopyFrom(pb.ModelVersionPolicy(specific=pb.ModelVersionPolicy.Specific(versions=[version])))
    return config


def ensemble_config(
    name: str,
    inputs: Sequence[dict],
    outputs: Sequence[dict],
    steps: Sequence[Step],
    max_batch: int,
    version: int,
    parameters: dict[str, str] | None = None,
) -> pb.ModelConfig:
    """A native ensemble serving ``version`` whose every step uses ``version`` of its model."""
    config = pb.ModelConfig(
        name=name,
        platform="ensemble",
        max_batch_size=max_batch,
        input=[model_input(s, reshape=False) for s in inputs],
        output=[model_output(s) for s in outputs],
        ensemble_scheduling=pb.ModelEnsembling(
            step=[
                pb.ModelEnsembling.Step(
                    model_name=s.model, model_version=version, input_map=s.inputs, output_map=s.outputs
                )
                for s in steps
            ]
        ),
    )
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    return only_version(config, version)


def to_text(config: pb.ModelConfig) -> str:
    return text_format.MessageToString(config)


def write_config(directory: Path, config: pb.ModelConfig) -> Path:
    """Write ``directory/config.pbtxt`` atomically (temp file + rename)."""
    path = Path(directory) / "config.pbtxt"
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".pbtxt", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(to_text(config))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_config(path: Path) -> pb.ModelConfig:
    """Parse a ``config.pbtxt``; a malformed file raises ConfigError naming it."""
    try:
        return text_format.Parse(Path(path).read_text(encoding="utf-8"), pb.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise ConfigError(str(path), "a readable ModelConfig in protobuf text format", str(exc)) from exc
