"""The cpu runner's padding arithmetic: histories are padded on the left (most recent event last),
candidates on the right, and cutting undoes padding exactly."""

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

RUNNER = Path(__file__).resolve().parents[2] / "duet_sdk" / "serving" / "runner" / "model.py"


@pytest.fixture(scope="module")
def runner():
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("duet_runner", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_histories_are_padded_on_the_left_and_cut_back(runner):
    ids = np.arange(1, 7).reshape(1, 3, 2)  # (B=1, T=3, F=2), most recent event last
    padded = runner.pad_to(ids, 1, 5, "left")
    assert padded.shape == (1, 5, 2) and (padded[0, :2] == 0).all() and (padded[0, 2:] == ids[0]).all()
    assert (runner.cut_to(padded, 1, 3, "left") == ids).all()


def test_candidates_are_padded_on_the_right_and_cut_back(runner):
    scores = np.array([[[0.1], [0.2]]], np.float32)  # (B=1, N=2, K=1)
    padded = runner.pad_to(scores, 1, 4, "right")
    assert padded.shape == (1, 4, 1) and (padded[0, 2:] == 0).all()
    assert (runner.cut_to(padded, 1, 2, "right") == scores).all()


def test_padding_to_a_smaller_or_equal_size_changes_nothing(runner):
    ids = np.ones((2, 3, 1))
    assert runner.pad_to(ids, 1, 3, "left") is ids and runner.pad_to(ids, 1, 2, "left") is ids
