"""The cpu runner judges every request alone: values a model is not defined on are refused with a
message naming the input and the expectation, before anything is batched (no Triton needed here)."""

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

RUNNER = Path(__file__).resolve().parents[2] / "duet_sdk" / "serving" / "runner" / "model.py"
T = 4
SPECS = [
    {"name": "request_time", "dtype": "int64", "shape": ["batch"]},
    {"name": "static_dense", "dtype": "float32", "shape": ["batch", 2]},
    {"name": "click_ts", "dtype": "int64", "shape": ["batch", "click_len"]},
    {"name": "click_len", "dtype": "int64", "shape": ["batch"]},
    {"name": "click_codes", "dtype": "int64", "shape": ["batch", 3], "range": [0, 16]},
]


@pytest.fixture(scope="module")
def runner():
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("duet_runner_checks", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def good() -> dict:
    now = 1_700_000_000
    return {"request_time": np.array([now, now], np.int64), "static_dense": np.zeros((2, 2), np.float32),
            "click_ts": np.array([[0, 0, now - 5, now], [now - 9, now - 8, now - 7, now - 1]], np.int64),
            "click_len": np.array([2, 4], np.int64), "click_codes": np.array([[0, 15, 3], [1, 2, 3]], np.int64)}


def test_a_valid_request_passes(runner):
    runner.check_values(SPECS, good())


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("click_codes", np.array([[0, 16, 3], [1, 2, 3]]), "input click_codes: expected values in [0, 16)"),
        ("click_codes", np.array([[0, 1, 3], [-1, 2, 3]]), "input click_codes: expected values in [0, 16)"),
        ("static_dense", np.array([[0, np.nan], [0, 0]], np.float32), "input static_dense: expected finite float32"),
        ("static_dense", np.array([[0, 0], [np.inf, 0]], np.float32), "input static_dense: expected finite float32"),
        ("click_len", np.array([-1, 4]), "input click_len: expected a length in [0, T=4]"),
        ("click_len", np.array([2, 5]), "input click_len: expected a length in [0, T=4]"),
        (
            "click_ts",
            np.array([[0, 0, 1_700_000_001, 1_700_000_000], [1, 2, 3, 4]]),
            "input click_ts: expected event times in [0, request_time",
        ),
        (
            "click_ts",
            np.array([[0, 0, 5, 6], [1, -2, 3, 4]]),
            "input click_ts: expected event times in [0, request_time",
        ),
        ("request_time", np.array([-1, 1_700_000_000]), "input request_time: expected Unix seconds in [0, 2**32]"),
        ("request_time", np.array([2**62, 1_700_000_000]), "input request_time: expected Unix seconds in [0, 2**32]"),
    ],
)
def test_a_value_outside_the_contract_is_refused_naming_the_input(runner, name, value, message):
    tensors = good() | {name: value.astype(good()[name].dtype)}
    with pytest.raises(runner.InvalidInput) as info:
        runner.check_values(SPECS, tensors)
    assert str(info.value).startswith(message)


def test_padding_slots_before_the_real_events_are_not_judged(runner):
    tensors = good()
    tensors["click_ts"][0, :2] = -7  # row 0 has 2 events: slots 0 and 1 are padding
    runner.check_values(SPECS, tensors)


HISTORY_SPECS = [
    {"name": "history_ids", "dtype": "int64", "shape": ["batch", "history_len", 2]},
    {"name": "history_len", "dtype": "int64", "shape": ["batch"]},
]


@pytest.mark.parametrize("lengths", [[-1, 0], [0, T + 1]])
def test_a_history_length_outside_0_to_T_is_refused_naming_it(runner, lengths):
    tensors = {"history_ids": np.zeros((2, T, 2), np.int64), "history_len": np.array(lengths, np.int64)}
    with pytest.raises(runner.InvalidInput, match=r"input history_len: expected a length in \[0, T=4\]"):
        runner.check_values(HISTORY_SPECS, tensors)


def test_a_history_longer_than_its_max_is_cut_to_the_most_recent_events_and_its_length_clamped(runner):
    ids = np.arange(2 * 7 * 2, dtype=np.int64).reshape(2, 7, 2)  # T = 7 > max 4
    tensors, sizes = {"history_ids": ids.copy(), "history_len": np.array([7, 2], np.int64)}, {"history_len": 7}
    runner.trim(HISTORY_SPECS, tensors, sizes, {"history_len": ("history_len", 4)})
    np.testing.assert_array_equal(tensors["history_ids"], ids[:, -4:])
    assert tensors["history_len"].tolist() == [4, 2] and sizes == {"history_len": 4}
    short = {"history_ids": ids[:, :3].copy(), "history_len": np.array([3, 0], np.int64)}
    runner.trim(HISTORY_SPECS, short, {"history_len": 3}, {"history_len": ("history_len", 4)})
    np.testing.assert_array_equal(short["history_ids"], ids[:, :3])  # within the max: untouched
