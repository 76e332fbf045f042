"""The gpu target from a real gpu export: each encoder is a prep ONNX (any int64 input hashed exactly as
eager PyTorch) chained into an int32/float32 engine; the repository's configs parse back into protobuf
and agree with the manifest; the ensembles keep the cpu target's interface and pin prep and engine to
the release; prep models are release models (pruned, loaded and unloaded with it); foreign plans are
refused.

TensorRT plans cannot be built here (no GPU): the engines are the ONNX artifacts that Triton's
``onnxruntime_onnx`` runs with the TensorRT accelerator."""

import json
import shutil

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from duet_sdk.export import ort_tensorrt
from duet_sdk.export.manifest import sha256_file
from duet_sdk.export.signature import EMBEDDING_ATOL, FEATURE_ATOL
from duet_sdk.export.toolchain import PlanToolchainError
from duet_sdk.interface import ENSEMBLES, release_model, split_release_model
from duet_sdk.serving import releases
from duet_sdk.serving.config import DATA_TYPES, ServingPolicy, read_config
from duet_sdk.serving.repository import publish

onnx = pytest.importorskip("onnx")
EDGES = np.array([-(2**63), -(2**63) + 1, -(2**31), -1, 0, 1, 2**31 - 1, 2**31, 2_147_483_647 * 3, 2**62, 2**63 - 1])


def _records(export):
    manifest = json.loads((export / "manifest.json").read_text())
    return manifest, {(a["model"], a["format"]): a for a in manifest["artifacts"]}


def v1(model: str) -> str:
    return release_model(model, 1)


def _base(name: str) -> str:
    """``click_prep_v1`` -> ``click_prep``."""
    return split_release_model(name)[0]


@pytest.fixture(scope="module")
def gpu_repository(gpu_export, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo-gpu")
    publish(gpu_export, repo, "gpu")
    return repo


@pytest.fixture(scope="module")
def chain(tiny_runs, gpu_export):
    """Eager fused encoders of the tiny runs and ONNX Runtime on the exported prep and engine of each."""
    from duet_sdk.export.pipeline import build_serving
    from duet_sdk.export.sources import select_all
    from duet_sdk.export.spec import ExportSpec, ShapeSpec
    from duet_sdk.export.torch2onnx import onnxruntime_runner

    spec = ExportSpec(checkpoints=tiny_runs, target="gpu", encoders=("click", "conv"), ranker="duet",
                      shapes=ShapeSpec(opt_batch=4, max_batch=16, opt_candidates=4, max_candidates=16))
    fused = build_serving(select_all(tiny_runs, ("click", "conv"), "duet", False), spec)
    run = {m: onnxruntime_runner(gpu_export / f"artifacts/{m}/onnx/model.onnx", threads=1)
           for m in ("click_prep", "click_encoder", "conv_prep", "conv_encoder")}
    return fused, run


def test_gpu_export_splits_every_encoder_into_prep_and_an_engine_without_int64_arithmetic(gpu_export):
    manifest, records = _records(gpu_export)
    assert manifest["target"] == "gpu" and "gpu" in manifest["toolchain"]
    assert {(m, r["role"]) for (m, _), r in records.items()} == {
        ("click_prep", "prep"),
        ("click_encoder", "engine"),
        ("conv_prep", "prep"),
        ("conv_encoder", "engine"),
        ("ranker", "fused"),
    }
    for name in ("click", "conv"):
        engine = records[(f"{name}_encoder", "onnx")]
        assert engine["prep"] == f"{name}_prep" and {s["dtype"] for s in engine["inputs"]} == {"int32", "float32"}
        assert [s["name"] for s in engine["raw_inputs"]][:3] == ["request_time", "static_sparse", "static_dense"]
        assert engine["max_abs_diff"] <= EMBEDDING_ATOL["fp32"]  # prep ONNX -> engine ONNX vs the fused eager encoder
        graph = onnx.load(str(gpu_export / engine["path"]), load_external_data=False).graph
        assert not [n for n in graph.node if n.op_type == "Mod"]  # no hashing inside the engine
        assert {i.type.tensor_type.elem_type for i in graph.input} == {onnx.TensorProto.INT32, onnx.TensorProto.FLOAT}
        prep_graph = onnx.load(
            str(gpu_export / records[(f"{name}_prep", "onnx")]["path"]), load_external_data=False
        ).graph
        assert [n for n in prep_graph.node if n.op_type == "Mod"]  # ... it is all in the prep model
    reason = ort_tensorrt.unavailable_reason()
    for model in ("click_encoder", "conv_encoder", "ranker"):
        fallback = records[(model, "onnx")]["fallback"]
        assert fallback["runtime"] == "onnxruntime+tensorrt" and fallback["precision"] == "fp16"
        assert fallback["verified"] is (reason is None) and fallback.get("reason") == reason
    assert "fallback" not in records[("click_prep", "onnx")]


def _adversarial(signature, seed: int) -> dict[str, torch.Tensor]:
    """Raw inputs whose IDs, timestamps and lengths are extreme or random anywhere in int64."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in signature.inputs:
        shape = tuple(3 if d == "batch" else 4 if isinstance(d, str) else d for d in spec.shape)
        if spec.dtype == "float32":
            out[spec.name] = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
        else:
            values = rng.integers(-(2**63), 2**63 - 1, shape, dtype=np.int64, endpoint=True)
            mask = rng.random(shape) < 0.5
            values[mask] = rng.choice(EDGES, size=int(mask.sum()))
            out[spec.name] = torch.from_numpy(values)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prep_onnx_then_engine_onnx_equal_eager_for_any_int64_ids_timestamps_and_lengths(chain, seed):
    fused, run = chain
    for name in ("click", "conv"):
        encoder = fused[f"{name}_encoder"]
        raw = _adversarial(encoder.signature, seed)
        prepared = run[f"{name}_prep"]({k: v for k, v in raw.items() if k != "static_dense"})
        eager = encoder.module.encoder.prepare(raw)
        for key, value in eager.items():
            if value.is_floating_point():  # time features: ONNX Runtime's sin/cos vs PyTorch's, and fp16-safe
                torch.testing.assert_close(prepared[key], value, atol=FEATURE_ATOL, rtol=0)
                assert float(prepared[key].abs().max()) <= 5.0
            else:  # hashed table rows and counts: integer arithmetic, exactly equal
                assert prepared[key].dtype == torch.int32 and torch.equal(prepared[key].long(), value), key
        got = run[f"{name}_encoder"](prepared | {"static_dense": raw["static_dense"]})
        want = encoder.eager(raw)
        torch.testing.assert_close(
            got[f"{name}_embedding"], want[f"{name}_embedding"], atol=EMBEDDING_ATOL["fp32"], rtol=0
        )
        ties = encoder.module.near_tie_rows(want[f"{name}_embedding"], 1e-4)
        assert torch.equal(got[f"{name}_codes"][~ties], want[f"{name}_codes"][~ties])


def _check_io(config: pb.ModelConfig, record: dict) -> None:
    """Config inputs/outputs equal the manifest record's: names, data types, dims (batch dropped)."""
    for messages, specs in ((config.input, record["inputs"]), (config.output, record["outputs"])):
        assert [m.name for m in messages] == [s["name"] for s in specs]
        for message, spec in zip(messages, specs):
            assert message.data_type == DATA_TYPES[spec["dtype"]]
            assert list(message.dims) == ([-1 if isinstance(d, str) else d for d in spec["shape"][1:]] or [1])


def test_gpu_configs_parse_back_into_protobuf_and_agree_with_the_manifest(gpu_export, gpu_repository):
    _, records = _records(gpu_export)
    published = releases.release(releases.read_index(gpu_repository), 1)
    assert set(published["models"]) == {"click_prep", "click_encoder", "conv_prep", "conv_encoder", "ranker"}
    for (model, _), record in records.items():
        assert published["models"][model]["sha256"] == record["sha256"]
        text = (gpu_repository / v1(model) / "config.pbtxt").read_text()
        config = text_format.Parse(text, pb.ModelConfig())
        assert text_format.MessageToString(config) == text and config.name == v1(model)
        assert list(config.version_policy.specific.versions) == [1]
        assert config.platform == "onnxruntime_onnx" and config.default_model_filename == "model.onnx"
        assert config.max_batch_size == record["dims"]["batch"]["max"]
        _check_io(config, record)
        kind = pb.ModelInstanceGroup.KIND_CPU if record["role"] == "prep" else pb.ModelInstanceGroup.KIND_GPU
        assert [g.kind for g in config.instance_group] == [kind]
        accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
        if record["role"] == "prep":  # plain ONNX Runtime on CPU: int64 hashing stays exact
            assert not accelerators
        else:  # the TensorRT accelerator at the precision the export verified (or marked unverified)
            assert accelerators[0].name == "tensorrt"
            assert accelerators[0].parameters["precision_mode"] == record["fallback"]["precision"].upper()
        assert not any(i.allow_ragged_batch for i in config.input)
        for file in record["files"]:  # the real exported artifact, byte for byte
            assert (gpu_repository / v1(model) / "1" / file).read_bytes() == (
                gpu_export / record["path"]
            ).parent.joinpath(file).read_bytes()
        lineage = json.loads((gpu_repository / v1(model) / "1" / "lineage.json").read_text())
        assert lineage["artifact"]["role"] == record["role"] and lineage["target"] == "gpu"


def test_gpu_ensembles_chain_prep_into_engine_pinned_to_the_release_behind_the_cpu_targets_interface(
    gpu_export, gpu_repository, cpu_repository
):
    _, records = _records(gpu_export)
    for name in ENSEMBLES:
        gpu, cpu = (read_config(repo / v1(name) / "config.pbtxt") for repo in (gpu_repository, cpu_repository))
        alias = read_config(gpu_repository / name / "config.pbtxt")  # the first release is current at once
        assert alias.ensemble_scheduling == gpu.ensemble_scheduling
        for part in ("input", "output"):  # clients see the same tensors on both targets
            assert [(t.name, t.data_type, list(t.dims)) for t in getattr(gpu, part)] == [
                (t.name, t.data_type, list(t.dims)) for t in getattr(cpu, part)
            ]
        steps = list(gpu.ensemble_scheduling.step)
        assert {(s.model_version, split_release_model(s.model_name)[1]) for s in steps} == {(1, 1)}  # all release 1
        inputs = {t.name for t in gpu.input}
        produced = set()
        for step in steps:
            if _base(step.model_name).endswith("_guard"):  # the release's checks-only runner leads the fan-out
                assert step is steps[0] and name != "duet_downstream"
                produced |= set(step.output_map.values())
                continue
            record = next(r for (m, _), r in records.items() if m == _base(step.model_name))
            assert set(step.input_map) == {s["name"] for s in record["inputs"]}
            assert set(step.input_map.values()) <= inputs | produced  # every tensor exists before it is read
            if record["role"] == "engine":
                assert steps[steps.index(step) - 1].model_name == v1(record["prep"])
                assert all(
                    v.startswith(record["prep"] + "__") for k, v in step.input_map.items() if k != "static_dense"
                )
            produced |= set(step.output_map.values())
        cpu_models = [s.model_name for s in cpu.ensemble_scheduling.step]
        assert [s.model_name for s in steps if not _base(s.model_name).endswith("_prep")] == cpu_models


def test_prep_models_are_release_models_loaded_unloaded_and_pruned_with_their_release(gpu_export, tmp_path):
    repo = tmp_path / "repo"
    policy = ServingPolicy(serve_versions=1, keep_versions=1)
    assert [publish(gpu_export, repo, "gpu", policy).version for _ in range(3)] == [1, 2, 3]
    index = releases.read_index(repo)
    assert [e["status"] for e in index["releases"]] == ["ready", "pruned", "ready"]
    for version in (1, 3):
        models = releases.release_models(releases.release(index, version))
        assert {release_model(m, version) for m in ("click_prep", "conv_prep")} <= set(models[:5])  # before ensembles
        assert all((repo / name / str(version)).is_dir() for name in models)
    assert not any(split_release_model(p.name) and split_release_model(p.name)[1] == 2 for p in repo.iterdir())
    assert {"click_prep_v1", "conv_prep_v1"} <= set(releases.startup_models(index))


def test_publish_refuses_a_tensorrt_plan_built_elsewhere_before_writing_anything(gpu_export, tmp_path, capsys):
    from duet_sdk.serving.cli import publish_main

    export = shutil.copytree(gpu_export, tmp_path / "export")
    manifest, records = _records(export)
    ranker = records[("ranker", "onnx")]
    plan = export / "artifacts" / "ranker" / "tensorrt" / "model.plan"
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b"plan bytes")  # complete and digested: only its toolchain is wrong
    manifest["artifacts"].append(
        ranker
        | {
            "format": "tensorrt",
            "path": "artifacts/ranker/tensorrt/model.plan",
            "files": ["model.plan"],
            "sha256": {"model.plan": sha256_file(plan)},
            "toolchain": {"tensorrt": "10.5.0.18", "cuda": "12.6", "gpu": "NVIDIA H100 80GB HBM3"},
        }
    )
    (export / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PlanToolchainError, match="ranker: TensorRT plan .* was built elsewhere .*--force"):
        publish(export, tmp_path / "repo", "gpu")
    assert publish_main(["--export", str(export), "--model-repository", str(tmp_path / "repo"), "--target", "gpu"]) == 2
    assert "was built elsewhere" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").glob("*_v*"))


def test_gpu_ensembles_refuse_to_leave_an_engine_without_its_prep_step(gpu_export):
    from duet_sdk.errors import ConfigError
    from duet_sdk.serving.wiring import build_interface, client_records, gpu_ensembles

    manifest, by_format = _records(gpu_export)
    records = {m: r for (m, _), r in by_format.items()}
    interface = build_interface(manifest, client_records(records), 1)
    assert len(gpu_ensembles(records, interface, 1, model_name=v1)) == len(ENSEMBLES)
    with pytest.raises(
        ConfigError, match="a prep step before every engine step"
    ):  # steps named otherwise than expected
        gpu_ensembles(records, interface, 1)
