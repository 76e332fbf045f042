import math

import numpy as np
import pytest

from duet_sdk.metrics import normalized_entropy, relative_ne_gain


def test_ne_matches_a_hand_computation():
    y = np.array([1, 0, 0, 1])
    p = np.array([0.8, 0.2, 0.4, 0.6])
    log_loss = -(math.log(0.8) + math.log(0.8) + math.log(0.6) + math.log(0.6)) / 4
    entropy = -(0.5 * math.log(0.5) + 0.5 * math.log(0.5))
    assert normalized_entropy(y, p) == pytest.approx(log_loss / entropy, abs=1e-12)


def test_predicting_the_base_rate_gives_ne_of_one():
    y = np.array([1, 0, 0, 0, 0])
    assert normalized_entropy(y, np.full(5, 0.2)) == pytest.approx(1.0, abs=1e-12)


def test_mask_restricts_ne_to_the_rows_where_the_task_applies():
    y = np.array([1, 0, 1, 1])
    p = np.array([0.9, 0.1, 0.0001, 0.0001])
    assert normalized_entropy(y, p, mask=np.array([1, 1, 0, 0])) == normalized_entropy(y[:2], p[:2])


def test_ne_is_nan_without_both_classes():
    assert math.isnan(normalized_entropy(np.ones(3), np.full(3, 0.5)))
    assert math.isnan(normalized_entropy(np.zeros(0), np.zeros(0)))


def test_relative_gain_is_positive_when_ne_drops():
    assert relative_ne_gain(0.99, 1.0) == pytest.approx(1.0)
