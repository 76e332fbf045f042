"""The machine's limit: fp32 GEMM peak (GFLOP/s) with the threads the benchmarks use.

A square fp32 matrix product through torch (oneDNN/MKL on CPU) of a few sizes; the best rate over
repeats is the peak. Measured in the same run as what is compared with it, since machines vary.
"""

from __future__ import annotations

import os
import platform
import time

import torch


def cpu_flags() -> list[str]:
    """The SIMD extensions that matter for GEMM (AVX2, AVX-512 VNNI/BF16, AMX) this CPU reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
    return [f for f in wanted if f in flags]


def gemm_peak(threads: int, sizes: tuple[int, ...] = (1024, 2048), seconds: float = 1.0) -> dict:
    """Best fp32 GFLOP/s of ``A @ B`` (n x n) over ``sizes``, each run for about ``seconds``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    best = {"gflops": 0.0, "n": 0}
    try:
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            torch.mm(a, b)  # warm-up
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                torch.mm(a, b)
                done += 1
            rate = 2 * n**3 * done / (time.perf_counter() - start) / 1e9
            if rate > best["gflops"]:
                best = {"gflops": rate, "n": n}
    finally:
        torch.set_num_threads(previous)
    return best | {"threads": threads}


def describe() -> dict:
    """CPU model, core count and flags, for the report."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "flags": cpu_flags(), "torch": torch.__version__}
