"""Availability flags and lazy imports of the optional heavy dependencies (ONNX tooling, TensorRT).

``import duet_sdk.export`` never imports them; a converter asks for what it needs with ``require_*``,
which raises ``MissingDependencyError`` naming the extra to install.
"""

from __future__ import annotations

from types import ModuleType

from duet_sdk._extras import MissingDependencyError, importable, require

__all__ = ["HAS_ONNX", "HAS_ONNXRUNTIME", "HAS_TENSORRT", "MissingDependencyError"]

HAS_ONNX = importable("onnx") and importable("onnxscript")
HAS_ONNXRUNTIME = importable("onnxruntime")
HAS_TENSORRT = importable("tensorrt")


def require_onnx() -> ModuleType:
    """The ``onnx`` module (``onnxscript`` is checked too: the dynamo exporter needs it)."""
    require("onnxscript", "ONNX export")
    return require("onnx", "ONNX export")


def require_onnxruntime() -> ModuleType:
    return require("onnxruntime", "running ONNX artifacts")


def require_tensorrt() -> ModuleType:
    """The ``tensorrt`` module; raises naming ``duet_sdk[tensorrt]`` where it does not import."""
    return require("tensorrt", "the TensorRT format")


def tensorrt_unavailable_reason() -> str | None:
    """None where TensorRT imports; else why not (used by tests to skip with a stated reason)."""
    try:
        require_tensorrt()
    except MissingDependencyError as exc:
        return str(exc)
    return None
