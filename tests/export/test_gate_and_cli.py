"""Only accepted checkpoints are exported unless --force, which records a warning; spec and CLI errors."""

import json

import pytest
from export_fixtures import save_codec, save_encoder, tiny_upstream, write_spec

from duet_sdk.errors import ConfigError
from duet_sdk.export._compat import MissingDependencyError, tensorrt_unavailable_reason
from duet_sdk.export.cli import main
from duet_sdk.export.sources import NotAcceptedError, select_all
from duet_sdk.export.spec import ExportSpec


@pytest.fixture()
def rejected_runs(tmp_path):
    """click: an accepted encoder, then a newer one the gate rejected (NE regressed)."""
    net = tiny_upstream("click")
    good, _ = save_encoder(tmp_path, net, "click-0001", ne=0.80)
    save_codec(tmp_path, "click", good.digest, net.config.embedding_dim, seed=0)
    with __import__("torch").no_grad():
        net.heads.bias.add_(1.0)  # a different checkpoint
    bad, decision = save_encoder(tmp_path, net, "click-0002", ne=0.95)
    assert not decision.accepted
    save_codec(tmp_path, "click", bad.digest, net.config.embedding_dim, seed=1)
    return tmp_path, good, bad


def test_latest_accepted_checkpoint_is_selected_over_a_newer_rejected_one(rejected_runs):
    runs, good, _ = rejected_runs
    selection = select_all(runs, ("click",), None, force=False)
    encoder, codec = selection.sources["click_encoder"]
    assert encoder.checkpoint.digest == good.digest and encoder.accepted
    assert codec.checkpoint.lineage["data"]["encoder"] == good.digest
    assert selection.warnings == []


def test_non_accepted_checkpoint_is_refused_without_force(rejected_runs, tmp_path):
    runs, _, bad = rejected_runs
    with pytest.raises(NotAcceptedError, match="not accepted.*--force"):
        select_all(runs, ("click",), None, force=False, explicit={"click": bad.path})
    spec = write_spec(tmp_path / "spec.toml", runs, formats=["torchscript"], ranker="")
    assert (
        main(
            ["--spec", str(spec), "--out", str(tmp_path / "out"), "--checkpoint", f"click={bad.path}", "--no-progress"]
        )
        == 2
    )
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_force_exports_a_rejected_checkpoint_and_the_manifest_records_the_warning(rejected_runs, tmp_path):
    runs, _, bad = rejected_runs
    spec = write_spec(tmp_path / "spec.toml", runs, formats=["torchscript"], ranker="")
    assert main(["--spec", str(spec), "--out", str(tmp_path / "out"), "--force", "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (artifact,) = manifest["artifacts"]
    encoder = next(s for s in artifact["source_checkpoints"] if s["role"] == "encoder")
    assert encoder["digest"] == bad.digest and encoder["accepted"] is False
    assert any("--force" in w and bad.digest[:12] in w for w in manifest["warnings"])
    assert artifact["warnings"] == manifest["warnings"]


def test_no_accepted_checkpoint_is_an_error_naming_force(tmp_path):
    with pytest.raises(NotAcceptedError, match="no accepted click"):
        select_all(tmp_path, ("click",), None, force=False)


@pytest.mark.skipif(tensorrt_unavailable_reason() is None, reason="TensorRT is installed here")
def test_tensorrt_requested_without_tensorrt_names_the_extra(runs, tmp_path, capsys):
    from duet_sdk.export.pipeline import export_all

    spec = ExportSpec(checkpoints=runs, target="gpu", formats=("tensorrt",), encoders=("click",), ranker=None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'duet_sdk\[tensorrt\]'"):
        export_all(spec, tmp_path / "out")
    spec_file = write_spec(tmp_path / "s.toml", runs, target="gpu")
    assert main(["--spec", str(spec_file), "--out", str(tmp_path / "o"), "--formats", "tensorrt"]) == 2
    assert "duet_sdk[tensorrt]" in capsys.readouterr().err


def test_spec_files_parse_and_invalid_values_raise_config_error(tmp_path):
    cpu = ExportSpec.from_toml("export/cpu.toml")
    gpu = ExportSpec.from_toml("export/gpu.toml")
    assert cpu.formats == ("torchscript", "onnx") and cpu.precision == "fp32"
    assert "tensorrt" in gpu.formats and gpu.precision == "fp16"
    assert cpu.with_overrides(formats=("onnx",), ranker=None).formats == ("onnx",)
    assert gpu.target == "gpu"
    for bad in (
        {"formats": ["savedmodel"]},
        {"precision": "int3"},
        {"encoders": ["click", "click"]},
        {"bogus": 1},
        {"formats": ["tensorrt"]},
    ):  # TensorRT engines only for the gpu target (split encoders)
        with pytest.raises(ConfigError):
            ExportSpec.from_dict({"checkpoints": "runs/demo", **bad})
    with pytest.raises(ConfigError, match="opt_batch"):
        ExportSpec.from_dict({"checkpoints": "x", "shapes": {"opt_batch": 65, "max_batch": 64}})


def test_importing_the_export_package_imports_no_onnx_or_tensorrt():
    import subprocess
    import sys

    code = (
        "import sys, duet_sdk.export, duet_sdk.export.cli; "
        "print(sorted(m for m in ('onnx', 'onnxscript', 'onnxruntime', 'tensorrt') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_export_to_a_relative_out_path_verifies_torchscript_in_a_clean_process(runs, tmp_path, monkeypatch):
    # The standalone TorchScript check runs in another working directory: relative paths must still resolve.
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path / "spec.toml", runs, formats=["torchscript"], ranker="")
    assert main(["--spec", str(spec), "--out", "relative_repo", "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "relative_repo" / "manifest.json").read_text())
    assert [(a["model"], a["format"]) for a in manifest["artifacts"]] == [("click_encoder", "torchscript")]
