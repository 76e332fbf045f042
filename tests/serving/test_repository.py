"""The repository writer: configs from protobuf that round-trip, both targets, releases (per-release
models with pinned ensembles, aliases of the current release), atomic increasing release numbers with
lineage and pruning, digests checked at publish, half-written releases cleaned up, partial exports
refused, and only gated checkpoints published."""

import json
import shutil

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from duet_sdk.errors import ArtifactError, CheckpointError, ConfigError
from duet_sdk.interface import DOWNSTREAM, ENSEMBLES, FRESH, PARAMETER, UPSTREAM, ServingInterface, release_model
from duet_sdk.serving import releases
from duet_sdk.serving.config import ServingPolicy, read_config
from duet_sdk.serving.repository import publish

COMPONENTS = ("click_encoder", "conv_encoder", "ranker")


def on_disk(repo) -> list[int]:
    """Release numbers with a ranker directory on disk."""
    return sorted(int(p.name.rsplit("_v", 1)[1]) for p in repo.glob("ranker_v*"))


def v1(model: str) -> str:
    return release_model(model, 1)


def test_every_config_round_trips_through_protobuf(cpu_repository):
    for model in (*(v1(m) for m in (*COMPONENTS, *ENSEMBLES)), *ENSEMBLES):
        text = (cpu_repository / model / "config.pbtxt").read_text()
        message = text_format.Parse(text, pb.ModelConfig())
        assert message.name == model
        assert text_format.MessageToString(message) == text
        assert text_format.Parse(text_format.MessageToString(message), pb.ModelConfig()) == message


def test_cpu_components_run_under_the_python_backend_with_batching_warmup_and_version_policy(cpu_repository):
    for model in COMPONENTS:
        config = read_config(cpu_repository / v1(model) / "config.pbtxt")
        assert config.backend == "python" and config.parameters["runtime"].string_value == "onnxruntime"
        assert config.max_batch_size == 16 and config.HasField("dynamic_batching")
        assert config.dynamic_batching.max_queue_delay_microseconds == 0  # the latency-sensible default
        assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
        assert list(config.version_policy.specific.versions) == [1]
        assert config.model_warmup and config.model_warmup[0].batch_size == 1
        version = cpu_repository / v1(model) / "1"
        assert {"model.py", "model.onnx", "signature.json", "lineage.json"} <= {p.name for p in version.iterdir()}
        signature = json.loads((version / "signature.json").read_text())
        assert signature["sha256"]["model.onnx"] == releases.release(releases.read_index(cpu_repository), 1)[
            "models"][model]["sha256"]["model.onnx"]
    encoder = read_config(cpu_repository / v1("click_encoder") / "config.pbtxt")
    ragged = {i.name for i in encoder.input if i.allow_ragged_batch}
    assert ragged == {"click_ids", "click_ts", "conv_ids", "conv_ts"}
    request_time = next(i for i in encoder.input if i.name == "request_time")
    assert list(request_time.dims) == [1] and request_time.HasField("reshape")


def test_ensembles_of_a_release_pin_its_components_and_the_aliases_copy_the_current_release(cpu_repository):
    configs = {name: read_config(cpu_repository / v1(name) / "config.pbtxt") for name in ENSEMBLES}
    for name, config in configs.items():
        assert config.platform == "ensemble" and list(config.version_policy.specific.versions) == [1]
        assert {s.model_version for s in config.ensemble_scheduling.step} == {1}
        alias = read_config(cpu_repository / name / "config.pbtxt")
        assert alias.name == name and alias.ensemble_scheduling == config.ensemble_scheduling
        assert list(alias.version_policy.specific.versions) == [1] and (cpu_repository / name / "1").is_dir()

    def steps(name):
        return [s.model_name for s in configs[name].ensemble_scheduling.step]

    assert steps(UPSTREAM) == [v1("duet_upstream_guard"), v1("click_encoder"), v1("conv_encoder")]
    assert steps(DOWNSTREAM) == [v1("ranker")]
    assert steps(FRESH) == [v1("duet_fresh_guard"), v1("click_encoder"), v1("conv_encoder"), v1("ranker")]
    for name in (UPSTREAM, FRESH):  # the parallel encoders start only after the guard passed the request
        for step in configs[name].ensemble_scheduling.step[1:3]:
            assert step.input_map["request_time"] == "request_time_checked"
        guard = read_config(cpu_repository / v1(f"{name}_guard") / "config.pbtxt")
        assert guard.backend == "python" and guard.parameters["runtime"].string_value == "guard"
        assert (
            list(guard.version_policy.specific.versions) == [1]
            and (cpu_repository / v1(f"{name}_guard") / "1").is_dir()
        )
        assert {i.name for i in guard.input} == {i.name for i in configs[name].input}
    assert {o.name for o in configs[UPSTREAM].output} == {
        "click_codes",
        "click_embedding",
        "conv_codes",
        "conv_embedding",
    }
    assert {i.name for i in configs[DOWNSTREAM].input} == {
        "static_sparse",
        "static_dense",
        "item_sparse",
        "item_dense",
        "click_codes",
        "conv_codes",
    }
    assert {o.name for o in configs[FRESH].output} == {"scores", "click_codes", "conv_codes"}
    assert "click_codes" not in {i.name for i in configs[FRESH].input}
    interface = ServingInterface.from_json(configs[UPSTREAM].parameters[PARAMETER].string_value)
    assert interface.tasks == ("offsite_conversion", "link_click") and interface.version == "1"
    assert interface.streams["click"].max_len == 8 and interface.embeddings["conv"].levels == 3


def test_releases_increase_older_ones_are_pruned_but_never_a_loaded_one_and_lineage_is_recorded(tiny_export, tmp_path):
    repo = tmp_path / "repo"
    policy = ServingPolicy(serve_versions=1, keep_versions=1)
    assert [publish(tiny_export, repo, "cpu", policy).version for _ in range(3)] == [1, 2, 3]
    assert on_disk(repo) == [1, 3]  # 1 is current and loaded (no server swapped yet), 3 the target
    index = releases.read_index(repo)
    assert (index["current"], index["loaded"], index["target"]) == (1, [1], 3)
    assert [e["status"] for e in index["releases"]] == ["ready", "pruned", "ready"]
    assert not any(p.name.startswith(".") and p.is_dir() for p in repo.iterdir())  # no staging leftovers
    assert sorted(p.name for p in (repo / UPSTREAM).iterdir()) == ["1", "config.pbtxt"]
    sources = index["releases"][-1]["models"]["ranker"]["sources"]
    assert {s["role"] for s in sources} == {"ranker", "codec"} and all(s["digest"] for s in sources)
    lineage = json.loads((repo / release_model("ranker", 3) / "3" / "lineage.json").read_text())
    assert lineage["version"] == 3 and lineage["artifact"]["source_checkpoints"] == sources


def test_a_failed_publish_leaves_no_partial_release(tiny_export, tmp_path, monkeypatch):
    from duet_sdk.serving import repository

    repo = tmp_path / "repo"
    publish(tiny_export, repo, "cpu")

    def broken_copy(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(repository.shutil, "copy2", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        publish(tiny_export, repo, "cpu")
    assert on_disk(repo) == [1] and [e["version"] for e in releases.read_index(repo)["releases"]] == [1]
    assert not any(p.name.startswith(".staging") for p in repo.iterdir())


def test_a_half_written_release_is_removed_and_its_number_reused_and_the_last_good_release_kept(tiny_export, tmp_path):
    repo = tmp_path / "repo"
    publish(tiny_export, repo, "cpu")
    # what a publish killed after some renames (before repository.json) leaves behind
    (repo / release_model("ranker", 2) / "2").mkdir(parents=True)
    (repo / release_model("ranker", 2) / "2" / "model.onnx").write_bytes(b"half")
    (repo / UPSTREAM / "2").mkdir()
    (repo / ".staging-ranker_v2-x").mkdir()
    published = publish(tiny_export, repo, "cpu", ServingPolicy(serve_versions=1, keep_versions=1))
    assert published.version == 2  # not 3: the unrecorded number is reused, never skipped
    assert on_disk(repo) == [1, 2]  # release 1 (current, the last good one) is not pruned
    assert (repo / release_model("ranker", 2) / "2" / "model.onnx").read_bytes() == (
        tiny_export / "artifacts" / "ranker" / "onnx" / "model.onnx"
    ).read_bytes()
    assert not (repo / ".staging-ranker_v2-x").exists() and not (repo / UPSTREAM / "2").exists()


def test_a_tampered_artifact_is_refused_at_publish_and_nothing_is_written(tiny_export, tmp_path):
    export = shutil.copytree(tiny_export, tmp_path / "export")
    weights = export / "artifacts" / "ranker" / "onnx" / "model.onnx"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x40  # one flipped bit, same size
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"ranker \(onnx\).*model.onnx has sha256 .* the manifest records"):
        publish(export, tmp_path / "repo", "cpu")
    assert releases.read_index(tmp_path / "repo")["releases"] == [] and on_disk(tmp_path / "repo") == []
    assert not any(p.name.startswith(".staging") for p in (tmp_path / "repo").iterdir())


def test_a_partial_export_is_refused_naming_the_missing_file(tiny_export, tmp_path):
    export = shutil.copytree(tiny_export, tmp_path / "export")
    (export / "artifacts" / "conv_encoder" / "onnx" / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"partial export.*conv_encoder \(onnx\).*model.onnx"):
        publish(export, tmp_path / "repo", "cpu")
    (export / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        publish(export, tmp_path / "repo", "cpu")


def test_checkpoints_not_accepted_by_the_gate_are_not_published(tiny_export, tmp_path):
    export = shutil.copytree(tiny_export, tmp_path / "export")
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["artifacts"][0]["source_checkpoints"][0]["accepted"] = False  # as written by `duet-export --force`
    (export / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="not accepted by the gate"):
        publish(export, tmp_path / "repo", "cpu")
    assert not (tmp_path / "repo").exists() or on_disk(tmp_path / "repo") == []


def test_cpu_target_refuses_a_gpu_export_and_gpu_target_refuses_fused_encoders(tiny_export, gpu_export, tmp_path):
    with pytest.raises(ConfigError, match="fused models for the cpu target"):
        publish(gpu_export, tmp_path / "cpu", "cpu")
    with pytest.raises(ConfigError, match="split into prep \\+ engine"):
        publish(tiny_export, tmp_path / "gpu", "gpu")
    assert not (tmp_path / "cpu").exists() or on_disk(tmp_path / "cpu") == []


def test_bad_target_and_formats_name_the_field(tiny_export, tmp_path):
    with pytest.raises(ConfigError, match="target"):
        publish(tiny_export, tmp_path / "r", "tpu")
    with pytest.raises(ConfigError, match="formats"):
        publish(tiny_export, tmp_path / "r", "cpu", formats=("tensorrt",))
    with pytest.raises(ConfigError, match="keep_versions"):
        ServingPolicy(serve_versions=3, keep_versions=2)
