"""Frequency-aware rare-ID handling: only IDs rarer than the threshold are replaced, and only in training batches."""

import numpy as np
import pytest

from duet_sdk.data.batching import collate
from duet_sdk.data.synthetic_longtail import LongTailConfig, generate_longtail
from duet_sdk.training.rare_ids import UNKNOWN_ID, IdCounts, RareIdDropout


@pytest.fixture(scope="module")
def world():
    return generate_longtail(LongTailConfig(num_users=200, num_items=3000, seed=5))


def test_id_counts_look_up_seen_and_unseen_ids():
    counts = IdCounts.of(np.array([5, 7, 7, 9, 9, 9]))
    assert counts.lookup(np.array([[9, 7], [5, 4]])).tolist() == [[3, 2], [1, 0]]


def test_every_rare_id_is_replaced_and_every_frequent_one_kept(world):
    rows = world.click_train
    dropout = RareIdDropout(world.table, rows, ("item_id",), min_count=3, dropout=1.0, seed=0)
    assert 0.2 < dropout.rare_fraction("item_id") < 1.0  # a long tail: many items are rare, not all
    batch = collate(world.table, rows, np.arange(256))
    out = dropout(batch)
    raw, new = batch["item_sparse"][:, 0].numpy(), out["item_sparse"][:, 0].numpy()
    rare = dropout.counts["item_id"].lookup(raw) < 3
    assert rare.any() and (~rare).any()
    assert (new[rare] == UNKNOWN_ID).all() and (new[~rare] == raw[~rare]).all()
    assert (out["item_sparse"][:, 1:] == batch["item_sparse"][:, 1:]).all()  # other fields untouched
    events, column = batch["click_ids"].numpy(), world.schema.event_fields.index("item_id")
    real = np.arange(events.shape[1])[None, :] >= events.shape[1] - batch["click_len"].numpy()[:, None]
    ev_rare = (dropout.counts["item_id"].lookup(events[..., column]) < 3) & real
    assert (out["click_ids"].numpy()[..., column][ev_rare] == UNKNOWN_ID).all()
    assert (batch["item_sparse"][:, 0].numpy() == raw).all()  # the input batch is not modified in place


def test_dropout_probability_zero_changes_nothing(world):
    dropout = RareIdDropout(world.table, world.click_train, ("item_id", "user_id"), min_count=100, dropout=0.0)
    batch = collate(world.table, world.click_train, np.arange(64))
    out = dropout(batch)
    assert all((out[k] == batch[k]).all() for k in batch)
