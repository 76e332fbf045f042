"""The gpu target's fallback runtime: ``onnxruntime_onnx`` with the TensorRT execution accelerator.

Triton runs an ONNX engine under ONNX Runtime's TensorRT execution provider at the accelerator's
``precision_mode`` (FP32 or FP16). Where this process has that provider and a GPU, the export runs
the same ONNX artifact the same way and verifies it at that precision; elsewhere the manifest says it
is unverified and why.
"""

from __future__ import annotations

from pathlib import Path

from duet_sdk._extras import missing_extra

try:
    import torch
except ModuleNotFoundError as exc:  # the [train] extra is not installed
    raise missing_extra(exc, __name__) from exc

from duet_sdk.errors import DuetError
from duet_sdk.export import _compat
from duet_sdk.export.torch2onnx import session_runner
from duet_sdk.export.verify import Runner

PROVIDER = "TensorrtExecutionProvider"


def accelerator_precision(precision: str) -> str:
    """The TensorRT accelerator's precision for an export precision (it has FP32 and FP16 only)."""
    return "fp32" if precision == "fp32" else "fp16"


def unavailable_reason() -> str | None:
    """None where ONNX Runtime's TensorRT provider and a CUDA GPU are present here; else why not."""
    try:
        ort = _compat.require_onnxruntime()
    except _compat.MissingDependencyError as exc:
        return str(exc)
    providers = ort.get_available_providers()
    if PROVIDER not in providers:
        return f"onnxruntime {ort.__version__} here has no {PROVIDER} (providers: {', '.join(providers)})"
    if not torch.cuda.is_available():
        return "no CUDA GPU here"
    return None


def onnxruntime_tensorrt_runner(path: Path, precision: str) -> Runner:
    """Run ``path`` with ONNX Runtime's TensorRT provider at ``precision`` (fp32/fp16), CUDA for the rest."""
    ort = _compat.require_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    trt_options = {"trt_fp16_enable": precision == "fp16", "trt_max_workspace_size": str(1 << 31)}
    session = ort.InferenceSession(str(path), options, providers=[(PROVIDER, trt_options), "CUDAExecutionProvider"])
    if PROVIDER not in session.get_providers():
        raise DuetError(f"{path}: ONNX Runtime did not enable {PROVIDER} (enabled: {session.get_providers()})")
    return session_runner(session)
