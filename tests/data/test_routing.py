import numpy as np
import pytest

from duet_sdk.data.events import ExampleSet
from duet_sdk.data.routing import (
    CONV_TASKS,
    concat_examples,
    downsample_negatives,
    recalibrate,
    recalibrate_tasks,
    synthetic_conv_examples,
)
from duet_sdk.errors import DataError


def _examples(labels: np.ndarray, tasks=("ctr",)) -> ExampleSet:
    n = len(labels)
    labels = labels.reshape(n, -1).astype(np.float32)
    return ExampleSet(tasks, np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros((n, 1), np.int64),
                      np.zeros((n, 1), np.float32), labels, np.ones_like(labels), np.zeros(n, bool))


def test_recalibration_matches_the_formula_by_hand():
    # q = p / (p + (1 - p) / w): p = 0.5, w = 0.25 -> 0.5 / (0.5 + 2.0) = 0.2
    assert recalibrate(np.array([0.5]), 0.25)[0] == pytest.approx(0.2, abs=1e-12)
    assert recalibrate(np.array([0.0, 1.0]), 0.1).tolist() == [0.0, 1.0]
    assert recalibrate(np.array([0.3]), 1.0)[0] == pytest.approx(0.3, abs=1e-12)  # w = 1: identity


def test_downsampling_keeps_every_positive_and_about_w_of_negatives():
    rng = np.random.default_rng(0)
    labels = (rng.random(20_000) < 0.1).astype(np.float32)
    kept = downsample_negatives(_examples(labels), 0.25, seed=1)
    assert kept.labels.sum() == labels.sum()
    negatives_kept = (kept.labels == 0).sum() / (labels == 0).sum()
    assert negatives_kept == pytest.approx(0.25, abs=0.015)  # binomial sd ~0.003 at n=18k
    assert kept.downsample_rate == 0.25


def test_recalibration_undoes_downsampling_of_the_positive_rate():
    rng = np.random.default_rng(0)
    base_rate = 0.05
    labels = (rng.random(200_000) < base_rate).astype(np.float32)
    kept = downsample_negatives(_examples(labels), 0.2, seed=3)
    sampled_rate = kept.labels.mean()
    assert sampled_rate > 2 * base_rate  # downsampling inflates the rate ...
    assert recalibrate(np.array([sampled_rate]), 0.2)[0] == pytest.approx(
        base_rate, rel=0.03
    )  # ... recalibration undoes it


def test_recalibration_undoes_downsampling_for_a_nested_task_not_only_the_outer_one():
    # ctr ("rated") and onsite ("liked", only ever on a rated row): all-negative rows kept at w = 0.5
    rng = np.random.default_rng(0)
    group = rng.integers(0, 2, 400_000)
    rated = rng.random(len(group)) < np.where(group == 1, 0.4, 0.2)
    liked = rated & (rng.random(len(group)) < np.where(group == 1, 0.7, 0.3))
    examples = _examples(np.column_stack([rated, liked]), ("ctr", "onsite_conversion"))
    examples.user_index = group.astype(np.int64)
    kept = downsample_negatives(examples, 0.5, seed=4)
    for g in (0, 1):
        rows = kept.user_index == g
        sampled = kept.labels[rows].mean(0, keepdims=True)  # the best a model can do on the sampled rows
        truth = np.column_stack([rated, liked])[group == g].mean(0)
        q = recalibrate_tasks(sampled, 0.5)[0]
        assert q == pytest.approx(truth, abs=0.005)
        assert q[0] == pytest.approx(recalibrate(sampled[:, :1], 0.5)[0, 0], abs=1e-12)  # the outer task as before
        assert recalibrate(sampled[:, 1:], 0.5)[0, 0] < 0.92 * truth[1]  # the one-task formula underrates liked
    # a task that does not apply to a row does not enter its any-positive probability
    masked = recalibrate_tasks(np.array([[0.2, 0.9]]), 0.5, np.array([[1.0, 0.0]]))
    assert masked[0, 0] == pytest.approx(recalibrate(np.array([0.2]), 0.5)[0], abs=1e-12)


def test_downsample_rate_outside_0_1_is_rejected():
    with pytest.raises(DataError, match="downsample rate"):
        downsample_negatives(_examples(np.zeros(3)), 0.0, seed=0)


def test_synthetic_rows_are_flagged_and_only_their_unattributed_label_applies():
    rows = synthetic_conv_examples(_examples(np.ones((4, len(CONV_TASKS))), CONV_TASKS))
    column = CONV_TASKS.index("unattributed_conversion")
    assert rows.synthetic.all()
    assert rows.label_mask[:, column].tolist() == [1.0] * 4
    assert rows.label_mask.sum() == 4


def test_concat_refuses_parts_with_different_tasks():
    with pytest.raises(DataError, match="same tasks"):
        concat_examples([_examples(np.zeros(2)), _examples(np.zeros((2, 2)), ("a", "b"))])
