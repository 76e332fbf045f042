"""Export specs: TOML files (``export/cpu.toml``, ``export/gpu.toml``) and CLI flags -> ``ExportSpec``.

Example::

    target = "cpu"                     # "gpu": encoders split into prep + engine (duet_sdk.export.prep)
    checkpoints = "runs/demo"          # a duet-train output directory
    formats = ["torchscript", "onnx"]
    encoders = ["click", "conv"]
    ranker = "duet"                    # ranker variant; "" exports no ranker
    precision = "fp32"                 # cpu: fp32 or int8 (ONNX only); gpu (TensorRT): fp32, fp16 or bf16

    [shapes]                           # min is 1; opt/max become TensorRT optimization profiles
    opt_batch = 16
    max_batch = 64
    opt_candidates = 32
    max_candidates = 128

Precision by target (``TARGET_PRECISIONS``): the cpu target serves ONNX Runtime's CPU execution provider
(and TorchScript), so it takes fp32 or int8; int8 quantizes the ONNX artifacts' weight MatMuls
(``duet_sdk.export.onnx2int8``) and needs ``formats = ["onnx"]`` (a TorchScript artifact beside it would
be fp32 under an int8 spec). bf16 and fp16 are refused for cpu with the reason (``CPU_REFUSED``): the
CPU provider has no bfloat16 MatMul/Gemm kernel, so a bf16 graph fails to load. The gpu target takes
TensorRT's fp32, fp16 or bf16; int8 there would need calibration, which is not provided.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from duet_sdk.errors import ConfigError
from duet_sdk.export.signature import PRECISIONS
from duet_sdk.validation import require_int

FORMATS = ("torchscript", "onnx", "tensorrt")
TARGETS = ("cpu", "gpu")
ENCODERS = ("click", "conv")
TARGET_PRECISIONS = {"cpu": ("fp32", "int8"), "gpu": ("fp32", "fp16", "bf16")}
CPU_REFUSED = {  # why a precision is not offered on the cpu target (checked by tests/export/test_precision_spec.py)
    "bf16": "ONNX Runtime's CPU execution provider has no bfloat16 MatMul/Gemm kernel and no fp32 fallback for it: "
            "the session fails to load with NOT_IMPLEMENTED (microsoft/onnxruntime#20630)",
    "fp16": "fp16 is a TensorRT builder precision; the cpu target has no fp16 export path",
}


@dataclass(frozen=True)
class ShapeSpec:
    """Dynamic-dim sizes: batch (users) and candidates per user; sequence dims come from the schema."""

    opt_batch: int = 16
    max_batch: int = 64
    opt_candidates: int = 32
    max_candidates: int = 128

    def __post_init__(self) -> None:
        for f in fields(self):
            require_int(f"shapes.{f.name}", getattr(self, f.name), 1)
        if self.opt_batch > self.max_batch:
            raise ConfigError("shapes.opt_batch", f"<= max_batch ({self.max_batch})", self.opt_batch)
        if self.opt_candidates > self.max_candidates:
            raise ConfigError(
                "shapes.opt_candidates", f"<= max_candidates ({self.max_candidates})", self.opt_candidates
            )


@dataclass(frozen=True)
class ExportSpec:
    """What to export from which training output, in which formats. See the module docstring."""

    checkpoints: Path
    target: str = "cpu"
    formats: tuple[str, ...] = ("torchscript", "onnx")
    encoders: tuple[str, ...] = ENCODERS
    ranker: str | None = "duet"
    precision: str = "fp32"
    shapes: ShapeSpec = field(default_factory=ShapeSpec)
    opset: int | None = None
    workspace_mib: int = 2048

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoints", Path(self.checkpoints))
        object.__setattr__(self, "formats", tuple(self.formats))
        object.__setattr__(self, "encoders", tuple(self.encoders))
        if self.target not in TARGETS:
            raise ConfigError("target", f"one of {TARGETS}", self.target)
        if (
            not self.formats
            or any(f not in FORMATS for f in self.formats)
            or len(set(self.formats)) != len(self.formats)
        ):
            raise ConfigError("formats", f"a non-empty list of distinct {FORMATS}", self.formats)
        if "tensorrt" in self.formats and self.target != "gpu":
            raise ConfigError(
                "formats", 'tensorrt only with target = "gpu" (its engines take no int64 arithmetic)', self.formats
            )
        if any(e not in ENCODERS for e in self.encoders) or len(set(self.encoders)) != len(self.encoders):
            raise ConfigError("encoders", f"distinct names from {ENCODERS}", self.encoders)
        if self.ranker == "":
            object.__setattr__(self, "ranker", None)
        if self.ranker is not None and not isinstance(self.ranker, str):
            raise ConfigError("ranker", "a ranker variant name or empty", self.ranker)
        if not self.encoders and self.ranker is None:
            raise ConfigError("encoders", "at least one encoder or a ranker to export", self.encoders)
        self._check_precision()
        if self.opset is not None:
            require_int("opset", self.opset, 18)
        require_int("workspace_mib", self.workspace_mib, 1)
        if not isinstance(self.shapes, ShapeSpec):
            raise ConfigError("shapes", "a [shapes] table", self.shapes)

    def _check_precision(self) -> None:
        """ConfigError naming ``precision`` unless the target runs it (see the module docstring)."""
        allowed = TARGET_PRECISIONS[self.target]
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"one of {allowed} for target {self.target!r}", self.precision)
        if self.target == "cpu" and self.precision in CPU_REFUSED:
            raise ConfigError("precision", f"one of {allowed} for target 'cpu' ({self.precision}: "
                                           f"{CPU_REFUSED[self.precision]})", self.precision)
        if self.precision not in allowed:
            raise ConfigError("precision", f"one of {allowed} for target {self.target!r} (int8 is ONNX Runtime "
                                           "dynamic quantization, a cpu-target precision)", self.precision)
        if self.precision == "int8" and self.formats != ("onnx",):
            raise ConfigError("formats", '["onnx"] with precision = "int8" (int8 quantizes ONNX artifacts only; '
                                         "a TorchScript artifact would be fp32)", self.formats)

    @classmethod
    def from_dict(cls, data: dict, base: Path = Path(".")) -> ExportSpec:
        """From a parsed TOML table; a relative ``checkpoints`` is taken relative to ``base``."""
        data = dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError("spec", f"keys from {sorted(known)}", unknown)
        if "checkpoints" not in data:
            raise ConfigError("checkpoints", "the duet-train output directory", None)
        shapes = data.pop("shapes", {})
        if not isinstance(shapes, dict):
            raise ConfigError("shapes", "a table", shapes)
        shape_keys = {f.name for f in fields(ShapeSpec)}
        if set(shapes) - shape_keys:
            raise ConfigError("shapes", f"keys from {sorted(shape_keys)}", sorted(set(shapes) - shape_keys))
        checkpoints = Path(data.pop("checkpoints"))
        return cls(
            checkpoints=checkpoints if checkpoints.is_absolute() else base / checkpoints,
            shapes=ShapeSpec(**shapes),
            **data,
        )

    @classmethod
    def from_toml(cls, path: Path, base: Path | None = None) -> ExportSpec:
        """Read a spec file; ``checkpoints`` is relative to ``base`` (default: the working directory)."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("spec", f"a readable TOML file at {path}", str(exc)) from exc
        return cls.from_dict(data, Path(".") if base is None else base)

    def with_overrides(self, **overrides: object) -> ExportSpec:
        """A copy with the non-None ``overrides`` (CLI flags) applied and validated."""
        values = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **values)
