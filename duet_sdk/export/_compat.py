"""Availability flags and lazy imports of the optional heavy dependencies (ONNX tooling, TensorRT).

``import duet_sdk.export`` never imports them; a converter asks for what it needs with ``require_*``,
which raises ``MissingDependencyError`` naming the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from duet_sdk.errors import DuetError

EXTRAS = {"onnx": "onnx", "onnxscript": "onnx", "onnxruntime": "onnx", "tensorrt": "tensorrt"}


class MissingDependencyError(DuetError, ImportError):
    """An optional dependency a requested format needs is not installed; the message names the extra."""


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


HAS_ONNX = _importable("onnx") and _importable("onnxscript")
HAS_ONNXRUNTIME = _importable("onnxruntime")
HAS_TENSORRT = _importable("tensorrt")


def _require(name: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # a broken install (e.g. TensorRT without CUDA libraries) is missing too
        extra = EXTRAS[name]
        raise MissingDependencyError(
            f"{what} needs the Python package {name!r}, which cannot be imported here ({exc}); "
            f"install it with `pip install duet_sdk[{extra}]`"
        ) from exc


def require_onnx() -> ModuleType:
    """The ``onnx`` module (``onnxscript`` is checked too: the dynamo exporter needs it)."""
    _require("onnxscript", "ONNX export")
    return _require("onnx", "ONNX export")


def require_onnxruntime() -> ModuleType:
    return _require("onnxruntime", "running ONNX artifacts")


def require_tensorrt() -> ModuleType:
    """The ``tensorrt`` module; raises naming ``duet_sdk[tensorrt]`` where it does not import."""
    return _require("tensorrt", "the TensorRT format")


def tensorrt_unavailable_reason() -> str | None:
    """None where TensorRT imports; else why not (used by tests to skip with a stated reason)."""
    try:
        require_tensorrt()
    except MissingDependencyError as exc:
        return str(exc)
    return None
