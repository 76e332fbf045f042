"""TensorRT plans of the gpu target's split encoder match the fused eager encoder within tolerance, record
their toolchain, and refuse shapes outside their profile (needs TensorRT 10.5 and a CUDA GPU)."""

import pytest
import torch

from duet_sdk.export._compat import tensorrt_unavailable_reason

REASON = tensorrt_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None or not torch.cuda.is_available(),
                                reason=REASON or "TensorRT engines need a CUDA GPU")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_of_the_split_encoder_matches_eager_within_tolerance(runs, tmp_path, precision):
    from test_convert import _serving

    from duet_sdk.export.onnx2trt import TensorRTRunError, tensorrt_runner
    from duet_sdk.export.pipeline import export_all
    from duet_sdk.export.spec import ExportSpec, ShapeSpec
    from duet_sdk.export.verify import Case, sample_inputs

    spec = ExportSpec(
        checkpoints=runs,
        target="gpu",
        formats=("onnx", "tensorrt"),
        encoders=("click",),
        ranker="click",
        precision=precision,
        shapes=ShapeSpec(opt_batch=4, max_batch=16, opt_candidates=4, max_candidates=16),
    )
    manifest = export_all(spec, tmp_path)
    plan = next(a for a in manifest["artifacts"] if a["model"] == "click_encoder" and a["format"] == "tensorrt")
    # fp32 (TF32 cleared): 1e-4 on embeddings; fp16: 1e-2. Codes exact outside near ties.
    assert plan["role"] == "engine" and plan["per_output"]["click_embedding"]["max_abs_diff"] <= (
        1e-4 if precision == "fp32" else 1e-2
    )
    assert plan["toolchain"]["gpu"] == torch.cuda.get_device_name(0) and plan["toolchain"]["tensorrt"].startswith(
        "10.5"
    )
    from duet_sdk.export.prep import split_encoder

    _, engine = split_encoder(_serving(runs, "click_encoder"))
    run = tensorrt_runner(tmp_path / plan["path"], engine.signature)
    too_big = sample_inputs(engine.signature, Case(17, "max", "mixed"))  # max_batch is 16
    with pytest.raises(TensorRTRunError, match="outside the engine's optimization profile"):
        run(too_big)
