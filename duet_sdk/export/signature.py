"""Each exported model declares its interface once: ordered inputs, outputs, dynamic dims, tolerances.

Shapes hold ints (static) or dim names (symbolic, e.g. ``"batch"``, ``"click_len"``); ``dims`` gives each
symbolic dim its (min, opt, max) sizes, which become ``torch.export`` Dims and TensorRT profiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from duet_sdk.errors import ConfigError

if TYPE_CHECKING:  # torch is imported only where a torch dtype or Dim is asked for (publishing needs neither)
    import torch

DTYPES = ("int64", "int32", "float32")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output. ``high`` bounds integer inputs that index a table (codes): [0, high)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    high: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"TensorSpec({self.name}).dtype", f"one of {tuple(DTYPES)}", self.dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)

    def to_dict(self) -> dict:
        out = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.high is not None:
            out["range"] = [0, self.high]
        return out


@dataclass(frozen=True)
class Tolerance:
    """How an output is compared with eager: ``atol`` on values, or exact (int codes).

    For exact outputs ``tie_rtol`` is the relative gap between the best and second-best codeword distance
    under which a row counts as a near tie (float rounding may then legally pick the other codeword).
    """

    atol: float = 0.0
    exact: bool = False
    tie_rtol: float = 0.0

    def to_dict(self) -> dict:
        return {"exact": True, "near_tie_rtol": self.tie_rtol} if self.exact else {"atol": self.atol}


# fp32: same ops, different kernels -> ~1e-6 observed; stated bounds leave headroom.
# int8 (ONNX Runtime dynamic quantization of the weight MatMuls, 7-bit weights) resolves about as finely
# as bf16 (8-bit mantissa), so it gets bf16's bounds: embeddings of |x| ~ 1.5 differ by ~1e-2 observed,
# the trained demo ranker's probabilities by up to 2.6e-2 on the verification cases (random IDs, B = 64,
# 128 candidates). A SIDE code may flip with the embedding: verify also accepts codes that are the exact
# encoding of the artifact's own (in-tolerance) embedding. What int8 costs in NE is measured on
# validation data (benchmarks/precision.py).
EMBEDDING_ATOL = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2, "int8": 5e-2}
PROBABILITY_ATOL = {"fp32": 1e-5, "fp16": 1e-2, "bf16": 5e-2, "int8": 5e-2}
# Relative distance gap of a near tie in SIDE encoding; wider at reduced precision.
TIE_RTOL = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2, "int8": 5e-2}
# Prep-model time features (|x| <= 5): sin/cos of phases up to ~400 rad, where one float32 ulp is 3e-5;
# ONNX Runtime's and PyTorch's kernels differ by ~1e-5 observed.
FEATURE_ATOL = 1e-4


@dataclass(frozen=True)
class ModelSignature:
    """The serving interface of one model: positional inputs in order, outputs in order, dynamic dims."""

    model: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: dict[str, tuple[int, int, int]]  # name -> (min, opt, max)
    # output name -> "embedding" | "probability" | "codes" | "index" (exact) | "feature" (prep floats)
    kinds: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise ConfigError(f"ModelSignature({self.model})", "unique input and output names", names)
        for spec in (*self.inputs, *self.outputs):
            for dim in spec.shape:
                if isinstance(dim, str) and dim not in self.dims:
                    raise ConfigError(f"ModelSignature({self.model}).dims", f"a range for dim {dim!r}", self.dims)
        for name, (lo, opt, hi) in self.dims.items():
            if not 1 <= lo <= opt <= hi:
                raise ConfigError(f"ModelSignature({self.model}).dims.{name}", "1 <= min <= opt <= max", (lo, opt, hi))

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def tolerance(self, output: str, precision: str = "fp32") -> Tolerance:
        kind = self.kinds.get(output, "embedding")
        if kind == "codes":
            return Tolerance(exact=True, tie_rtol=TIE_RTOL[precision])
        if kind == "index":
            return Tolerance(exact=True)
        if kind == "feature":
            return Tolerance(atol=FEATURE_ATOL)
        return Tolerance(atol=(PROBABILITY_ATOL if kind == "probability" else EMBEDDING_ATOL)[precision])

    def dynamic_shapes(self) -> tuple[dict[int, torch.export.Dim], ...]:
        """Per input, ``{axis: Dim}`` for ``torch.export`` (one Dim object per dim name, shared)."""
        import torch

        dims = {name: torch.export.Dim(name, min=lo, max=max(hi, 2)) for name, (lo, _, hi) in self.dims.items()}
        return tuple({i: dims[d] for i, d in enumerate(t.shape) if isinstance(d, str)} for t in self.inputs)

    def concrete_shape(self, spec: TensorSpec, sizes: dict[str, int]) -> tuple[int, ...]:
        return tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape)

    def to_dict(self) -> dict:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "dims": {k: {"min": v[0], "opt": v[1], "max": v[2]} for k, v in self.dims.items()},
        }
