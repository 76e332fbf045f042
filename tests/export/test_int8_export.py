"""int8 on the cpu target: ONNX artifacts quantized (weight MatMuls only, Gather tables left fp32), verified
against eager PyTorch at the stated int8 tolerances, recorded with their sha256; a model that int8 rounds
beyond them is refused and nothing is published."""

import json

import onnx
import pytest
import torch
from export_fixtures import save_codec, save_encoder, tiny_upstream, write_spec

from duet_sdk.export.cli import main
from duet_sdk.export.manifest import sha256_file
from duet_sdk.export.pipeline import export_all
from duet_sdk.export.signature import EMBEDDING_ATOL, PROBABILITY_ATOL
from duet_sdk.export.spec import ExportSpec
from duet_sdk.export.verify import Case, VerificationError

FLOAT_TABLES = {onnx.TensorProto.FLOAT}


@pytest.fixture(scope="module")
def int8_export(runs, tmp_path_factory):
    """A real `duet-export --precision int8 --formats onnx` of the click encoder and the click ranker."""
    out = tmp_path_factory.mktemp("int8")
    spec = write_spec(out.parent / "int8.toml", runs, formats=["onnx"], precision="int8")
    assert main(["--spec", str(spec), "--out", str(out), "--no-progress"]) == 0
    return out


def _gather_tables(path) -> list[tuple[str, int]]:
    """(initializer name, element type) of every Gather's data input that is an initializer."""
    graph = onnx.load(str(path), load_external_data=False).graph
    types = {t.name: t.data_type for t in graph.initializer}
    return [(n.input[0], types[n.input[0]]) for n in graph.node if n.op_type == "Gather" and n.input[0] in types]


def test_int8_artifacts_are_verified_at_their_stated_tolerance_with_sha256(int8_export):
    manifest = json.loads((int8_export / "manifest.json").read_text())
    records = {a["model"]: a for a in manifest["artifacts"]}
    assert set(records) == {"click_encoder", "ranker"} and {a["format"] for a in records.values()} == {"onnx"}
    for record in records.values():
        assert record["precision"] == "int8" and record["verified_rows"] > 0
        directory = (int8_export / record["path"]).parent
        assert {n: sha256_file(directory / n) for n in record["files"]} == record["sha256"]
        assert (
            record["quantization"]["op_types"] == ["MatMul"]
            and record["quantization"]["ops"].get("MatMulInteger", 0) > 0
        )
    encoder = records["click_encoder"]
    assert encoder["tolerance"]["click_embedding"] == {"atol": EMBEDDING_ATOL["int8"]}
    assert 0 < encoder["per_output"]["click_embedding"]["max_abs_diff"] <= EMBEDDING_ATOL["int8"]
    ranker = records["ranker"]
    (probabilities,) = ranker["outputs"]
    assert ranker["tolerance"][probabilities["name"]] == {"atol": PROBABILITY_ATOL["int8"]}
    assert ranker["max_abs_diff"] <= PROBABILITY_ATOL["int8"]


def test_int8_quantizes_weight_matmuls_but_leaves_every_gather_table_fp32(int8_export, exported):
    for model in ("click_encoder", "ranker"):
        int8 = int8_export / "artifacts" / model / "onnx" / "model.onnx"
        fp32 = exported / "artifacts" / model / "onnx" / "model.onnx"
        tables = _gather_tables(int8)
        assert tables and {t for _, t in tables} == FLOAT_TABLES, tables  # hashed embedding tables stay float32
        assert len(tables) == len(_gather_tables(fp32))
        ops = [n.op_type for n in onnx.load(str(int8), load_external_data=False).graph.node]
        assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
        assert not {"QLinearMatMul", "DequantizeLinear"} & set(ops)  # nothing else quantized (Gather would dequantize)


def _outlier_runs(root):
    """An accepted click encoder whose every weight matrix has one outlier row: per-channel int8 then
    rounds the other weights of each column to a few levels, far beyond the int8 tolerance."""
    net = tiny_upstream("click")
    with torch.no_grad():
        for name, param in net.named_parameters():
            if param.dim() == 2 and "weight" in name and "embedding" not in name and "table" not in name:
                param[:, 0] = 40.0 * param.abs().max()
    encoder, _ = save_encoder(root, net, "click-0001")
    save_codec(root, "click", encoder.digest, net.config.embedding_dim)
    return root


def test_int8_export_refuses_a_model_it_rounds_beyond_tolerance_and_publishes_nothing(tmp_path):
    runs = _outlier_runs(tmp_path / "runs")
    spec = ExportSpec(checkpoints=runs, formats=("onnx",), encoders=("click",), ranker=None, precision="int8")
    out = tmp_path / "out"
    with pytest.raises(VerificationError, match="click_embedding.*tolerance 0.05") as caught:
        export_all(spec, out, cases=(Case(8, "max", "full"),))
    assert caught.value.max_abs_diff > EMBEDDING_ATOL["int8"] and caught.value.inputs_path.is_file()
    assert not (out / "artifacts" / "click_encoder").exists() and not (out / "manifest.json").exists()
    assert [p.name for p in out.iterdir()] == ["failures"]  # no temporary directory left behind


def _click_serving(runs):
    from duet_sdk.export.pipeline import build_serving
    from duet_sdk.export.sources import select_all

    spec = ExportSpec(checkpoints=runs, encoders=("click",), ranker=None, formats=("onnx",))
    return build_serving(select_all(runs, ("click",), None, False), spec)["click_encoder"]


def test_int8_codes_may_follow_the_artifacts_own_embedding_but_no_other_codes(runs, tmp_path):
    """A stand-in runner: eager embeddings moved by 3e-2 (inside int8's 5e-2, outside fp32's 1e-4) with codes
    re-encoded from the moved embedding pass int8; the same with one code changed does not."""
    serving = _click_serving(runs)

    def moved(inputs, corrupt=False):
        out = serving.eager(inputs)
        signs = torch.sign(torch.randn(out["click_embedding"].shape, generator=torch.Generator().manual_seed(0)))
        embedding = out["click_embedding"] + 3e-2 * signs
        codes = serving.module.side(embedding).clone()
        if corrupt:
            codes[0, -1] = (codes[0, -1] + 1) % 16
        return {"click_codes": codes, "click_embedding": embedding}

    from duet_sdk.export.verify import verify_artifact

    cases = (Case(8, "max", "full"),)
    result = verify_artifact(serving, moved, "int8", cases, failures_dir=tmp_path)
    assert 0.02 < result.max_abs_diff["click_embedding"] <= EMBEDDING_ATOL["int8"]
    with pytest.raises(VerificationError, match="click_codes: 1 rows differ"):
        verify_artifact(serving, lambda x: moved(x, corrupt=True), "int8", cases, failures_dir=tmp_path)
    with pytest.raises(VerificationError, match="rows differ outside near ties"):  # fp32 holds codes to eager's
        verify_artifact(serving, moved, "fp32", cases, failures_dir=tmp_path)
