import dataclasses

import numpy as np
import pytest

from duet_sdk.data.synthetic import ITEM_ID_BASE, SyntheticConfig, generate
from duet_sdk.errors import ConfigError

SMALL = SyntheticConfig(num_users=400, num_items=300, num_authors=20, examples_per_user=8)


@pytest.fixture(scope="module")
def data():
    return generate(SMALL)


def test_same_seed_gives_identical_data_and_another_seed_differs(data):
    again = generate(SMALL)
    other = generate(dataclasses.replace(SMALL, seed=1))
    for name in ("click", "conv"):
        assert np.array_equal(data.table.streams[name].ids, again.table.streams[name].ids)
        assert np.array_equal(data.table.streams[name].timestamps, again.table.streams[name].timestamps)
    assert np.array_equal(data.conv_val.labels, again.conv_val.labels)
    assert not np.array_equal(
        data.table.streams["click"].timestamps[:100], other.table.streams["click"].timestamps[:100]
    )


def test_click_stream_is_dense_and_conversion_stream_sparse(data):
    clicks = np.diff(data.table.streams["click"].offsets).mean()
    convs = np.diff(data.table.streams["conv"].offsets).mean()
    assert clicks > 3 * convs


def test_attributed_conversions_are_rare(data):
    rates = data.conv_val.positive_rate()
    assert 0.0 < rates["attributed_conversion"] < 0.08  # sparse (< 5 % in the default world)
    assert rates["link_click"] > rates["attributed_conversion"]


def test_clicked_items_reflect_the_users_click_traits(data):
    """Planted structure: items users clicked have higher click affinity for them than random items."""
    world, events = data.world, data.table.streams["click"]
    owner = np.repeat(np.arange(SMALL.num_users), np.diff(events.offsets))
    clicked = events.ids[:, 0] - ITEM_ID_BASE
    random_items = np.random.default_rng(0).integers(0, SMALL.num_items, len(clicked))
    assert world.click_affinity(owner, clicked).mean() > world.click_affinity(owner, random_items).mean() + 0.3


def test_click_and_conversion_traits_overlap_but_differ(data):
    world = data.world
    users = np.repeat(np.arange(50), 40)
    items = np.random.default_rng(1).integers(0, SMALL.num_items, len(users))
    correlation = np.corrcoef(world.click_affinity(users, items), world.conv_affinity(users, items))[0, 1]
    assert 0.2 < correlation < 0.8  # shared trait, plus one of each


def test_validation_users_are_disjoint_from_training_users(data):
    assert not set(data.click_train.user_index) & set(data.click_val.user_index)
    assert not set(data.conv_train.user_index) & set(data.conv_val.user_index)


def test_click_training_set_is_downsampled_and_validation_is_not(data):
    assert data.click_train.downsample_rate == SMALL.downsample_rate
    assert data.click_val.downsample_rate == 1.0 and data.conv_train.downsample_rate == 1.0


def test_synthetic_rows_exist_only_in_the_conversion_stream(data):
    assert data.conv_train.synthetic.any() and not data.click_train.synthetic.any()


@pytest.mark.parametrize(
    "field, value", [("num_users", 0), ("val_fraction", 1.5), ("downsample_rate", 0.0), ("days", 2)]
)
def test_bad_config_values_raise_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SyntheticConfig(**{field: value})
