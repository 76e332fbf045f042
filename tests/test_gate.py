"""The checkpoint gate: verdicts, reasons, persistence, and safety under concurrent submitters."""

import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from duet_sdk.checkpoint import save_checkpoint
from duet_sdk.errors import CheckpointError, ConfigError, GateRejected
from duet_sdk.gate import CheckpointRegistry, GateDecision, GatePolicy

REPO = Path(__file__).resolve().parents[1]


def _ckpt(parent, name, ne, kind="click", interface=None, primary="click", like=0.9):
    config = {"kind": kind, "interface": interface or {"schema": "v1", "output_dim": 4}, "model": {"hidden": 8}}
    metrics = {"val_ne": {"click": ne, "like": like}, "primary_task": primary}
    lineage = {"predecessor": None, "data": {}, "step": 1, "seed": 0}
    return save_checkpoint(parent / "ckpts", name, {"w": torch.randn(3, 4)}, config, metrics, lineage)


@pytest.fixture
def registry(tmp_path):
    return CheckpointRegistry(tmp_path / "registry", "user_click")


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_gate_accepts_the_first_valid_checkpoint(tmp_path, registry):
    first = _ckpt(tmp_path, "a", 0.8)
    decision = registry.submit(first.path)
    assert decision.accepted and decision.reason == "no accepted predecessor"
    assert decision.digest == first.digest and decision.val_ne == 0.8 and decision.baseline_digest is None
    assert registry.is_accepted(first.digest)


def test_gate_accepts_an_improvement(tmp_path, registry):
    first = _ckpt(tmp_path, "a", 0.8)
    registry.submit(first)
    decision = registry.submit(_ckpt(tmp_path, "b", 0.75))
    assert decision.accepted and decision.reason.startswith("improved")
    assert decision.baseline_digest == first.digest and decision.baseline_ne == 0.8


def test_gate_accepts_a_small_regression_within_threshold(tmp_path, registry):
    registry.submit(_ckpt(tmp_path, "a", 0.8))
    decision = registry.submit(_ckpt(tmp_path, "b", 0.805))
    assert decision.accepted and decision.reason.startswith("within threshold")


def test_gate_rejects_a_regression_beyond_threshold_stating_both_nes(tmp_path, registry):
    registry.submit(_ckpt(tmp_path, "a", 0.8))
    decision = registry.submit(_ckpt(tmp_path, "b", 0.82))
    assert not decision.accepted
    assert "0.82" in decision.reason and "0.8 " in decision.reason
    assert "+2.50%" in decision.reason and "1.00%" in decision.reason


def test_gate_threshold_comes_from_the_policy(tmp_path, registry):
    registry.submit(_ckpt(tmp_path, "a", 0.8))
    assert registry.submit(_ckpt(tmp_path, "b", 0.82), GatePolicy(max_relative_regression=0.05)).accepted
    assert not registry.submit(_ckpt(tmp_path, "c", 0.8201), GatePolicy(max_relative_regression=0.0)).accepted


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, "0.1", True])
def test_gate_policy_rejects_invalid_thresholds(bad):
    with pytest.raises(ConfigError):
        GatePolicy(max_relative_regression=bad)


def test_gate_rejects_a_corrupt_checkpoint_and_records_it(tmp_path, registry):
    registry.submit(_ckpt(tmp_path, "a", 0.8))
    bad = _ckpt(tmp_path, "b", 0.7)
    _flip_byte(bad.path / "model.safetensors")
    decision = registry.submit(bad.path)
    assert not decision.accepted and decision.digest is None
    assert "corrupt" in decision.reason and "digest mismatch" in decision.reason
    assert len(registry.decisions()) == 2 and registry.latest_accepted().path.name == "a"


def test_gate_rejects_a_missing_checkpoint(tmp_path, registry):
    decision = registry.submit(tmp_path / "nope")
    assert not decision.accepted and "no checkpoint directory" in decision.reason


def test_gate_rejects_an_incompatible_interface_naming_the_key(tmp_path, registry):
    registry.submit(_ckpt(tmp_path, "a", 0.8))
    decision = registry.submit(_ckpt(tmp_path, "b", 0.7, interface={"schema": "v1", "output_dim": 8}))
    assert not decision.accepted and "incompatible config" in decision.reason
    assert "['output_dim']" in decision.reason


def test_gate_rejects_a_different_kind(tmp_path, registry):
    registry.submit(_ckpt(tmp_path, "a", 0.8))
    decision = registry.submit(_ckpt(tmp_path, "b", 0.7, kind="conv"))
    assert not decision.accepted and "'conv'" in decision.reason and "'click'" in decision.reason


def test_gate_rejects_a_changed_primary_task(tmp_path, registry):
    registry.submit(_ckpt(tmp_path, "a", 0.8))
    decision = registry.submit(_ckpt(tmp_path, "b", 0.8, primary="like", like=0.5))
    assert not decision.accepted and "primary task 'like'" in decision.reason


def test_gate_rejects_nan_primary_ne_even_without_a_baseline(tmp_path, registry):
    decision = registry.submit(_ckpt(tmp_path, "a", float("nan")))
    assert not decision.accepted and "not finite" in decision.reason
    assert registry.latest_accepted() is None


def test_gate_ignores_nan_on_a_secondary_task(tmp_path, registry):
    assert registry.submit(_ckpt(tmp_path, "a", 0.8, like=float("nan"))).accepted


def test_decisions_are_persisted_and_reloaded_by_a_new_registry(tmp_path, registry):
    made = [registry.submit(_ckpt(tmp_path, n, ne)) for n, ne in [("a", 0.8), ("b", 0.9), ("c", 0.79)]]
    reloaded = CheckpointRegistry(tmp_path / "registry", "user_click")
    assert reloaded.decisions() == made
    stored = json.loads((tmp_path / "registry" / "user_click" / "registry.json").read_text())
    assert stored["model"] == "user_click" and len(stored["decisions"]) == 3


def test_latest_accepted_skips_rejected_ones(tmp_path, registry):
    assert registry.latest_accepted() is None
    good = _ckpt(tmp_path, "a", 0.8)
    registry.submit(good)
    registry.submit(_ckpt(tmp_path, "b", 0.95))
    registry.submit(_ckpt(tmp_path, "c", float("nan")))
    latest = registry.latest_accepted()
    assert latest.digest == good.digest and latest.primary_ne == 0.8


def test_latest_accepted_raises_if_the_accepted_checkpoint_was_tampered(tmp_path, registry):
    good = _ckpt(tmp_path, "a", 0.8)
    registry.submit(good)
    _flip_byte(good.path / "model.safetensors")
    with pytest.raises(CheckpointError):
        registry.latest_accepted()
    with pytest.raises(CheckpointError):
        registry.submit(_ckpt(tmp_path, "b", 0.7))
    assert len(registry.decisions()) == 1


@pytest.mark.parametrize("ne", [0.7, 0.95])
def test_resubmitting_a_decided_checkpoint_repeats_the_verdict_without_recording(tmp_path, registry, ne):
    registry.submit(_ckpt(tmp_path, "a", 0.8))
    second = _ckpt(tmp_path, "b", ne)
    first_verdict = registry.submit(second)
    again = registry.submit(second.path)
    assert again.accepted == first_verdict.accepted and again.digest == second.digest
    assert again.reason == f"already decided: {first_verdict.reason}"
    assert len(registry.decisions()) == 2


def test_raise_on_reject_raises_gate_rejected_carrying_the_decision(tmp_path, registry):
    registry.submit(_ckpt(tmp_path, "a", 0.8))
    with pytest.raises(GateRejected) as info:
        registry.submit(_ckpt(tmp_path, "b", 0.9), raise_on_reject=True)
    assert isinstance(info.value.decision, GateDecision) and not info.value.decision.accepted
    assert len(registry.decisions()) == 2
    assert registry.submit(_ckpt(tmp_path, "c", 0.7), raise_on_reject=True).accepted


def test_gate_decision_round_trips_through_dict_and_prints_one_line(tmp_path, registry):
    registry.submit(_ckpt(tmp_path, "a", 0.815))
    decision = registry.submit(_ckpt(tmp_path, "b", 0.8123))
    assert GateDecision.from_dict(decision.to_dict()) == decision
    assert str(decision).startswith("ACCEPTED click b NE 0.8123 (baseline 0.8150): improved")
    rejected = registry.submit(tmp_path / "missing")
    assert str(rejected).startswith("REJECTED ? missing NE n/a: corrupt") and "\n" not in str(rejected)


def test_registries_of_different_models_are_independent(tmp_path, registry):
    registry.submit(_ckpt(tmp_path, "a", 0.8))
    other = CheckpointRegistry(tmp_path / "registry", "user_conv")
    assert other.submit(_ckpt(tmp_path, "b", 0.9, kind="conv")).accepted
    assert len(registry.decisions()) == 1 and len(other.decisions()) == 1


def test_a_corrupt_registry_file_raises_checkpoint_error(tmp_path, registry):
    registry.submit(_ckpt(tmp_path, "a", 0.8))
    registry.file.write_text("{broken")
    with pytest.raises(CheckpointError, match="corrupt registry"):
        registry.decisions()


@pytest.mark.parametrize("model", ["", "a/b", ".."])
def test_registry_rejects_bad_model_names(tmp_path, model):
    with pytest.raises(ConfigError):
        CheckpointRegistry(tmp_path, model)


def _assert_consistent_chain(decisions, digests):
    """Every decision was judged against the accepted checkpoint recorded just before it."""
    assert sorted(d.digest for d in decisions) == sorted(digests)
    last = None
    for d in decisions:
        assert d.baseline_digest == (last.digest if last else None)
        if last is not None:
            assert d.accepted == (d.val_ne <= last.val_ne * 1.01)
        last = d if d.accepted else last


def test_concurrent_submits_from_threads_lose_no_decisions(tmp_path, registry):
    ckpts = [_ckpt(tmp_path, f"t{i}", 0.8 + 0.01 * ((i * 3) % 5)) for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda c: CheckpointRegistry(registry.dir.parent, registry.model).submit(c), ckpts))
    _assert_consistent_chain(registry.decisions(), [c.digest for c in ckpts])


def test_concurrent_submits_from_processes_lose_no_decisions(tmp_path, registry):
    ckpts = [_ckpt(tmp_path, f"p{i}", 0.8 - 0.01 * i) for i in range(3)]
    script = "import sys; from duet_sdk.gate import CheckpointRegistry as R; R(*sys.argv[1:3]).submit(sys.argv[3])"
    args = [sys.executable, "-c", script, str(registry.dir.parent), registry.model]
    procs = [subprocess.Popen([*args, str(c.path)], cwd=REPO) for c in ckpts]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    _assert_consistent_chain(registry.decisions(), [c.digest for c in ckpts])


def test_gate_rejects_a_checkpoint_without_validation_ne(tmp_path, registry):
    config = {"kind": "click", "interface": {}, "model": {}}
    lineage = {"predecessor": None, "data": {}, "step": 1, "seed": 0}
    saved = save_checkpoint(tmp_path / "ckpts", "codec", {"w": torch.ones(2)}, config, {"relative_mse": 0.1}, lineage)
    decision = registry.submit(saved)
    assert not decision.accepted and "no val_ne" in decision.reason


@pytest.mark.parametrize("ne", [1.0, 1.3])
def test_gate_rejects_a_first_checkpoint_no_better_than_the_base_rate(tmp_path, registry, ne):
    decision = registry.submit(_ckpt(tmp_path, "a", ne))
    assert not decision.accepted
    assert "no better than the base rate" in decision.reason and f"{ne:g}" in decision.reason
    assert registry.latest_accepted() is None


def test_gate_rejects_a_base_rate_model_even_within_the_regression_threshold(tmp_path, registry):
    assert registry.submit(_ckpt(tmp_path, "a", 0.999)).accepted
    decision = registry.submit(_ckpt(tmp_path, "b", 1.0001), GatePolicy(max_relative_regression=0.5))
    assert not decision.accepted and "base rate" in decision.reason


def test_gate_base_rate_limit_is_configurable_and_can_be_turned_off(tmp_path, registry):
    assert not registry.submit(_ckpt(tmp_path, "a", 0.96), GatePolicy(max_primary_ne=0.95)).accepted
    assert registry.submit(_ckpt(tmp_path, "b", 1.2), GatePolicy(max_primary_ne=None)).accepted


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan"), True, "1.0"])
def test_gate_policy_rejects_invalid_base_rate_limits(bad):
    with pytest.raises(ConfigError, match="max_primary_ne"):
        GatePolicy(max_primary_ne=bad)
