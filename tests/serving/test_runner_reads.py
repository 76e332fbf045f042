"""The cpu runner's request path without Triton (a stand-in for triton_python_backend_utils): inputs are
read by name in one pass whatever their order, a missing one is refused by name, a lone request reaches
the runtime without a copy, a group is merged and cut back per request, and its Profile counts."""

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

RUNNER = Path(__file__).resolve().parents[2] / "duet_sdk" / "serving" / "runner" / "model.py"
INPUTS = [{"name": "ids", "dtype": "int64", "shape": ["batch", "click_len"]},
          {"name": "dense", "dtype": "float32", "shape": ["batch", 2]}]
OUTPUTS = [{"name": "scores", "dtype": "float32", "shape": ["batch", "click_len"]}]


def _stand_in() -> types.ModuleType:
    pb = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, array

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class InferenceResponse:
        def __init__(self, output_tensors=None, error=None):
            self.output_tensors, self.error = output_tensors, error

    class TritonError(Exception):
        def __init__(self, message, code=None):
            super().__init__(message)

    pb.Tensor, pb.InferenceResponse, pb.TritonError = Tensor, InferenceResponse, TritonError
    return pb


@pytest.fixture(scope="module")
def runner():
    saved = sys.modules.get("triton_python_backend_utils")
    sys.modules["triton_python_backend_utils"] = _stand_in()
    try:
        spec = importlib.util.spec_from_file_location("duet_runner_reads", RUNNER)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("triton_python_backend_utils")
        if saved is not None:
            sys.modules["triton_python_backend_utils"] = saved
    return module


class Request:
    def __init__(self, pb, arrays: dict):
        self._tensors = [pb.Tensor(k, v) for k, v in arrays.items()]

    def inputs(self):
        return self._tensors


class RecordingSession:
    """Scores = ids * 1.0 + dense[:, :1]; remembers what it was given."""

    def __init__(self):
        self.seen = []

    def run(self, inputs):
        self.seen.append(inputs)
        return [inputs["ids"].astype(np.float32) + inputs["dense"][:, :1]]


def model(runner, tmp_path, profile=None):
    instance = runner.TritonPythonModel()
    instance.inputs, instance.outputs, instance.pad = INPUTS, OUTPUTS, {"click_len": "left"}
    instance.max_dims, instance.trim = {"batch": 8, "click_len": 4}, {}
    instance.axes = {s["name"]: runner._symbolic_axes(s) for s in (*INPUTS, *OUTPUTS)}
    instance.session, instance.profile = RecordingSession(), profile
    return instance


def test_inputs_are_read_by_name_whatever_their_order(runner, tmp_path):
    m = model(runner, tmp_path)
    ids, dense = np.array([[1, 2, 3]]), np.ones((1, 2), np.float32)
    tensors, sizes = m._read(Request(runner.pb_utils, {"dense": dense, "ids": ids}))
    assert np.shares_memory(tensors["ids"], ids) and np.shares_memory(tensors["dense"], dense)
    assert sizes == {"batch": 1, "click_len": 3}


def test_a_missing_input_is_refused_by_name(runner, tmp_path):
    m = model(runner, tmp_path)
    with pytest.raises(runner.InvalidInput, match="input dense: expected a tensor, got none"):
        m._read(Request(runner.pb_utils, {"ids": np.array([[1]])}))


def test_a_lone_request_reaches_the_runtime_without_a_copy(runner, tmp_path):
    m = model(runner, tmp_path)
    ids, dense = np.array([[1, 2]]), np.zeros((1, 2), np.float32)
    (response,) = m.execute([Request(runner.pb_utils, {"ids": ids, "dense": dense})])
    assert np.shares_memory(m.session.seen[0]["ids"], ids) and np.shares_memory(m.session.seen[0]["dense"], dense)
    assert response.output_tensors[0].as_numpy().tolist() == [[1.0, 2.0]]


def test_a_group_is_padded_merged_and_cut_back_per_request(runner, tmp_path):
    m = model(runner, tmp_path)
    short = {"ids": np.array([[7]]), "dense": np.full((1, 2), 0.5, np.float32)}
    long = {"ids": np.array([[1, 2, 3]]), "dense": np.zeros((1, 2), np.float32)}
    first, second = m.execute([Request(runner.pb_utils, short), Request(runner.pb_utils, long)])
    assert m.session.seen[0]["ids"].tolist() == [[0, 0, 7], [1, 2, 3]]  # histories padded on the left
    assert first.output_tensors[0].as_numpy().tolist() == [[7.5]]
    assert second.output_tensors[0].as_numpy().tolist() == [[1.0, 2.0, 3.0]]


def test_the_profile_counts_executions_requests_and_nested_times(runner, tmp_path):
    profile = runner.Profile(str(tmp_path), "m_v1")
    m = model(runner, tmp_path, profile)
    good = {"ids": np.array([[1, 2]]), "dense": np.zeros((1, 2), np.float32)}
    bad = {"ids": np.array([[1, 2]]), "dense": np.full((1, 2), np.nan, np.float32)}
    m.execute([Request(runner.pb_utils, good), Request(runner.pb_utils, bad)])
    m.execute([Request(runner.pb_utils, good)])
    counters = dict(zip(runner.PROFILE_FIELDS, np.fromfile(next(tmp_path.glob("m_v1.*.prof")), dtype=np.int64)))
    assert counters["executions"] == 2 and counters["requests"] == 3 and len(m.session.seen) == 2
    assert 0 < counters["checks_ns"] + counters["run_ns"] <= counters["execute_ns"]


def test_the_onnx_runtime_session_lets_idle_pool_threads_sleep(runner, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])])
    onnx.save(helper.make_model(graph), tmp_path / "identity.onnx")
    session = runner.OnnxRuntimeSession(tmp_path / "identity.onnx", ["y"], threads=2, inter_op_threads=2)
    options = session.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert session.run({"x": np.array([1.5], np.float32)})[0].tolist() == [1.5]
