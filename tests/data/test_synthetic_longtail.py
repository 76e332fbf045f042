"""The long-tail benchmark looks like a real log: a global temporal split, newcomers, a Zipf tail, heavy users."""

import numpy as np
import pytest

from duet_sdk.data.synthetic import ITEM_ID_BASE
from duet_sdk.data.synthetic_longtail import LongTailConfig, describe, generate_longtail
from duet_sdk.errors import ConfigError

CONFIG = LongTailConfig(num_users=600, num_items=5000, seed=2)


@pytest.fixture(scope="module")
def data():
    return generate_longtail(CONFIG)


def test_training_rows_precede_the_split_and_validation_rows_follow_it(data):
    t1 = CONFIG.split_time
    for name in ("click", "conv", "ranker"):
        assert getattr(data, f"{name}_train").request_time.max() < t1 <= getattr(data, f"{name}_val").request_time.min()


def test_validation_meets_new_items_and_new_users(data):
    shape = describe(data, CONFIG)
    assert shape["val_rows_with_unseen_item"] > 0.1 and shape["val_rows_with_new_user"] > 0.05
    assert shape["items_launched_after_split"] > 0.05 and shape["users_signed_up_after_split"] > 0.02


def test_nothing_is_shown_before_its_launch_or_to_a_user_before_sign_up(data):
    for rows in (data.ranker_train, data.ranker_val):
        items = rows.item_sparse[:, 0] - ITEM_ID_BASE
        assert (data.item_launch[items] <= rows.request_time).all()
        assert (data.user_signup[rows.user_index] <= rows.request_time).all()


def test_items_have_a_long_tail_and_users_heavy_tailed_activity(data):
    shape = describe(data, CONFIG)
    assert shape["train_items_seen_once_fraction"] > 0.4
    assert shape["top_1pct_users_share_of_events"] > 0.05  # 1 % of users own well over 1 % of the events
    assert 0.005 < data.ranker_val.positive_rate()["offsite_conversion"] < 0.1  # sparse primary labels


def test_the_raw_user_id_is_a_static_feature_only_when_asked_for():
    assert "user_id" not in CONFIG.schema().static_sparse
    with_id = generate_longtail(LongTailConfig(num_users=50, num_items=500, static_user_id=True, seed=0))
    assert with_id.schema.static_sparse[0] == "user_id"
    assert len(np.unique(with_id.table.static_sparse[:, 0])) == 50


def test_same_seed_same_data(data):
    again = generate_longtail(CONFIG)
    assert np.array_equal(again.ranker_train.labels, data.ranker_train.labels)
    assert np.array_equal(again.table.streams["conv"].ids, data.table.streams["conv"].ids)


@pytest.mark.parametrize(
    "field, value", [("val_days", 0), ("days", 5), ("late_item_fraction", 1.5), ("downsample_rate", 0.0)]
)
def test_bad_config_raises_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        LongTailConfig(**{field: value})
