"""Verification of an artifact against eager PyTorch on realistic inputs.

Cases are drawn from the signature's own profile (``profile_cases``): batch sizes min, opt, max and
one between, sequence widths min, opt and max, heavy padding, empty streams and IDs never seen in
training (random int64 over the full range). A case outside the profile is refused. Checks run in
order: output names, shapes, all finite, values. A failure raises ``VerificationError`` with the max
abs/rel difference and the offending inputs saved as safetensors for reproduction.

int8 artifacts (cpu target) also pass a SIDE-code row whose codes are the exact encoding of the
artifact's own embedding, which is itself held to the int8 tolerance (``_follows_own_embedding``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from duet_sdk._extras import missing_extra

try:
    import torch
    from safetensors.torch import save_file
except ModuleNotFoundError as exc:  # the [train] extra is not installed
    raise missing_extra(exc, __name__) from exc

from duet_sdk.errors import ConfigError, DuetError
from duet_sdk.export.extract import EncoderServing, ServingModel
from duet_sdk.export.signature import TIE_RTOL, ModelSignature

Runner = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
REQUEST = 1_700_000_000


class VerificationError(DuetError):
    """An artifact disagrees with eager PyTorch. ``inputs_path`` holds the offending inputs."""

    def __init__(self, message: str, max_abs_diff: float = float("nan"), max_rel_diff: float = float("nan"),
                 inputs_path: Path | None = None, output: str | None = None) -> None:
        self.max_abs_diff, self.max_rel_diff, self.inputs_path, self.output = (
            max_abs_diff,
            max_rel_diff,
            inputs_path,
            output,
        )
        where = f"; inputs saved to {inputs_path}" if inputs_path else ""
        super().__init__(f"{message} (max abs diff {max_abs_diff:.3g}, max rel diff {max_rel_diff:.3g}){where}")


@dataclass(frozen=True)
class Case:
    """One verification batch: ``batch`` rows, every sequence dim ``width`` (``"1"`` = the profile's min,
    ``"short"``, ``"opt"``, ``"max"``), lengths drawn by ``lengths`` (``"full"``, ``"mixed"``,
    ``"heavy_padding"``, ``"empty"``)."""

    batch: int
    width: str
    lengths: str

    def __str__(self) -> str:
        return f"batch={self.batch} width={self.width} lengths={self.lengths}"


def profile_cases(signature: ModelSignature) -> tuple[Case, ...]:
    """Cases at the signature's own (min, opt, max) batch and widths, plus a batch between opt and max."""
    lo, opt, hi = signature.dims["batch"]
    between = (opt + hi) // 2
    cases = (
        Case(lo, "1", "full"),
        Case(opt, "opt", "mixed"),
        Case(hi, "max", "mixed"),
        Case(hi, "max", "heavy_padding"),
        Case(opt, "max", "empty"),
        Case(lo, "max", "full"),
        Case(between, "short", "mixed"),
    )
    return tuple(dict.fromkeys(cases))


def check_cases(signature: ModelSignature, cases: tuple[Case, ...]) -> None:
    """Every case's batch lies within the profile (an engine cannot run others); else ConfigError."""
    lo, _, hi = signature.dims["batch"]
    for case in cases:
        if not lo <= case.batch <= hi:
            raise ConfigError(
                f"{signature.model} verification case", f"batch within the profile [{lo}, {hi}]", case.batch
            )


@dataclass
class VerificationResult:
    """Parity over all cases: per output max abs/rel difference, and near-tie rows of code outputs."""

    max_abs_diff: dict[str, float] = field(default_factory=dict)
    max_rel_diff: dict[str, float] = field(default_factory=dict)
    near_ties: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    cases: int = 0

    def overall(self) -> tuple[float, float]:
        return max(self.max_abs_diff.values(), default=0.0), max(self.max_rel_diff.values(), default=0.0)


def _width(signature: ModelSignature, dim: str, width: str) -> int:
    lo, _, hi = signature.dims[dim]
    _, opt, _ = signature.dims[dim]
    return {"1": lo, "short": min(hi, max(lo, 3)), "opt": opt, "example": min(hi, max(lo, 2, 5)), "max": hi}[width]


def _lengths(rng: np.random.Generator, batch: int, width: int, mode: str) -> np.ndarray:
    if mode == "full":
        return np.full(batch, width)
    if mode == "empty":
        return np.zeros(batch, dtype=np.int64)
    if mode == "heavy_padding":
        return rng.integers(0, min(width, 2) + 1, batch)
    lengths = rng.integers(0, width + 1, batch)
    lengths[0] = width
    return lengths


def sample_inputs(signature: ModelSignature, case: Case, seed: int = 0) -> dict[str, torch.Tensor]:
    """Realistic random inputs for ``signature``: left-padded streams whose ``_len``/``_ts``/``_ids``
    agree, timestamps before ``request_time``, IDs anywhere in int64, codes in their range."""
    rng = np.random.default_rng(seed)
    sizes = {d: case.batch if d == "batch" else _width(signature, d, case.width) for d in signature.dims}
    b = case.batch
    request = REQUEST + rng.integers(0, 10**6, b)
    out: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        shape = signature.concrete_shape(spec, sizes)
        if spec.name == "request_time":
            out[spec.name] = request
        elif spec.name.endswith("_len"):
            continue  # drawn with its stream below
        elif spec.dtype == "float32":
            out[spec.name] = rng.normal(size=shape).astype(np.float32)
        elif spec.high is not None:
            out[spec.name] = rng.integers(0, spec.high, shape)
        elif spec.name.endswith("_ts"):
            ages = np.sort(rng.integers(1, 30 * 86_400, shape), axis=1)[:, ::-1]  # oldest first
            out[spec.name] = request[:, None] - ages
        else:
            out[spec.name] = rng.integers(-(2**63), 2**63 - 1, shape, dtype=np.int64, endpoint=True)
    for spec in signature.inputs:
        if spec.name.endswith("_len"):
            stream = spec.name[: -len("_len")]
            width = out[f"{stream}_ids"].shape[1]
            lengths = _lengths(rng, b, width, case.lengths)
            pad = np.arange(width)[None, :] < (width - lengths)[:, None]  # (B, T) padding in front
            out[f"{stream}_ids"][pad] = 0
            if f"{stream}_ts" in out:  # a ranker's history carries IDs only
                out[f"{stream}_ts"][pad] = 0
            out[spec.name] = lengths
    return {
        spec.name: torch.from_numpy(np.ascontiguousarray(out[spec.name])).to(spec.torch_dtype)
        for spec in signature.inputs
    }


def example_inputs(signature: ModelSignature) -> dict[str, torch.Tensor]:
    """Inputs to trace/export with: no dim of size 1 (which the exporter would specialise)."""
    return sample_inputs(signature, Case(5, "example", "mixed"), seed=12345)


def _save_inputs(inputs: dict[str, torch.Tensor], directory: Path, tag: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"failed-{tag}.safetensors"
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(path))
    return path


def _diffs(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    if got.numel() == 0:
        return 0.0, 0.0
    diff = (got.double() - want.double()).abs()
    rel = diff / want.double().abs().clamp(min=1e-6)
    return float(diff.max()), float(rel.max())


def _follows_own_embedding(module: EncoderServing, got: dict[str, torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
    """(B,) bool: rows whose codes are the eager SIDE encoding of the artifact's own embedding (up to fp32
    near ties). int8 moves embeddings by up to its tolerance, which may legally move a code past a gap
    wider than any near tie; the embedding itself is checked against its tolerance separately."""
    own = next(v for k, v in got.items() if k.endswith("_embedding")).float()  # (B, E)
    with torch.no_grad():
        expected = module.side(own)  # (B, L)
    return (expected == codes).all(1) | module.near_tie_rows(own, TIE_RTOL["fp32"])


def verify_artifact(
    serving: ServingModel,
    runner: Runner,
    precision: str = "fp32",
    cases: tuple[Case, ...] | None = None,
    failures_dir: Path = Path("."),
    tag: str = "artifact",
    seed: int = 0,
) -> VerificationResult:
    """Run ``runner`` and eager ``serving`` on every case (default: ``profile_cases``); raise
    ``VerificationError`` on a mismatch, ``ConfigError`` for a case outside the profile."""
    signature = serving.signature
    cases = profile_cases(signature) if cases is None else tuple(cases)
    check_cases(signature, cases)
    result = VerificationResult()
    for index, case in enumerate(cases):
        inputs = sample_inputs(signature, case, seed + index)
        want = serving.eager(inputs)

        def fail(
            message: str, abs_diff: float = float("nan"), rel_diff: float = float("nan"), output: str | None = None
        ):
            path = _save_inputs(inputs, Path(failures_dir), f"{tag}-case{index}")
            raise VerificationError(f"{tag}: {message} [case {case}]", abs_diff, rel_diff, path, output)

        try:
            got = runner(inputs)
        except Exception as exc:  # an artifact that cannot run these inputs fails verification
            fail(f"artifact failed to run: {type(exc).__name__}: {exc}")
        if list(got) != list(signature.output_names):
            fail(f"output names {list(got)} != declared {list(signature.output_names)}")
        for name in signature.output_names:
            g, w = got[name], want[name]
            if tuple(g.shape) != tuple(w.shape):
                fail(f"output {name}: shape {tuple(g.shape)} != eager {tuple(w.shape)}", output=name)
            if g.is_floating_point() and not bool(torch.isfinite(g).all()):
                fail(f"output {name}: non-finite values", output=name)
        for name in signature.output_names:
            g, w = got[name], want[name].to(got[name].dtype)
            tol = signature.tolerance(name, precision)
            if tol.exact:
                mismatch = (g != w).flatten(1).any(1) if g.dim() > 1 else g != w  # (B,)
                ties = torch.zeros_like(mismatch)
                if tol.tie_rtol > 0 and isinstance(serving.module, EncoderServing):
                    embedding = next(v for k, v in want.items() if k.endswith("_embedding"))
                    ties = serving.module.near_tie_rows(embedding, tol.tie_rtol)
                    if precision == "int8":
                        ties |= _follows_own_embedding(serving.module, got, g)
                bad = mismatch & ~ties
                result.near_ties[name] = result.near_ties.get(name, 0) + int((mismatch & ties).sum())
                abs_diff = float((g - w).abs().max()) if g.numel() else 0.0
                kept = (g[~ties] - w[~ties]).abs()
                result.max_abs_diff[name] = max(
                    result.max_abs_diff.get(name, 0.0), float(kept.max()) if kept.numel() else 0.0
                )
                result.max_rel_diff[name] = max(
                    result.max_rel_diff.get(name, 0.0), 0.0 if not bad.any() else float("inf")
                )
                if bad.any():
                    fail(f"output {name}: {int(bad.sum())} rows differ outside near ties", abs_diff, float("inf"), name)
            else:
                abs_diff, rel_diff = _diffs(g, w)
                result.max_abs_diff[name] = max(result.max_abs_diff.get(name, 0.0), abs_diff)
                result.max_rel_diff[name] = max(result.max_rel_diff.get(name, 0.0), rel_diff)
                if abs_diff > tol.atol:
                    fail(
                        f"output {name}: max abs diff {abs_diff:.3g} > tolerance {tol.atol:g}", abs_diff, rel_diff, name
                    )
        result.rows += case.batch
        result.cases += 1
    return result
