import math

import pytest
import torch

from duet_sdk.data.synthetic import SyntheticConfig, generate
from duet_sdk.models import UpstreamNet
from duet_sdk.training.presets import upstream_config
from duet_sdk.training.trainer import EventBatches, TrainConfig, evaluate, masked_bce, train


def test_masked_bce_matches_a_hand_computation():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    weights = torch.tensor([1.0, 0.5])
    task0 = (math.log(2.0) + (1.0 + math.log1p(math.exp(-1.0)))) / 2  # both rows apply
    task1 = 2.0 + math.log1p(math.exp(-2.0))  # only row 0 applies: -log(1 - sigmoid(2))
    expected = task0 + 0.5 * task1
    assert masked_bce(logits, labels, mask, weights).item() == pytest.approx(expected, abs=1e-6)


def test_a_task_with_no_applicable_rows_adds_no_loss():
    logits = torch.tensor([[3.0, -3.0]])
    loss = masked_bce(logits, torch.zeros(1, 2), torch.tensor([[0.0, 1.0]]), torch.ones(2))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-3.0)), abs=1e-6)


@pytest.fixture(scope="module")
def small_world():
    return generate(SyntheticConfig(num_users=1200, examples_per_user=8, ranker_examples_per_user=1, seed=3))


def test_short_training_run_lowers_validation_ne(small_world):
    torch.manual_seed(0)
    config = upstream_config("conv", small_world.schema, "demo")
    train_set, val_set = small_world.conv_train, small_world.conv_val
    model = UpstreamNet(config)
    val = EventBatches(small_world.table, val_set)
    before = evaluate(model, val, train_set.downsample_rate)[config.primary_task]
    result = train(model, {t.name: t.weight for t in config.tasks}, config.primary_task,
                   EventBatches(small_world.table, train_set), val, TrainConfig(epochs=1, progress=False))
    after = result.val_ne[config.primary_task]
    assert after < before - 0.02, (before, after)
    assert after < 1.0


def test_training_keeps_the_best_epochs_weights(small_world):
    config = upstream_config("click", small_world.schema, "demo")
    val = EventBatches(small_world.table, small_world.click_val)
    result = train(UpstreamNet(config), {t.name: t.weight for t in config.tasks}, config.primary_task,
                   EventBatches(small_world.table, small_world.click_train), val, TrainConfig(epochs=2, progress=False))
    again = evaluate(result.model, val, small_world.click_train.downsample_rate)
    assert again == pytest.approx(result.val_ne, abs=1e-9)
    best = min(h[f"val_ne/{config.primary_task}"] for h in result.history)
    assert result.val_ne[config.primary_task] == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", -1), ("lr", 0.0)])
def test_bad_train_config_raises_config_error(field, value):
    from duet_sdk.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})
