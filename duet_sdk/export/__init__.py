"""Export of accepted checkpoints to serving artifacts (TorchScript, ONNX, TensorRT) with verification.

Steps that need no conversion (``extract``, ``signature``) are kept apart from the converters
(``torch2torchscript``, ``torch2onnx``, ``onnx2trt``); ``verify`` checks every artifact against eager
PyTorch and ``manifest`` records the results. ``duet-export`` (``cli``) drives them from a TOML spec.
For the gpu target ``prep`` splits each encoder into a prep model (int64 hashing, time features) and
an engine with int32/float32 inputs; ``toolchain`` pins TensorRT and records what built each plan.
"""


import importlib

from duet_sdk.export.signature import ModelSignature, TensorSpec, Tolerance

# These need torch (the [train] extra); they load on first access so that reading a manifest
# (``duet_sdk.export.manifest``, used by publishing) does not import torch.
_LAZY = {
    "ExtractionReport": "extract",
    "ServingModel": "extract",
    "extract_encoder": "extract",
    "extract_ranker": "extract",
    "VerificationError": "verify",
    "VerificationResult": "verify",
    "verify_artifact": "verify",
}

__all__ = [
    "ExtractionReport",
    "ModelSignature",
    "ServingModel",
    "TensorSpec",
    "Tolerance",
    "VerificationError",
    "VerificationResult",
    "extract_encoder",
    "extract_ranker",
    "verify_artifact",
]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(f"duet_sdk.export.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
