"""TensorRT engines from the ONNX artifact match eager within the fp16 tolerance (needs TensorRT + GPU)."""

import pytest
import torch

from duet_sdk.export._compat import tensorrt_unavailable_reason

REASON = tensorrt_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None or not torch.cuda.is_available(),
                                reason=REASON or "TensorRT engines need a CUDA GPU")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_matches_eager_within_tolerance(exported, runs, tmp_path, precision):
    from duet_sdk.export.onnx2trt import build_engine, tensorrt_runner
    from duet_sdk.export.verify import verify_artifact
    from test_convert import _serving

    serving = _serving(runs, "click_encoder")
    plan = build_engine(exported / "artifacts/click_encoder/onnx/model.onnx", serving.signature, tmp_path / "model.plan", precision)
    # fp16: 1e-2 on embeddings (half-precision matmuls); codes exact outside near ties (rtol 1e-2).
    result = verify_artifact(serving, tensorrt_runner(plan, serving.signature), precision, failures_dir=tmp_path)
    assert result.max_abs_diff["click_embedding"] <= (1e-4 if precision == "fp32" else 1e-2)
