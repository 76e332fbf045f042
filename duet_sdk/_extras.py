"""Which pip extra provides each optional dependency, and a typed error naming it when it is missing.

The base install (``pip install duet_sdk``) is the client: numpy and tritonclient. Each part that needs
more checks for it where it is imported, e.g. ``duet_sdk.training`` calls
``require_modules("duet_sdk.training", "torch", ...)`` first, so that a missing package is reported as
``MissingDependencyError: duet_sdk.training needs torch: pip install 'duet_sdk[train]'`` instead of a bare
``ModuleNotFoundError`` from deep inside an import chain.

>>> redis = require("redis", "a Redis store")  # the module, or MissingDependencyError naming [online]
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from duet_sdk.errors import DuetError

# import name -> the extra that installs it (pyproject.toml [project.optional-dependencies])
EXTRA_OF = {
    "torch": "train",
    "safetensors": "train",
    "sklearn": "train",
    "matplotlib": "train",
    "tqdm": "train",
    "pyarrow": "train",
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "export",
    "redis": "online",
    "prometheus_client": "online",
    "pytriton": "serve",
    "tensorrt": "tensorrt",
}


class MissingDependencyError(DuetError, ModuleNotFoundError):
    """An optional dependency of the requested part is not installed; the message names the extra.

    A ``ModuleNotFoundError`` (so ``except ImportError`` keeps working) and a ``DuetError``."""


def install_hint(module: str) -> str:
    """``pip install 'duet_sdk[<extra>]'`` for an optional dependency's import name."""
    return f"pip install 'duet_sdk[{EXTRA_OF[module]}]'"


def importable(module: str) -> bool:
    """Whether ``module`` can be found (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_modules(part: str, *modules: str) -> None:
    """Raise MissingDependencyError naming the extra(s) unless every one of ``modules`` can be found."""
    missing = [m for m in modules if not importable(m)]
    if missing:
        extras = sorted({EXTRA_OF[m] for m in missing})
        raise MissingDependencyError(
            f"{part} needs {', '.join(missing)} (not installed); "
            f"pip install 'duet_sdk[{','.join(extras)}]'",
            name=missing[0],
        )


def missing_extra(exc: ModuleNotFoundError, part: str) -> ModuleNotFoundError:
    """The error to raise for a failed top-level import in ``part``; names the extra where it is known.

    Use at an import site::

        try:
            import torch
        except ModuleNotFoundError as exc:
            raise missing_extra(exc, __name__) from exc
    """
    top = (exc.name or "").split(".")[0]
    if top not in EXTRA_OF:  # not an optional dependency: keep the original message
        return ModuleNotFoundError(str(exc), name=exc.name)
    return MissingDependencyError(f"{part} needs {top}, which is not installed; {install_hint(top)}", name=exc.name)


def require(module: str, what: str) -> ModuleType:
    """Import ``module``; MissingDependencyError naming its extra where it does not import.

    A broken install (e.g. TensorRT without its CUDA libraries) counts as missing too."""
    try:
        return importlib.import_module(module)
    except Exception as exc:
        raise MissingDependencyError(
            f"{what} needs the Python package {module!r}, which cannot be imported here ({exc}); "
            f"{install_hint(module)}",
            name=module,
        ) from exc
