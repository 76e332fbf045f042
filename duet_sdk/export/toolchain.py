"""Which TensorRT, CUDA and GPU a plan was built with, the release the gpu target is pinned to, and
the rule that refuses to publish a plan built elsewhere.

A TensorRT plan only deserializes under the TensorRT version it was built with and is tuned for one
GPU model, so the manifest records ``Toolchain`` for every plan and ``duet-publish --target gpu``
compares it with the publishing host's (which is, or matches, the serving host).

The gpu target runs in the NGC container ``TRITON_CONTAINER``: Triton 2.51 (the same server version
as the tritonserver that ``nvidia-pytriton`` ships for the cpu target), which carries TensorRT 10.5.
``duet_sdk[tensorrt]`` pins ``tensorrt`` to that series and ``build_engine`` refuses any other.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from duet_sdk.errors import DuetError

log = logging.getLogger(__name__)

TRITON_RELEASE = "24.10"
TRITON_CONTAINER = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
TENSORRT_SERIES = "10.5"  # TensorRT 10.5.0 in the 24.10 container; pyproject's [tensorrt] extra pins it
FIELDS = ("tensorrt", "cuda", "gpu")


class PlanToolchainError(DuetError):
    """A TensorRT plan was built with another TensorRT, CUDA or GPU than the one here (or is unrecorded)."""


@dataclass(frozen=True)
class Toolchain:
    """``tensorrt`` version, ``cuda`` version (PyTorch's build), ``gpu`` name and compute capability;
    None where absent."""

    tensorrt: str | None = None
    cuda: str | None = None
    gpu: str | None = None
    compute_capability: str | None = None

    def to_dict(self) -> dict:
        return asdict(self) | {"triton_release": TRITON_RELEASE}


def tensorrt_version() -> str | None:
    """``tensorrt.__version__`` where it imports, else None."""
    from duet_sdk.export import _compat

    try:
        return str(_compat.require_tensorrt().__version__)
    except _compat.MissingDependencyError:
        return None


def current_toolchain() -> Toolchain:
    """The toolchain of this process: TensorRT if importable, CUDA and GPU 0 if PyTorch sees one."""
    import torch

    if not torch.cuda.is_available():
        return Toolchain(tensorrt=tensorrt_version(), cuda=torch.version.cuda)
    major, minor = torch.cuda.get_device_capability(0)
    return Toolchain(tensorrt_version(), torch.version.cuda, torch.cuda.get_device_name(0), f"{major}.{minor}")


def is_pinned(version: str | None) -> bool:
    """Whether ``version`` is of the pinned TensorRT series (``TENSORRT_SERIES``)."""
    return version is not None and (version == TENSORRT_SERIES or version.startswith(TENSORRT_SERIES + "."))


def toolchain_mismatches(built: dict | None, here: Toolchain) -> list[str]:
    """What differs between a plan's recorded toolchain and ``here`` (empty: it may be published)."""
    if not built:
        return ["the manifest records no TensorRT/CUDA/GPU for it"]
    return [f"{name}: built with {built.get(name)!r}, here {getattr(here, name)!r}"
            for name in FIELDS if built.get(name) is None or built.get(name) != getattr(here, name)]


def check_plan_toolchain(model: str, record: dict, here: Toolchain, force: bool = False) -> str | None:
    """Refuse (``PlanToolchainError``) a plan built with another toolchain than ``here`` unless ``force``;
    returns the warning to record when forced, None when the toolchains agree."""
    problems = toolchain_mismatches(record.get("toolchain"), here)
    if not problems:
        return None
    message = (f"{model}: TensorRT plan {record['path']} was built elsewhere ({'; '.join(problems)}); a plan only "
               "loads under the TensorRT version and GPU it was built with")
    if not force:
        raise PlanToolchainError(f"{message}. Rebuild it on the serving GPU with duet-export, or pass --force")
    warning = f"--force: {message}"
    log.warning(warning)
    return warning


def check_plans(records: dict[str, dict], force: bool = False) -> list[str]:
    """``check_plan_toolchain`` for every TensorRT record of a publish; returns the forced warnings."""
    plans = {m: r for m, r in records.items() if r["format"] == "tensorrt"}
    here = current_toolchain() if plans else None
    return [w for m, r in plans.items() if (w := check_plan_toolchain(m, r, here, force))]
