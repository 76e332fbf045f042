"""The repository writer: configs from protobuf that round-trip, both targets, atomic increasing
versions with lineage and pruning, and only gated checkpoints published."""

import json
import shutil

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from duet_sdk.errors import CheckpointError, ConfigError
from duet_sdk.serving.config import ServingPolicy, read_config
from duet_sdk.serving.interface import DOWNSTREAM, ENSEMBLES, FRESH, PARAMETER, UPSTREAM, ServingInterface
from duet_sdk.serving.repository import existing_versions, publish

COMPONENTS = ("click_encoder", "conv_encoder", "ranker")


def test_every_config_round_trips_through_protobuf(cpu_repository):
    for model in (*COMPONENTS, *ENSEMBLES):
        text = (cpu_repository / model / "config.pbtxt").read_text()
        message = text_format.Parse(text, pb.ModelConfig())
        assert message.name == model
        assert text_format.MessageToString(message) == text
        assert text_format.Parse(text_format.MessageToString(message), pb.ModelConfig()) == message


def test_cpu_components_run_under_the_python_backend_with_batching_warmup_and_version_policy(cpu_repository):
    for model in COMPONENTS:
        config = read_config(cpu_repository / model / "config.pbtxt")
        assert config.backend == "python" and config.parameters["runtime"].string_value == "onnxruntime"
        assert config.max_batch_size == 16 and config.dynamic_batching.max_queue_delay_microseconds > 0
        assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
        assert config.version_policy.latest.num_versions == 1
        assert config.model_warmup and config.model_warmup[0].batch_size == 1
        version = cpu_repository / model / "1"
        assert {"model.py", "model.onnx", "signature.json", "lineage.json"} <= {p.name for p in version.iterdir()}
    encoder = read_config(cpu_repository / "click_encoder" / "config.pbtxt")
    ragged = {i.name for i in encoder.input if i.allow_ragged_batch}
    assert ragged == {"click_ids", "click_ts", "conv_ids", "conv_ts"}
    request_time = next(i for i in encoder.input if i.name == "request_time")
    assert list(request_time.dims) == [1] and request_time.HasField("reshape")


def test_ensembles_wire_the_components_and_carry_the_interface(cpu_repository):
    configs = {name: read_config(cpu_repository / name / "config.pbtxt") for name in ENSEMBLES}
    for config in configs.values():
        assert config.platform == "ensemble"
    steps = lambda name: [s.model_name for s in configs[name].ensemble_scheduling.step]
    assert steps(UPSTREAM) == ["click_encoder", "conv_encoder"]
    assert steps(DOWNSTREAM) == ["ranker"]
    assert steps(FRESH) == ["click_encoder", "conv_encoder", "ranker"]
    assert {o.name for o in configs[UPSTREAM].output} == {"click_codes", "click_embedding", "conv_codes", "conv_embedding"}
    assert {i.name for i in configs[DOWNSTREAM].input} == {"static_sparse", "static_dense", "item_sparse", "item_dense",
                                                          "click_codes", "conv_codes"}
    assert {o.name for o in configs[FRESH].output} == {"scores", "click_codes", "conv_codes"}
    assert "click_codes" not in {i.name for i in configs[FRESH].input}
    interface = ServingInterface.from_json(configs[UPSTREAM].parameters[PARAMETER].string_value)
    assert interface.tasks == ("offsite_conversion", "link_click") and interface.version == "1"
    assert interface.streams["click"].max_len == 8 and interface.embeddings["conv"].levels == 3


def test_versions_increase_older_ones_are_pruned_and_lineage_is_recorded(tiny_export, tmp_path):
    repo = tmp_path / "repo"
    policy = ServingPolicy(keep_versions=2)
    assert [publish(tiny_export, repo, "cpu", policy).version for _ in range(3)] == [1, 2, 3]
    assert existing_versions(repo) == [2, 3]
    for model in (*COMPONENTS, *ENSEMBLES):
        assert sorted(p.name for p in (repo / model).iterdir()) == ["2", "3", "config.pbtxt"]  # no staging leftovers
    history = json.loads((repo / "repository.json").read_text())
    assert [v["version"] for v in history["versions"]] == [1, 2, 3] and history["latest"] == 3
    sources = history["versions"][-1]["models"]["ranker"]["sources"]
    assert {s["role"] for s in sources} == {"ranker", "codec"} and all(s["digest"] for s in sources)
    lineage = json.loads((repo / "ranker" / "3" / "lineage.json").read_text())
    assert lineage["version"] == 3 and lineage["artifact"]["source_checkpoints"] == sources


def test_a_failed_publish_leaves_no_partial_version(tiny_export, tmp_path, monkeypatch):
    from duet_sdk.serving import repository

    repo = tmp_path / "repo"
    publish(tiny_export, repo, "cpu")

    def broken_copy(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(repository.shutil, "copy2", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        publish(tiny_export, repo, "cpu")
    assert existing_versions(repo) == [1]
    assert all(not p.name.startswith(".") for model in repo.iterdir() if model.is_dir() for p in model.iterdir())


def test_checkpoints_not_accepted_by_the_gate_are_not_published(tiny_export, tmp_path):
    export = shutil.copytree(tiny_export, tmp_path / "export")
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["artifacts"][0]["source_checkpoints"][0]["accepted"] = False  # as written by `duet-export --force`
    (export / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="not accepted by the gate"):
        publish(export, tmp_path / "repo", "cpu")
    assert not (tmp_path / "repo").exists() or existing_versions(tmp_path / "repo") == []


def test_cpu_target_refuses_a_gpu_export_and_gpu_target_refuses_fused_encoders(tiny_export, gpu_export, tmp_path):
    with pytest.raises(ConfigError, match="fused models for the cpu target"):
        publish(gpu_export, tmp_path / "cpu", "cpu")
    with pytest.raises(ConfigError, match="split into prep \\+ engine"):
        publish(tiny_export, tmp_path / "gpu", "gpu")
    assert not (tmp_path / "cpu").exists() or existing_versions(tmp_path / "cpu") == []


def test_bad_target_and_formats_name_the_field(tiny_export, tmp_path):
    with pytest.raises(ConfigError, match="target"):
        publish(tiny_export, tmp_path / "r", "tpu")
    with pytest.raises(ConfigError, match="formats"):
        publish(tiny_export, tmp_path / "r", "cpu", formats=("tensorrt",))
    with pytest.raises(ConfigError, match="keep_versions"):
        ServingPolicy(serve_versions=2, keep_versions=1)
