"""benchmarks/gpu_check.py runs on a machine without CUDA: the CPU parity checks pass and every CUDA
part is reported as skipped with its reason (the GPU run itself needs a GPU)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="this test covers the CPU-only run; a CUDA machine runs the full script"
)
def test_gpu_check_runs_on_cpu_and_skips_the_cuda_parts_with_a_reason(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.set_num_threads(1)
    out = tmp_path / "gpu_check.json"
    assert module.main(["--max-len", "4", "2", "--max-batch", "4", "--iters", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    checks = result["checks"]
    passed = {name for name, c in checks.items() if c["status"] == "passed"}
    assert passed == {
        "click_encoder/torchscript-cpu-fp32",
        "conv_encoder/torchscript-cpu-fp32",
        "ranker/torchscript-cpu-fp32",
        "click_prep/torchscript-cpu-fp32",
        "conv_prep/torchscript-cpu-fp32",
    }
    assert checks["click_prep/torchscript-cpu-fp32"]["max_abs_diff"]["click_slots"] == 0  # exact hashing
    skipped = {name: c["reason"] for name, c in checks.items() if c["status"] == "skipped"}
    assert {"click_encoder/engine-cuda-fp16", "conv_encoder/tensorrt", "ranker/torchscript-cuda"} <= set(skipped)
    assert all("no CUDA device" in reason for reason in skipped.values())
    assert result["throughput"] == {"skipped": skipped["ranker/torchscript-cuda"]} and result["device"] is None
