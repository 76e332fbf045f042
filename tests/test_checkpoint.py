"""Checkpoint directories: round trip, atomic writes, refusal to overwrite, digest verification."""

import json
import math
import os

import pytest
import torch

from duet_sdk import checkpoint as ckpt_mod
from duet_sdk.atomic_io import atomic_write_json
from duet_sdk.checkpoint import (
    CONTENT_FILES,
    DIGEST_FILE,
    compute_digest,
    load_checkpoint,
    save_checkpoint,
)
from duet_sdk.errors import CheckpointError, ConfigError


def _inputs(ne=0.8):
    config = {"kind": "click", "interface": {"schema": "v1", "output_dim": 4}, "model": {"hidden": [8, 4]}}
    metrics = {"val_ne": {"click": ne, "like": 0.9}, "primary_task": "click", "val_loss": 0.3}
    lineage = {"predecessor": None, "data": {"train": "day-1"}, "step": 100, "seed": 7,
               "created_at": "2026-01-02T03:04:05+00:00"}
    return config, metrics, lineage


def _save(parent, name="ckpt-1", state=None, ne=0.8):
    state = {"w": torch.randn(3, 4), "b": torch.zeros(4)} if state is None else state
    return save_checkpoint(parent, name, state, *_inputs(ne))


def _flip_byte(path, offset=-1):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_save_load_round_trip_keeps_tensors_metrics_and_lineage(tmp_path):
    state = {"w": torch.randn(3, 4), "b": torch.arange(4, dtype=torch.int64)}
    saved = _save(tmp_path, state=state)
    loaded = load_checkpoint(tmp_path / "ckpt-1")
    assert loaded == saved
    assert loaded.kind == "click" and loaded.primary_task == "click" and loaded.primary_ne == 0.8
    assert loaded.val_ne == {"click": 0.8, "like": 0.9}
    assert loaded.metrics["val_loss"] == 0.3 and loaded.lineage["data"] == {"train": "day-1"}
    weights = loaded.load_state_dict()
    assert weights.keys() == state.keys()
    assert all(torch.equal(weights[k], state[k]) for k in state)
    assert sorted(p.name for p in loaded.path.iterdir()) == sorted([*CONTENT_FILES, DIGEST_FILE])


def test_save_handles_non_contiguous_and_shared_tensors(tmp_path):
    base = torch.randn(4, 6)
    state = {"t": base.t(), "view": base[1:3], "same": base}
    weights = _save(tmp_path, state=state).load_state_dict()
    assert all(torch.equal(weights[k], state[k]) for k in state)


def test_save_fills_created_at_when_missing(tmp_path):
    config, metrics, lineage = _inputs()
    del lineage["created_at"]
    saved = save_checkpoint(tmp_path, "c", {"w": torch.ones(2)}, config, metrics, lineage)
    assert load_checkpoint(saved.path).lineage["created_at"] == saved.lineage["created_at"]


def test_save_is_atomic_when_a_write_fails_midway(tmp_path, monkeypatch):
    real_write, calls = ckpt_mod.write_synced, []

    def failing_write(path, data):
        calls.append(path.name)
        if len(calls) == 3:
            raise OSError("disk full")
        real_write(path, data)

    monkeypatch.setattr(ckpt_mod, "write_synced", failing_write)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path)
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_to_overwrite_an_existing_checkpoint(tmp_path):
    first = _save(tmp_path)
    with pytest.raises(CheckpointError, match="already exists"):
        _save(tmp_path, ne=0.7)
    assert load_checkpoint(first.path).primary_ne == 0.8
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-1"]


def test_save_refuses_an_existing_empty_directory(tmp_path):
    (tmp_path / "ckpt-1").mkdir()
    with pytest.raises(CheckpointError, match="already exists"):
        _save(tmp_path)


@pytest.mark.parametrize(
    ("field", "mutate"),
    [
        ("config.kind", lambda c, m, lin: c.pop("kind")),
        ("config.interface", lambda c, m, lin: c.update(interface=[1])),
        ("config.model", lambda c, m, lin: c.pop("model")),
        ("metrics.val_ne", lambda c, m, lin: m.update(val_ne={})),
        ("metrics.val_ne.like", lambda c, m, lin: m["val_ne"].update(like=math.inf)),
        ("metrics.val_ne.like", lambda c, m, lin: m["val_ne"].update(like="0.9")),
        ("metrics.primary_task", lambda c, m, lin: m.update(primary_task="share")),
        ("lineage.predecessor", lambda c, m, lin: lin.pop("predecessor")),
        ("lineage.step", lambda c, m, lin: lin.update(step=-1)),
        ("lineage.seed", lambda c, m, lin: lin.update(seed=1.5)),
        ("lineage.created_at", lambda c, m, lin: lin.update(created_at="yesterday")),
        ("config", lambda c, m, lin: c["model"].update(fn=print)),
    ],
)
def test_save_rejects_invalid_inputs_naming_the_field(tmp_path, field, mutate):
    config, metrics, lineage = _inputs()
    mutate(config, metrics, lineage)
    with pytest.raises(ConfigError) as info:
        save_checkpoint(tmp_path, "c", {"w": torch.ones(2)}, config, metrics, lineage)
    assert info.value.field == field
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "state"), [("../up", {"w": torch.ones(1)}), (".hidden", {"w": torch.ones(1)}),
                                             ("ok", {"w": [1.0]})])
def test_save_rejects_bad_names_and_non_tensor_weights(tmp_path, name, state):
    with pytest.raises(ConfigError):
        save_checkpoint(tmp_path, name, state, *_inputs())


def test_nan_val_ne_is_saved_and_loaded(tmp_path):
    loaded = load_checkpoint(_save(tmp_path, ne=float("nan")).path)
    assert math.isnan(loaded.primary_ne)


def test_compute_digest_matches_the_recorded_digest_and_depends_on_content(tmp_path):
    a, b = _save(tmp_path, "a"), _save(tmp_path, "b")
    assert compute_digest(a.path) == a.digest
    assert json.loads((a.path / DIGEST_FILE).read_text())["digest"] == a.digest
    assert a.digest != b.digest


def test_corrupted_weights_byte_fails_verification(tmp_path):
    saved = _save(tmp_path)
    _flip_byte(saved.path / "model.safetensors")
    with pytest.raises(CheckpointError, match="digest mismatch") as info:
        load_checkpoint(saved.path)
    assert saved.digest in str(info.value) and "model.safetensors" in str(info.value)
    assert load_checkpoint(saved.path, verify=False).digest == saved.digest


@pytest.mark.parametrize("name", ["config.json", "metrics.json", "lineage.json"])
def test_modified_json_file_fails_verification(tmp_path, name):
    saved = _save(tmp_path)
    data = json.loads((saved.path / name).read_text())
    data["extra"] = 1
    (saved.path / name).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=f"digest mismatch.*{name}"):
        load_checkpoint(saved.path)


def test_tampered_digest_file_fails_verification(tmp_path):
    saved = _save(tmp_path)
    recorded = json.loads((saved.path / DIGEST_FILE).read_text())
    recorded["files"]["extra.bin"] = "0" * 64
    (saved.path / DIGEST_FILE).write_text(json.dumps(recorded))
    with pytest.raises(CheckpointError, match="extra.bin"):
        load_checkpoint(saved.path)


@pytest.mark.parametrize("name", [*CONTENT_FILES, DIGEST_FILE])
def test_missing_file_raises_naming_it(tmp_path, name):
    saved = _save(tmp_path)
    os.remove(saved.path / name)
    with pytest.raises(CheckpointError, match=f"missing {name}"):
        load_checkpoint(saved.path, verify=False)


def test_missing_directory_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        load_checkpoint(tmp_path / "nope")


def test_unparsable_json_raises_naming_the_file(tmp_path):
    saved = _save(tmp_path)
    (saved.path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt config.json"):
        load_checkpoint(saved.path, verify=False)


def test_invalid_metrics_content_raises_checkpoint_error(tmp_path):
    saved = _save(tmp_path)
    (saved.path / "metrics.json").write_text(json.dumps({"val_ne": {}}))
    with pytest.raises(CheckpointError, match="invalid metrics.json"):
        load_checkpoint(saved.path, verify=False)


def test_truncated_weights_raise_checkpoint_error_on_load_state_dict(tmp_path):
    saved = _save(tmp_path)
    weights = saved.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(saved.path, verify=False).load_state_dict()


def test_atomic_write_json_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "state.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2, "nan": float("nan")})
    assert json.loads(target.read_text())["a"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_write_json_keeps_the_old_file_when_serialization_fails(tmp_path):
    target = tmp_path / "state.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(ConfigError):
        atomic_write_json(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
