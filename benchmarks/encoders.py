"""Encoder throughput in eager PyTorch, TorchScript and ONNX Runtime (fp32 and int8), against the GEMM peak.

FLOPs are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` records every matrix
product (mm, addmm, bmm, scaled-dot-product attention) of one eager forward at full history length,
2 FLOPs per multiply-add; element-wise work, gathers and norms are not counted, so % of peak is a
slight under-statement of the work done. Weights are random (speed does not depend on them).

int8 is what ``duet-export`` ships for ``precision = "int8"`` (``duet_sdk.export.onnx2int8``): ONNX Runtime
dynamic quantization of the weight ``MatMul`` nodes only (7-bit per-channel weights, uint8 activations per
call), so the hashed embedding tables stay fp32 (``quantize_dynamic`` would quantize Gather too).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.export.extract import ServingModel, extract_encoder
from duet_sdk.export.onnx2int8 import quantize_int8
from duet_sdk.export.torch2onnx import export_onnx, onnxruntime_runner
from duet_sdk.export.torch2torchscript import export_torchscript, torchscript_runner
from duet_sdk.export.verify import Case, example_inputs, sample_inputs
from duet_sdk.models.upstream import UpstreamNet
from duet_sdk.side.codec import SideCodec
from duet_sdk.side.config import SideConfig
from duet_sdk.training.presets import upstream_config


@dataclass(frozen=True)
class Shape:
    """A named encoder shape: preset and history lengths (click, conv)."""

    name: str
    preset: str
    click_len: int
    conv_len: int


DEMO = Shape("demo", "demo", 32, 8)
PRODUCTION = Shape("default", "default", 256, 64)


def build(kind: str, shape: Shape, seed: int = 0, **overrides) -> ServingModel:
    """A random-weight ``kind`` encoder at ``shape`` with a random 4 x 256 SIDE codec fused."""
    torch.manual_seed(seed)
    schema = SyntheticConfig(max_click_len=shape.click_len, max_conv_len=shape.conv_len).schema()
    config = upstream_config(kind, schema, shape.preset)
    config = replace(config, **overrides) if overrides else config
    net = UpstreamNet(config).eval()
    codec = SideCodec(SideConfig(), torch.randn(4, 256, config.embedding_dim))
    return extract_encoder(net, codec, kind)


def full_inputs(serving: ServingModel, batch: int) -> dict[str, torch.Tensor]:
    """``batch`` users with every stream at its maximum length (production-like, no padding)."""
    return sample_inputs(serving.signature, Case(batch, "max", "full"), seed=batch)


def flops_per_user(serving: ServingModel) -> float:
    """Counted matrix-product FLOPs of one user at full length (batch 4, divided by 4)."""
    inputs = full_inputs(serving, 4)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        serving.eager(inputs)
    return counter.get_total_flops() / 4


def time_call(call: Callable[[], object], min_seconds: float, repeats: int = 5) -> float:
    """Median seconds of one ``call`` over ``repeats`` windows of at least ``min_seconds`` / repeats."""
    call()  # warm-up
    per_window = max(min_seconds / repeats, 1e-3)
    times = []
    for _ in range(repeats):
        done, start = 0, time.perf_counter()
        while done == 0 or time.perf_counter() - start < per_window:
            call()
            done += 1
        times.append((time.perf_counter() - start) / done)
    return statistics.median(times)


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def measure_encoder(kind: str, shape: Shape, batches: tuple[int, ...], threads: int, min_seconds: float,
                    peak_gflops: float, workdir: Path, int8: bool = True, runtimes: tuple[str, ...] | None = None,
                    **overrides) -> list[dict]:
    """Rows ``{encoder, shape, runtime, batch, users_per_s, gflops, pct_peak, ...}`` for each runtime (all, or
    those of ``runtimes``) and batch."""
    serving = build(kind, shape, **overrides)
    flops = flops_per_user(serving)
    example = example_inputs(serving.signature)
    directory = Path(tempfile.mkdtemp(prefix=f"{kind}-{shape.name}-", dir=workdir))
    onnx_path = export_onnx(serving, example, directory / "model.onnx")
    wanted = ("eager", "torchscript", "ort", *(("ort_int8",) if int8 else ())) if runtimes is None else runtimes
    runners = {"eager": serving.eager} if "eager" in wanted else {}
    if "torchscript" in wanted:
        runners["torchscript"] = torchscript_runner(
            export_torchscript(serving, example, directory / "model.pt"), serving.signature
        )
    runners["ort"] = onnxruntime_runner(onnx_path, threads)
    if "ort_int8" in wanted:
        runners["ort_int8"] = onnxruntime_runner(quantize_int8(onnx_path, directory / "model.int8.onnx"), threads)
    torch.set_num_threads(threads)
    rows = []
    for batch in batches:
        inputs = full_inputs(serving, batch)
        reference = serving.eager(inputs)
        for runtime, run in runners.items():
            seconds = time_call(lambda run=run: run(inputs), min_seconds)
            outputs = run(inputs)
            embedding = f"{kind}_embedding"
            rows.append(
                {
                    "encoder": kind,
                    "shape": shape.name,
                    "runtime": runtime,
                    "batch": batch,
                    "flops_per_user": flops,
                    "ms_per_call": seconds * 1e3,
                    "users_per_s": batch / seconds,
                    "gflops": flops * batch / seconds / 1e9,
                    "pct_peak": 100 * flops * batch / seconds / 1e9 / peak_gflops,
                    "max_abs_embedding": _max_abs(outputs[embedding], reference[embedding]),
                    "codes_equal": float(
                        (outputs[f"{kind}_codes"] == reference[f"{kind}_codes"]).all(1).float().mean()
                    ),
                    **{k: str(v) for k, v in overrides.items()},
                }
            )
    return rows
