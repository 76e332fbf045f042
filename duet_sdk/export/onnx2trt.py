"""TensorRT engines (Triton ``tensorrt_plan``) from the ONNX artifact with the TensorRT ONNX parser.

One optimization profile per engine: min/opt/max of every dynamic dim from the signature (the spec).
Only the pinned TensorRT series (``toolchain.TENSORRT_SERIES``, the gpu target's Triton container)
builds. Precision uses that release's API: TF32 is cleared for every engine (an "fp32" engine is
true fp32), and FP16/BF16 are ``BuilderFlag``s (deprecated only from TensorRT 10.12, removed in 11,
where strongly typed networks replace them). Before a reduced-precision build, mask fill constants at
or below the float16 range (the attention's ``masked_fill(..., torch.finfo(float32).min)``) are
clamped to -65504: they overflow to -inf in fp16, and the softmax result is the same with either.
The gpu target's engines take int32 indices and bounded float32 features (``duet_sdk.export.prep``):
no int64 arithmetic and no time value outside the fp16 range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from duet_sdk._extras import missing_extra

try:
    import torch
except ModuleNotFoundError as exc:  # the [train] extra is not installed
    raise missing_extra(exc, __name__) from exc

from duet_sdk.errors import DuetError
from duet_sdk.export import _compat
from duet_sdk.export.signature import ModelSignature
from duet_sdk.export.toolchain import TENSORRT_SERIES, TRITON_CONTAINER, is_pinned
from duet_sdk.export.verify import Runner

FP16_MIN = -65504.0
PRECISION_FLAGS = {"fp32": None, "fp16": "FP16", "bf16": "BF16"}


class TensorRTBuildError(DuetError):
    """The TensorRT parser or builder failed, or the installed TensorRT is not the pinned series."""


class TensorRTRunError(DuetError):
    """An engine refused an input shape or failed to execute."""


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


def profile_shapes(signature: ModelSignature) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Per input, its (min, opt, max) shape from the signature's dims."""
    return {
        spec.name: tuple(tuple(signature.dims[d][k] if isinstance(d, str) else d for d in spec.shape) for k in range(3))
        for spec in signature.inputs
    }


def configure_precision(trt, config, precision: str) -> None:
    """TF32 off for every engine; FP16/BF16 via the pinned release's builder flags."""
    if precision not in PRECISION_FLAGS:
        raise TensorRTBuildError(f"precision {precision!r}: expected one of {tuple(PRECISION_FLAGS)}")
    config.clear_flag(trt.BuilderFlag.TF32)
    flag = PRECISION_FLAGS[precision]
    if flag is not None:
        if not hasattr(trt.BuilderFlag, flag):
            raise TensorRTBuildError(
                f"TensorRT {trt.__version__} has no BuilderFlag.{flag}; install the pinned "
                f"TensorRT {TENSORRT_SERIES} (pip install duet_sdk[tensorrt])"
            )
        config.set_flag(getattr(trt.BuilderFlag, flag))


def build_engine(
    onnx_path: Path, signature: ModelSignature, path: Path, precision: str = "fp16", workspace_bytes: int = 2 << 30
) -> Path:
    """Parse ``onnx_path``, build a serialized engine with one optimization profile, write ``path``."""
    trt = _compat.require_tensorrt()
    onnx = _compat.require_onnx()
    if not is_pinned(trt.__version__):
        raise TensorRTBuildError(
            f"TensorRT {trt.__version__} is installed, but plans must be built with TensorRT "
            f"{TENSORRT_SERIES}.x, the version in {TRITON_CONTAINER} that serves them "
            "(pip install duet_sdk[tensorrt])"
        )
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
    configure_precision(trt, config, precision)
    profile = builder.create_optimization_profile()
    for name, shapes in profile_shapes(signature).items():
        profile.set_shape(name, *shapes)
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
    if engine is None:
        raise TensorRTRunError(
            f"{path}: TensorRT {trt.__version__} cannot deserialize this plan (built with another "
            "TensorRT version or for another GPU?)"
        )
    context = engine.create_execution_context()

    def run(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keep = {}
        for spec in signature.inputs:
            shape = tuple(inputs[spec.name].shape)
            if not context.set_input_shape(spec.name, shape):  # False: outside the profile, nothing is run
                raise TensorRTRunError(
                    f"{path}: input {spec.name} shape {shape} is outside the engine's "
                    f"optimization profile {profile_shapes(signature)[spec.name]}"
                )
            tensor = inputs[spec.name].to(device="cuda", dtype=spec.torch_dtype).contiguous()
            keep[spec.name] = tensor
            context.set_tensor_address(spec.name, tensor.data_ptr())
        stream = torch.cuda.current_stream()
        outputs = {}
        for spec in signature.outputs:
            shape = tuple(context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise TensorRTRunError(f"{path}: output {spec.name} shape {shape} is unresolved")
            outputs[spec.name] = torch.empty(shape, dtype=spec.torch_dtype, device="cuda")
            context.set_tensor_address(spec.name, outputs[spec.name].data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise TensorRTRunError(f"{path}: TensorRT execution failed")
        stream.synchronize()
        return {k: v.cpu() for k, v in outputs.items()}

    return run
