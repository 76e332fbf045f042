"""Every converter's artifact runs outside eager PyTorch and matches it within tolerance, on shapes
never seen at export; a perturbed artifact is caught by verification."""

import json
import shutil

import numpy as np
import pytest
import torch

from duet_sdk.export.extract import ServingModel
from duet_sdk.export.manifest import sha256_file
from duet_sdk.export.torch2onnx import graph_io, onnxruntime_runner
from duet_sdk.export.torch2torchscript import check_standalone, torchscript_runner
from duet_sdk.export.verify import (
    Case,
    VerificationError,
    sample_inputs,
    verify_artifact,
)

onnx = pytest.importorskip("onnx")

# fp32 artifacts run the same ops as eager with other kernels: ~1e-7 observed; 1e-4 / 1e-5 stated.
EMBEDDING_ATOL, PROBABILITY_ATOL = 1e-4, 1e-5


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def _serving(runs, model) -> ServingModel:
    from duet_sdk.export.pipeline import build_serving
    from duet_sdk.export.sources import select_all
    from duet_sdk.export.spec import ExportSpec, ShapeSpec

    spec = ExportSpec(checkpoints=runs, encoders=("click",), ranker="click",
                      shapes=ShapeSpec(opt_batch=8, max_batch=64, opt_candidates=4, max_candidates=16))
    return build_serving(select_all(runs, ("click",), "click", False), spec)[model]


def test_export_writes_every_artifact_verified_with_manifest_and_no_temp_dirs(exported):
    manifest = _manifest(exported)
    kinds = {(a["model"], a["format"]) for a in manifest["artifacts"]}
    assert kinds == {(m, f) for m in ("click_encoder", "ranker") for f in ("torchscript", "onnx")}
    for artifact in manifest["artifacts"]:
        assert (exported / artifact["path"]).is_file()
        assert artifact["bytes"] > 0 and artifact["verified_rows"] >= 64
        assert {s["role"] for s in artifact["source_checkpoints"]} >= {"codec"}
        assert all(len(s["digest"]) == 64 for s in artifact["source_checkpoints"])
        limit = PROBABILITY_ATOL if artifact["model"] == "ranker" else EMBEDDING_ATOL
        assert artifact["max_abs_diff"] <= limit
    onnx_encoder = next(a for a in manifest["artifacts"] if a["model"] == "click_encoder" and a["format"] == "onnx")
    assert onnx_encoder["inputs"][3] == {"name": "click_ids", "dtype": "int64", "shape": ["batch", "click_len", 7]}
    assert onnx_encoder["outputs"][0]["name"] == "click_codes"
    assert onnx_encoder["per_output"]["click_codes"]["max_abs_diff"] == 0  # exact outside near ties
    assert next(s for s in onnx_encoder["source_checkpoints"] if s["role"] == "encoder")["val_ne"] == 0.9
    assert "model.onnx.data" in onnx_encoder["files"]  # weights as external data
    folder = (exported / onnx_encoder["path"]).parent
    assert onnx_encoder["sha256"] == {n: sha256_file(folder / n) for n in onnx_encoder["files"]}  # checked at publish
    assert manifest["extraction"]["ranker"]["tasks"]  # the task names: publishing reads nothing outside the export
    assert manifest["extraction"]["click_encoder"]["dropped_params"] > 0
    assert not [p for p in exported.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_onnx_graph_has_symbolic_batch_and_sequence_dims(exported):
    io = graph_io(exported / "artifacts/click_encoder/onnx/model.onnx")
    shapes = {name: dims for name, _, dims in io["inputs"]}
    assert shapes["click_ids"] == ["batch", "click_len", 7]
    assert shapes["conv_ts"] == ["batch", "conv_len"]
    assert {name: dims for name, _, dims in io["outputs"]}["click_embedding"] == ["batch", 16]
    ranker = graph_io(exported / "artifacts/ranker/onnx/model.onnx")
    assert {n: d for n, _, d in ranker["outputs"]}["scores"] == ["batch", "candidates", 2]


@pytest.mark.parametrize("model", ["click_encoder", "ranker"])
def test_onnx_runs_in_onnxruntime_on_sizes_never_seen_at_export(exported, runs, model):
    serving = _serving(runs, model)
    run = onnxruntime_runner(exported / f"artifacts/{model}/onnx/model.onnx")
    atol = PROBABILITY_ATOL if model == "ranker" else EMBEDDING_ATOL
    for case in (Case(64, "max", "mixed"), Case(1, "1", "empty"), Case(3, "short", "heavy_padding")):
        inputs = sample_inputs(serving.signature, case, seed=7)
        got, want = run(inputs), serving.eager(inputs)
        for name in serving.signature.output_names:
            assert got[name].shape == want[name].shape
            torch.testing.assert_close(got[name], want[name], atol=atol, rtol=0)


def test_torchscript_loads_without_duet_sdk_and_matches_on_other_batch_and_width(exported, runs):
    serving = _serving(runs, "click_encoder")
    path = exported / "artifacts/click_encoder/torchscript/model.pt"
    inputs = sample_inputs(serving.signature, Case(64, "max", "mixed"), seed=3)  # traced at batch 5, width 5/4
    assert check_standalone(path, serving, inputs) <= EMBEDDING_ATOL
    arguments = [a.name for a in torch.jit.load(str(path)).forward.schema.arguments[1:]]
    assert tuple(arguments) == serving.signature.input_names  # Triton matches inputs by these names
    result = verify_artifact(serving, torchscript_runner(path, serving.signature), failures_dir=exported / "f")
    assert result.max_abs_diff["click_embedding"] <= EMBEDDING_ATOL


def test_perturbed_onnx_weight_is_caught_with_max_diff_and_saved_inputs(exported, runs, tmp_path):
    from onnx import numpy_helper

    serving = _serving(runs, "click_encoder")
    source = exported / "artifacts/click_encoder/onnx"
    model = onnx.load(str(source / "model.onnx"))  # external data loaded
    index, init = next(
        (i, t) for i, t in enumerate(model.graph.initializer) if "summarizer" in t.name and len(t.dims) == 2
    )
    weights = numpy_helper.to_array(init).copy()
    weights[0, 0] += 1.0  # one weight of the DCN summarizer
    model.graph.initializer[index].CopyFrom(numpy_helper.from_array(weights, init.name))
    onnx.save(model, str(tmp_path / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    with pytest.raises(VerificationError) as caught:
        verify_artifact(
            serving, onnxruntime_runner(tmp_path / "model.onnx"), failures_dir=tmp_path / "failures", tag="perturbed"
        )
    error = caught.value
    assert error.max_abs_diff > EMBEDDING_ATOL and np.isfinite(error.max_abs_diff)
    assert error.inputs_path.is_file() and error.inputs_path.suffix == ".safetensors"
    from safetensors.torch import load_file

    assert set(load_file(error.inputs_path)) == set(serving.signature.input_names)


def test_torchscript_with_changed_weights_is_caught_by_verification(exported, runs, tmp_path):
    serving = _serving(runs, "ranker")
    scripted = torch.jit.load(str(exported / "artifacts/ranker/torchscript/model.pt"))
    with torch.no_grad():
        next(p for n, p in scripted.named_parameters() if n.endswith("heads.bias")).add_(0.5)
    scripted.save(str(tmp_path / "model.pt"))
    with pytest.raises(VerificationError, match="max abs diff") as caught:
        verify_artifact(serving, torchscript_runner(tmp_path / "model.pt", serving.signature), failures_dir=tmp_path)
    assert caught.value.output == "scores" and caught.value.inputs_path.exists()


def test_mask_constant_clamp_for_fp16_keeps_onnx_parity(exported, runs, tmp_path):
    from duet_sdk.export.onnx2trt import clamp_mask_constants

    serving = _serving(runs, "click_encoder")
    model = onnx.load(str(exported / "artifacts/click_encoder/onnx/model.onnx"))
    assert clamp_mask_constants(model) >= 1  # the attention's finfo(float32).min fill
    onnx.save(model, str(tmp_path / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    result = verify_artifact(serving, onnxruntime_runner(tmp_path / "model.onnx"), failures_dir=tmp_path)
    assert result.max_abs_diff["click_embedding"] <= EMBEDDING_ATOL


def test_republishing_replaces_an_artifact_atomically(exported, tmp_path):
    from duet_sdk.export.pipeline import _publish

    final = tmp_path / "artifacts/m/onnx"
    for content in ("old", "new"):
        staged = tmp_path / f".tmp-{content}"
        staged.mkdir()
        (staged / "model.onnx").write_text(content)
        _publish(staged, final)
    assert (final / "model.onnx").read_text() == "new"
    assert sorted(p.name for p in final.parent.iterdir()) == ["onnx"]
    shutil.rmtree(final)
