"""The training recipe: early stopping, restoring the best state, schedule, ID regularisation."""

import argparse
import math

import numpy as np
import pytest
import torch
from torch import nn

from duet_sdk.data.events import ExampleSet
from duet_sdk.models.config import HashConfig
from duet_sdk.models.embeddings import MultiHashEmbedding
from duet_sdk.training.presets import DEFAULT_LR
from duet_sdk.training.recipe import EarlyStopping, init_output_bias, lr_factor, parameter_groups
from duet_sdk.training.recipe_args import add_recipe_arguments, train_config_from_args
from duet_sdk.training.trainer import TrainConfig, evaluate, train


class ToySource:
    """Rows with dense inputs ``x`` (N, 2) and one task ``y``; batches are {"x", "labels", "label_mask"}."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        n = len(y)
        self.x = x.astype(np.float32)
        self.examples = ExampleSet(
            ("y",), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros((n, 1), np.int64), self.x,
            y.astype(np.float32)[:, None], np.ones((n, 1), np.float32), np.zeros(n, bool),
        )

    def batches(self, batch_size, shuffle=False, seed=0):
        order = np.random.default_rng(seed).permutation(len(self.x)) if shuffle else np.arange(len(self.x))
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            yield {"x": torch.from_numpy(self.x[idx]), "labels": torch.from_numpy(self.examples.labels[idx]),
                   "label_mask": torch.from_numpy(self.examples.label_mask[idx])}


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.Linear(2, 1)
        nn.init.zeros_(self.heads.weight)

    def forward(self, batch):
        return self.heads(batch["x"])


def _sources(seed: int = 0):
    rng = np.random.default_rng(seed)
    x_train, x_val = rng.normal(size=(2048, 2)), rng.normal(size=(512, 2))
    # validation labels are the opposite of what training teaches: every step makes val NE worse
    return ToySource(x_train, x_train[:, 0] > 0), ToySource(x_val, x_val[:, 0] < 0)


def test_training_stops_early_and_restores_the_best_state_when_validation_gets_worse():
    train_source, val_source = _sources()
    config = TrainConfig(epochs=3, batch_size=64, lr=0.05, warmup_steps=0, eval_every=4, patience=2, progress=False)
    result = train(Toy(), {"y": 1.0}, "y", train_source, val_source, config)
    curve = [h["val_ne/y"] for h in result.history]
    assert result.stopped_early and result.steps == 12 < 3 * 32  # evaluations at steps 4, 8, 12: two without gain
    assert [h["step"] for h in result.history] == [4, 8, 12]
    assert curve[0] < curve[1] < curve[2]
    assert result.best_step == 4 and result.val_ne["y"] == pytest.approx(curve[0], abs=1e-12)
    again = evaluate(result.model, val_source, 1.0)  # the restored weights reproduce the best evaluation
    assert again["y"] == pytest.approx(curve[0], abs=1e-9)


def test_without_patience_training_runs_to_the_end_and_still_keeps_the_best_state():
    train_source, val_source = _sources(1)
    config = TrainConfig(epochs=1, batch_size=64, lr=0.05, warmup_steps=0, eval_every=8, patience=0, progress=False)
    result = train(Toy(), {"y": 1.0}, "y", train_source, val_source, config)
    assert not result.stopped_early and result.steps == 32 and [h["step"] for h in result.history] == [8, 16, 24, 32]
    assert result.best_step == 8
    assert evaluate(result.model, val_source, 1.0)["y"] == pytest.approx(
        min(h["val_ne/y"] for h in result.history), abs=1e-9
    )


def test_early_stopping_ignores_non_finite_scores_and_keeps_the_best_snapshot():
    model = nn.Linear(1, 1)
    stopper = EarlyStopping(patience=2)
    scores = [float("nan"), 0.9, 0.8, float("inf"), 0.85]
    stops = []
    for step, score in enumerate(scores):
        with torch.no_grad():
            model.weight.fill_(step)
        stops.append(stopper.update(score, step, model))
    assert stops == [False, False, False, False, True]
    assert stopper.best_step == 2 and stopper.best_score == 0.8
    stopper.restore(model)
    assert model.weight.item() == 2.0


def test_learning_rate_warms_up_linearly_then_decays_to_the_floor():
    factors = [lr_factor(s, 10, 110, "cosine", 0.05) for s in range(111)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[60] == pytest.approx(0.05 + 0.95 * 0.5)
    assert factors[110] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert lr_factor(60, 10, 110, "linear", 0.0) == pytest.approx(0.5)
    assert lr_factor(100, 10, 110, "constant", 0.0) == 1.0


def test_embedding_tables_get_their_own_weight_decay_and_biases_none():
    model = nn.Module()
    model.ids = MultiHashEmbedding(2, HashConfig(table_size=8, dim=4), seed=0)
    model.dense = nn.Linear(4, 3)
    groups = {g["name"]: g for g in parameter_groups(model, weight_decay=1e-5, embedding_weight_decay=1e-3)}
    assert groups["embedding"]["params"] == [model.ids.table.weight] and groups["embedding"]["weight_decay"] == 1e-3
    assert groups["dense"]["params"] == [model.dense.weight] and groups["dense"]["weight_decay"] == 1e-5
    assert groups["no_decay"]["params"] == [model.dense.bias] and groups["no_decay"]["weight_decay"] == 0.0


def test_output_bias_starts_training_at_the_base_rate():
    model = Toy()
    assert init_output_bias(model, np.array([0.2]))
    p = torch.sigmoid(model({"x": torch.zeros(1, 2)})).item()
    assert p == pytest.approx(0.2, abs=1e-6)
    assert not init_output_bias(nn.Linear(2, 1), np.array([0.2]))  # no "heads" layer: left alone


@pytest.mark.parametrize(
    "field, value",
    [
        ("eval_every", -1),
        ("min_steps", -1),
        ("patience", -1),
        ("lr_schedule", "step"),
        ("grad_clip", -1.0),
        ("embedding_weight_decay", -1e-4),
        ("rare_id_dropout", 1.5),
        ("lr", math.inf),
    ],
)
def test_bad_recipe_settings_raise_config_error_naming_the_field(field, value):
    from duet_sdk.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_validation_during_training_uses_a_sample_and_the_result_all_rows():
    train_source, val_source = _sources(2)
    val_source.subset = lambda index: ToySource(val_source.x[index], val_source.examples.labels[index, 0])
    config = TrainConfig(
        epochs=1, batch_size=64, lr=0.05, warmup_steps=0, eval_every=8, patience=0, eval_rows=100, progress=False
    )
    result = train(Toy(), {"y": 1.0}, "y", train_source, val_source, config)
    full = evaluate(result.model, val_source, 1.0)["y"]
    assert result.val_ne["y"] == pytest.approx(full, abs=1e-9)  # reported on every row
    assert all(h["val_ne/y"] != pytest.approx(full, abs=1e-6) for h in result.history)  # the curve came from the sample


def test_min_steps_repeats_passes_over_a_small_training_set():
    # 2048 rows at batch 64 are 32 steps a pass: min_steps=100 makes 4 passes (128 steps), validated
    # about MAX_EVALS times at most; without it the run is the one pass epochs=1 asks for
    train_source, val_source = _sources(2)
    config = TrainConfig(epochs=1, min_steps=100, batch_size=64, lr=0.05, warmup_steps=0, patience=0, progress=False)
    result = train(Toy(), {"y": 1.0}, "y", train_source, val_source, config)
    assert result.steps == 128 and not result.stopped_early and result.history[-1]["epoch"] == 4
    assert len(result.history) <= 64
    single = train(
        Toy(),
        {"y": 1.0},
        "y",
        train_source,
        val_source,
        TrainConfig(epochs=1, batch_size=64, lr=0.05, warmup_steps=0, patience=0, progress=False),
    )
    assert single.steps == 32


def test_learning_rate_defaults_come_per_model_and_lr_flag_overrides_all():
    parser = argparse.ArgumentParser()
    add_recipe_arguments(parser)
    args = parser.parse_args([])
    assert {m: train_config_from_args(args, 1, 0, False, m).lr for m in ("click", "conv", "ranker")} == DEFAULT_LR
    given = parser.parse_args(["--lr", "5e-4"])
    assert {train_config_from_args(given, 1, 0, False, m).lr for m in ("click", "conv", "ranker")} == {5e-4}
