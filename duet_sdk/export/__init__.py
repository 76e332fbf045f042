"""Export of accepted checkpoints to serving artifacts (TorchScript, ONNX, TensorRT) with verification.

Steps that need no conversion (``extract``, ``signature``) are kept apart from the converters
(``torch2torchscript``, ``torch2onnx``, ``onnx2trt``); ``verify`` checks every artifact against eager
PyTorch and ``manifest`` records the results. ``duet-export`` (``cli``) drives them from a TOML spec.
For the gpu target ``prep`` splits each encoder into a prep model (int64 hashing, time features) and
an engine with int32/float32 inputs; ``toolchain`` pins TensorRT and records what built each plan.
"""

from duet_sdk.export.extract import ExtractionReport, ServingModel, extract_encoder, extract_ranker
from duet_sdk.export.signature import ModelSignature, TensorSpec, Tolerance
from duet_sdk.export.verify import VerificationError, VerificationResult, verify_artifact

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
