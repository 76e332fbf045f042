"""The cpu runner checks every artifact file against the sha256 recorded at export before it loads
anything: a flipped bit, a missing file or a missing record fails initialization (Triton then never
marks the version ready)."""

import hashlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[2] / "duet_sdk" / "serving" / "runner" / "model.py"


@pytest.fixture(scope="module")
def runner():
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("duet_runner_digests", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _version(tmp_path, payload=b"weights" * 1000):
    (tmp_path / "model.onnx").write_bytes(payload)
    return {"sha256": {"model.onnx": hashlib.sha256(payload).hexdigest()}}


def test_untouched_artifacts_pass(runner, tmp_path):
    runner.verify_artifacts(tmp_path, _version(tmp_path))


def test_a_flipped_bit_of_the_same_size_is_refused(runner, tmp_path):
    signature = _version(tmp_path)
    data = bytearray((tmp_path / "model.onnx").read_bytes())
    data[100] ^= 0x40
    (tmp_path / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="model.onnx: sha256 .* differs from the recorded"):
        runner.verify_artifacts(tmp_path, signature)


def test_a_missing_file_or_a_signature_without_digests_is_refused(runner, tmp_path):
    signature = _version(tmp_path)
    with pytest.raises(RuntimeError, match="records no sha256"):
        runner.verify_artifacts(tmp_path, {"inputs": []})
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(RuntimeError, match="model.onnx: missing"):
        runner.verify_artifacts(tmp_path, signature)
