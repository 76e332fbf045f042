"""TensorRT plans record their toolchain; publishing one built elsewhere is refused without --force;
engine precision flags (TF32 cleared for fp32) and the pinned TensorRT series. TensorRT itself is not
installed here: the builder config and module are small stand-ins recording the calls (unit tests)."""

from types import SimpleNamespace

import pytest

from duet_sdk.export import _compat
from duet_sdk.export.manifest import ArtifactRecord
from duet_sdk.export.signature import ModelSignature, TensorSpec
from duet_sdk.export.toolchain import (
    TENSORRT_SERIES,
    TRITON_CONTAINER,
    PlanToolchainError,
    Toolchain,
    check_plan_toolchain,
    current_toolchain,
    is_pinned,
)

BUILT = {"tensorrt": "10.5.0.18", "cuda": "12.6", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
PLAN = {"path": "artifacts/ranker/tensorrt/model.plan", "format": "tensorrt", "toolchain": BUILT}


def test_a_plan_publishes_only_where_tensorrt_cuda_and_gpu_all_match():
    here = Toolchain(BUILT["tensorrt"], BUILT["cuda"], BUILT["gpu"], "9.0")
    assert check_plan_toolchain("ranker", PLAN, here) is None
    elsewhere = Toolchain(BUILT["tensorrt"], BUILT["cuda"], "NVIDIA L4", "8.9")
    with pytest.raises(PlanToolchainError, match=r"gpu: built with 'NVIDIA H100 80GB HBM3', here 'NVIDIA L4'.*--force"):
        check_plan_toolchain("ranker", PLAN, elsewhere)
    with pytest.raises(PlanToolchainError, match="tensorrt: built with '10.5.0.18', here '10.12.0.36'"):
        check_plan_toolchain("ranker", PLAN, Toolchain("10.12.0.36", BUILT["cuda"], BUILT["gpu"]))
    warning = check_plan_toolchain("ranker", PLAN, elsewhere, force=True)
    assert warning.startswith("--force: ranker: TensorRT plan") and "NVIDIA L4" in warning


def test_a_plan_without_recorded_toolchain_or_on_a_host_without_gpu_is_refused():
    with pytest.raises(PlanToolchainError, match="records no TensorRT/CUDA/GPU"):
        check_plan_toolchain("ranker", {"path": "model.plan"}, Toolchain(*BUILT.values()))
    here = current_toolchain()
    if here.gpu is None:  # this CPU machine: nothing here can confirm the plan loads
        with pytest.raises(PlanToolchainError, match="gpu: built with"):
            check_plan_toolchain("ranker", PLAN, here)


def test_manifest_records_the_toolchain_of_a_plan():
    signature = ModelSignature(
        "m", (TensorSpec("x", "float32", ("batch",)),), (TensorSpec("y", "float32", ("batch",)),), {"batch": (1, 2, 4)}
    )
    record = ArtifactRecord(
        "m",
        "tensorrt",
        "artifacts/m/tensorrt/model.plan",
        signature,
        "fp16",
        {},
        {},
        {},
        1,
        [],
        toolchain=Toolchain(*BUILT.values()).to_dict(),
    )
    toolchain = record.to_dict()["toolchain"]
    assert {k: toolchain[k] for k in BUILT} == BUILT and toolchain["triton_release"] in TRITON_CONTAINER


class _Config:
    """Records builder-config flag calls like TensorRT's IBuilderConfig."""

    def __init__(self):
        self.flags = {"TF32"}  # TensorRT's default

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)


FAKE_TRT = SimpleNamespace(__version__="10.5.0.18", BuilderFlag=SimpleNamespace(TF32="TF32", FP16="FP16", BF16="BF16"))


@pytest.mark.parametrize("precision,flags", [("fp32", set()), ("fp16", {"FP16"}), ("bf16", {"BF16"})])
def test_engines_build_without_tf32_and_with_the_precision_flag(precision, flags):
    from duet_sdk.export.onnx2trt import configure_precision

    config = _Config()
    configure_precision(FAKE_TRT, config, precision)
    assert config.flags == flags  # an fp32 engine is true fp32 (TF32 would miss the 1e-4 tolerance)


def test_a_tensorrt_without_the_precision_flag_or_off_the_pinned_series_is_refused(monkeypatch, tmp_path):
    from duet_sdk.export.onnx2trt import (
        TensorRTBuildError,
        build_engine,
        configure_precision,
    )

    no_fp16 = SimpleNamespace(__version__="11.0.0", BuilderFlag=SimpleNamespace(TF32="TF32"))
    with pytest.raises(TensorRTBuildError, match=f"no BuilderFlag.FP16.*TensorRT {TENSORRT_SERIES}"):
        configure_precision(no_fp16, _Config(), "fp16")
    pytest.importorskip("onnx")
    monkeypatch.setattr(_compat, "require_tensorrt", lambda: SimpleNamespace(__version__="10.12.0.36"))
    signature = ModelSignature(
        "m", (TensorSpec("x", "float32", ("batch",)),), (TensorSpec("y", "float32", ("batch",)),), {"batch": (1, 2, 4)}
    )
    with pytest.raises(
        TensorRTBuildError, match=f"TensorRT 10.12.0.36 is installed.*{TENSORRT_SERIES}.x.*{TRITON_CONTAINER}"
    ):
        build_engine(tmp_path / "model.onnx", signature, tmp_path / "model.plan", "fp16")
    assert is_pinned("10.5.0.18") and not is_pinned("10.50.1") and not is_pinned(None)


def test_profile_shapes_come_from_the_signature_dims():
    from duet_sdk.export.onnx2trt import profile_shapes

    signature = ModelSignature(
        "m",
        (TensorSpec("ids", "int32", ("batch", "t", 3)),),
        (TensorSpec("y", "float32", ("batch",)),),
        {"batch": (1, 4, 8), "t": (1, 16, 16)},
    )
    assert profile_shapes(signature) == {"ids": ((1, 1, 3), (4, 16, 3), (8, 16, 3))}


class _Context:
    """An execution context whose profile admits batch <= 4 (TensorRT's set_input_shape returns a bool)."""

    def __init__(self):
        self.calls = []

    def set_input_shape(self, name, shape):
        self.calls.append((name, shape))
        return shape[0] <= 4


def _fake_trt(engine):
    """A ``tensorrt`` module whose Runtime deserializes every plan to ``engine``."""

    def logger(level):
        return None

    logger.WARNING = 2
    return SimpleNamespace(
        __version__="10.5.0.18",
        Logger=logger,
        Runtime=lambda log: SimpleNamespace(deserialize_cuda_engine=lambda data: engine),
    )


def test_an_input_shape_outside_the_profile_is_a_typed_error_before_anything_runs(monkeypatch, tmp_path):
    import torch

    from duet_sdk.export.onnx2trt import TensorRTRunError, tensorrt_runner

    context = _Context()
    fake = _fake_trt(SimpleNamespace(create_execution_context=lambda: context))
    monkeypatch.setattr(_compat, "require_tensorrt", lambda: fake)
    (tmp_path / "model.plan").write_bytes(b"plan")
    signature = ModelSignature(
        "m", (TensorSpec("x", "float32", ("batch",)),), (TensorSpec("y", "float32", ("batch",)),), {"batch": (1, 2, 4)}
    )
    run = tensorrt_runner(tmp_path / "model.plan", signature)
    with pytest.raises(TensorRTRunError, match=r"input x shape \(5,\) is outside the engine's optimization profile"):
        run({"x": torch.zeros(5)})
    assert context.calls == [("x", (5,))]


def test_a_plan_this_tensorrt_cannot_deserialize_is_a_typed_error(monkeypatch, tmp_path):
    from duet_sdk.export.onnx2trt import TensorRTRunError, tensorrt_runner

    fake = _fake_trt(None)  # what deserialize_cuda_engine returns for a plan of another TensorRT version
    monkeypatch.setattr(_compat, "require_tensorrt", lambda: fake)
    (tmp_path / "model.plan").write_bytes(b"plan")
    signature = ModelSignature(
        "m", (TensorSpec("x", "float32", ("batch",)),), (TensorSpec("y", "float32", ("batch",)),), {"batch": (1, 2, 4)}
    )
    with pytest.raises(TensorRTRunError, match="cannot deserialize this plan"):
        tensorrt_runner(tmp_path / "model.plan", signature)
