"""History-count features are taken at each row's request time, as a client would send them: on the
global temporal split a user's validation request comes after their training request, so the counts
stored in the table (up to the training request) would understate the validation history."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from duet_sdk.data.batching import collate, collate_ranker, static_features
from duet_sdk.data.eventlog import EventLogOptions, load_event_log
from duet_sdk.data.spec import preset
from duet_sdk.training.datasets import without_user_id

MOVIELENS = Path(__file__).resolve().parents[1] / "fixtures" / "movielens_3k.inter"


def _history_lengths(table, examples, stream: str) -> np.ndarray:
    """(E,) events of ``stream`` strictly before each row's request time, counted in Python."""
    events = table.streams[stream]
    out = []
    for user, t in zip(examples.user_index, examples.request_time):
        lo, hi = events.offsets[user], events.offsets[user + 1]
        out.append(int(np.sum(events.timestamps[lo:hi] < t)))
    return np.array(out)


def test_count_features_of_validation_rows_count_the_history_at_their_request():
    ds = load_event_log(MOVIELENS, preset("movielens"), EventLogOptions(split="global"))
    val, table = ds.click_val, ds.table
    rows = np.arange(len(val))
    batch = collate(table, val, rows)
    for k, stream in enumerate(table.schema.stream_names):
        expected = np.log1p(_history_lengths(table, val, stream))
        np.testing.assert_allclose(batch["static_dense"][:, k].numpy(), expected, rtol=1e-6)
    stored = np.expm1(table.static_dense[val.user_index, 0])
    assert np.mean(stored < _history_lengths(table, val, "click") - 0.5) > 0.5  # the stale values the fix replaces


def test_activity_bucket_and_ranker_batches_use_the_same_request_time_counts():
    data = without_user_id(load_event_log(MOVIELENS, preset("movielens"), EventLogOptions(split="global")))
    table, val = data.table, data.ranker_val
    assert table.schema.static_sparse == ("activity_bucket",)
    total = sum(_history_lengths(table, val, s) for s in table.schema.stream_names)
    sparse, dense = static_features(table, val.user_index, val.request_time)
    np.testing.assert_array_equal(sparse[:, 0], np.floor(np.log2(1.0 + total)))
    batch = collate_ranker(table, val, np.arange(len(val)), {})
    np.testing.assert_array_equal(batch["static_sparse"].numpy(), sparse)
    np.testing.assert_allclose(batch["static_dense"].numpy(), dense)


def test_training_rows_keep_the_counts_stored_at_their_request():
    ds = load_event_log(MOVIELENS, preset("movielens"), EventLogOptions(split="global"))
    train, table = ds.click_train, ds.table
    _, dense = static_features(table, train.user_index, train.request_time)
    np.testing.assert_allclose(dense, table.static_dense[train.user_index], rtol=1e-5)


def _history_pairs(ds, examples) -> tuple[np.ndarray, np.ndarray]:
    """(E,) bool per row: the candidate is among the user's events before the request; label of task 0."""
    events = ds.table.streams["click"]
    seen = [
        set(events.ids[events.offsets[u] : end, 0].tolist())
        for u, end in zip(
            examples.user_index, ds.table.history_end("click", examples.user_index, examples.request_time)
        )
    ]
    return np.array([item in s for item, s in zip(examples.item_sparse[:, 0], seen)]), examples.labels[:, 0]


def test_sampled_negatives_avoid_items_already_in_the_users_history():
    # each movie is rated once: a negative drawn from the user's own history is a certain 0 that
    # teaches "like what you rated before" backwards; by default negatives avoid it
    ds = load_event_log(MOVIELENS, preset("movielens"), EventLogOptions(split="global"))
    for examples in (ds.ranker_train, ds.ranker_val):
        in_history, _ = _history_pairs(ds, examples)
        assert not in_history.any()
    old = load_event_log(
        MOVIELENS, preset("movielens"), EventLogOptions(split="global", negatives_exclude_history=False)
    )
    in_history, labels = _history_pairs(old, old.ranker_train)
    assert in_history.mean() > 0.05 and not labels[in_history].any()
