"""Precision per target: the cpu target takes fp32 and int8 (ONNX only) and refuses bf16 with the reason,
which is checked against the installed ONNX Runtime; the gpu target takes TensorRT's bf16 and refuses int8."""

import onnxruntime
import pytest
from onnx import TensorProto, helper

from duet_sdk.errors import ConfigError
from duet_sdk.export.cli import main
from duet_sdk.export.spec import ExportSpec


def _session(op: str, dtype: int):
    x, w = (helper.make_tensor_value_info(n, dtype, s) for n, s in (("X", [2, 4]), ("W", [4, 3])))
    graph = helper.make_graph(
        [helper.make_node(op, ["X", "W"], ["Y"])], "probe", [x, w], [helper.make_tensor_value_info("Y", dtype, None)]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    return onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
def test_onnxruntime_cpu_provider_still_has_no_bf16_matmul_which_is_why_cpu_refuses_bf16(op):
    """If this starts to fail, ONNX Runtime gained a bf16 CPU kernel: revisit ``CPU_REFUSED``."""
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        _session(op, TensorProto.BFLOAT16)
    _session(op, TensorProto.FLOAT)  # the same graph in fp32 loads


def test_cpu_target_refuses_bf16_naming_the_field_and_the_reason(tmp_path):
    with pytest.raises(ConfigError, match="no bfloat16 MatMul") as caught:
        ExportSpec(checkpoints=tmp_path, target="cpu", precision="bf16")
    assert caught.value.field == "precision" and caught.value.got == "bf16"


def test_cpu_target_refuses_fp16_which_it_would_otherwise_ignore(tmp_path):
    with pytest.raises(ConfigError, match="no fp16 export path") as caught:
        ExportSpec(checkpoints=tmp_path, target="cpu", formats=("onnx",), precision="fp16")
    assert caught.value.field == "precision"


def test_gpu_target_accepts_bf16_and_refuses_int8(tmp_path):
    assert ExportSpec(checkpoints=tmp_path, target="gpu", formats=("onnx",), precision="bf16").precision == "bf16"
    with pytest.raises(ConfigError, match="cpu-target precision") as caught:
        ExportSpec(checkpoints=tmp_path, target="gpu", formats=("onnx",), precision="int8")
    assert caught.value.field == "precision"


def test_int8_is_accepted_for_onnx_only(tmp_path):
    assert ExportSpec(checkpoints=tmp_path, formats=("onnx",), precision="int8").precision == "int8"
    with pytest.raises(ConfigError, match="TorchScript artifact would be fp32") as caught:
        ExportSpec(checkpoints=tmp_path, formats=("torchscript", "onnx"), precision="int8")
    assert caught.value.field == "formats"


def test_cli_bf16_on_cpu_exits_2_naming_precision_and_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(f'checkpoints = "{tmp_path}"\ntarget = "cpu"\nformats = ["onnx"]\n')
    assert main(["--spec", str(spec), "--out", str(tmp_path / "out"), "--precision", "bf16", "--no-progress"]) == 2
    assert "precision: expected one of ('fp32', 'int8') for target 'cpu'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
