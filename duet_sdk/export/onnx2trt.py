"""TensorRT engines (Triton ``tensorrt_plan``) from the ONNX artifact with the TensorRT ONNX parser.

One optimization profile per engine: min/opt/max of every dynamic dim from the signature (the spec).
FP16/BF16 are builder flags. Before a reduced-precision build, mask fill constants at or below the
float16 range (the attention's ``masked_fill(..., torch.finfo(float32).min)``) are clamped to
-65504: they overflow to -inf in fp16, and the softmax result is the same with either constant.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from duet_sdk.errors import DuetError
from duet_sdk.export import _compat
from duet_sdk.export.signature import ModelSignature
from duet_sdk.export.verify import Runner

FP16_MIN = -65504.0


class TensorRTBuildError(DuetError):
    """The TensorRT parser or builder failed."""


def clamp_mask_constants(model, floor: float = FP16_MIN) -> int:
    """Clamp float constants below ``floor`` (initializers and Constant nodes) to ``floor``, in place.

    Returns how many tensors changed. ``model`` is an ``onnx.ModelProto`` with its data loaded.
    """
    onnx = _compat.require_onnx()
    from onnx import numpy_helper

    def clamp(tensor) -> object | None:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            return None
        array = numpy_helper.to_array(tensor)
        if array.size == 0 or array.min() >= floor or array.size > 16:  # masks fill with scalars
            return None
        return numpy_helper.from_array(np.maximum(array, np.float32(floor)).astype(np.float32), tensor.name)

    changed = 0
    for i, init in enumerate(model.graph.initializer):
        new = clamp(init)
        if new is not None:
            model.graph.initializer[i].CopyFrom(new)
            changed += 1
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and (new := clamp(attr.t)) is not None:
                    attr.t.CopyFrom(new)
                    changed += 1
    return changed


def build_engine(onnx_path: Path, signature: ModelSignature, path: Path, precision: str = "fp16",
                 workspace_bytes: int = 2 << 30) -> Path:
    """Parse ``onnx_path``, build a serialized engine with one optimization profile, write ``path``."""
    trt = _compat.require_tensorrt()
    onnx = _compat.require_onnx()
    model = onnx.load(str(onnx_path))
    if precision != "fp32":
        clamp_mask_constants(model)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString(), str(Path(onnx_path).parent)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTBuildError(f"{onnx_path}: TensorRT ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    profile = builder.create_optimization_profile()
    for spec in signature.inputs:
        shapes = [tuple(signature.dims[d][k] if isinstance(d, str) else d for d in spec.shape) for k in range(3)]
        profile.set_shape(spec.name, *shapes)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise TensorRTBuildError(f"{onnx_path}: TensorRT engine build failed ({precision})")
    path.write_bytes(bytes(engine))
    return path


def tensorrt_runner(path: Path, signature: ModelSignature) -> Runner:
    """Run a serialized engine on the GPU (torch CUDA tensors as bindings)."""
    trt = _compat.require_tensorrt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
    context = engine.create_execution_context()
    dtypes = {"float32": torch.float32, "int64": torch.int64}

    def run(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stream = torch.cuda.current_stream()
        keep = {}
        for spec in signature.inputs:
            tensor = inputs[spec.name].cuda().contiguous()
            keep[spec.name] = tensor
            context.set_input_shape(spec.name, tuple(tensor.shape))
            context.set_tensor_address(spec.name, tensor.data_ptr())
        outputs = {}
        for spec in signature.outputs:
            shape = tuple(context.get_tensor_shape(spec.name))
            outputs[spec.name] = torch.empty(shape, dtype=dtypes[spec.dtype], device="cuda")
            context.set_tensor_address(spec.name, outputs[spec.name].data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise TensorRTBuildError(f"{path}: TensorRT execution failed")
        stream.synchronize()
        return {k: v.cpu() for k, v in outputs.items()}

    return run
