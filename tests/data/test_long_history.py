"""Long-history synthetic benchmark: deterministic, realistic marginals, known relevance that drives labels."""

from dataclasses import replace

import numpy as np
import pytest

from duet_sdk.data.long_history import (
    CATEGORY_ID_BASE,
    ITEM_ID_BASE,
    PARTNER,
    STREAM,
    LongHistoryConfig,
    generate_long_history,
)
from duet_sdk.errors import ConfigError

SMALL = LongHistoryConfig(num_users=200, num_items=3000, num_categories=60, median_events=150, label_window=100, seed=5)


@pytest.fixture(scope="module")
def data():
    return generate_long_history(SMALL)


def test_same_seed_gives_identical_data(data):
    again = generate_long_history(SMALL)
    assert np.array_equal(again.table.streams[STREAM].ids, data.table.streams[STREAM].ids)
    assert np.array_equal(again.ranker_val.labels, data.ranker_val.labels)


def test_histories_are_long_and_heavy_tailed_and_items_long_tailed(data):
    counts = np.diff(data.table.streams[STREAM].offsets)
    assert np.median(counts) > 80 and counts.max() > 4 * np.median(counts)
    items = np.bincount(data.table.streams[STREAM].ids[:, 0] - ITEM_ID_BASE)
    top = np.sort(items)[::-1]
    assert top[: len(top) // 100].sum() > 0.2 * top.sum()  # top 1 % of items: over a fifth of the events


def test_no_item_appears_before_its_birth(data):
    events = data.table.streams[STREAM]
    item = events.ids[:, 0] - ITEM_ID_BASE
    assert np.all(data.world.item_birth[item] <= events.timestamps)
    assert (data.world.item_birth > data.world.item_birth.min()).any()  # some items are new in the window


def test_relevance_grades_same_item_category_partner_and_padding(data):
    world = data.world
    cat = 7
    partner = int(np.flatnonzero(world.related[cat] == PARTNER)[0])
    other = int(np.flatnonzero(world.related[cat] == 0)[0])
    item = int(np.flatnonzero(world.item_category == cat)[0])
    target = np.array([ITEM_ID_BASE + item, CATEGORY_ID_BASE + cat])
    history = np.array(
        [
            [ITEM_ID_BASE + item, CATEGORY_ID_BASE + cat],
            [ITEM_ID_BASE + 10**6, CATEGORY_ID_BASE + cat],
            [ITEM_ID_BASE + 1, CATEGORY_ID_BASE + partner],
            [ITEM_ID_BASE + 1, CATEGORY_ID_BASE + other],
            [0, 0],
        ]
    )
    assert world.relevance(history, target).tolist() == [2.0, 1.0, 0.5, 0.0, 0.0]
    complements = replace(world, kind="complements")  # only the partner category is relevant
    assert complements.relevance(history, target).tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_complements_relevance_keeps_the_world_and_labels_rise_with_related_partner_behaviours(data):
    """``relevance="complements"``: the same world, histories and candidates; a row's click rate is
    higher with partner-category behaviours in its window than with none, whatever same-category
    behaviours it has."""
    other = generate_long_history(replace(SMALL, relevance="complements"))
    assert np.array_equal(other.table.streams[STREAM].ids, data.table.streams[STREAM].ids)
    assert np.array_equal(other.ranker_train.item_sparse, data.ranker_train.item_sparse)
    rows, events = other.ranker_train, other.table.streams[STREAM]
    end = other.table.history_end(STREAM, rows.user_index, rows.request_time)
    window = lambda u, e: events.ids[max(events.offsets[u], e - SMALL.label_window) : e]  # noqa: E731
    pairs = enumerate(zip(rows.user_index, end))
    partners = np.array([other.world.relevance(window(u, e), rows.item_sparse[i]).sum() for i, (u, e) in pairs])
    assert rows.labels[partners >= 3, 0].mean() > rows.labels[partners == 0, 0].mean() + 0.1


def test_labels_follow_the_relevance_of_the_history(data):
    rows = data.ranker_train
    events = data.table.streams[STREAM]
    end = data.table.history_end(STREAM, rows.user_index, rows.request_time)
    same_category = np.array(
        [
            np.any(events.ids[max(events.offsets[u], e - SMALL.label_window) : e, 1] == rows.item_sparse[i, 1])
            for i, (u, e) in enumerate(zip(rows.user_index, end))
        ]
    )
    rate = lambda mask: rows.labels[mask, 0].mean()  # noqa: E731
    assert rate(same_category) > rate(~same_category) + 0.15


def test_max_label_relevance_changes_only_the_labels_and_never_raises_one(data):
    """Same seed, labels from the most relevant behaviour: the same world, histories, candidates and
    random draws, and a logit that is never above the summed relevance's (max <= sum), so no label
    turns positive and some (rows with several relevant behaviours) turn negative."""
    other = generate_long_history(replace(SMALL, label_relevance="max"))
    assert np.array_equal(other.table.streams[STREAM].ids, data.table.streams[STREAM].ids)
    assert np.array_equal(other.ranker_train.item_sparse, data.ranker_train.item_sparse)
    assert (other.ranker_train.labels <= data.ranker_train.labels).all()
    assert other.ranker_train.labels.sum() < data.ranker_train.labels.sum()


def test_signed_labels_rise_with_related_satisfying_behaviours_and_fall_with_disappointing_ones(data):
    """``signed``: the same world, histories and candidates as ``sum``; satisfaction is half +1, half -1
    in every popularity band; a row's click rate rises with the satisfaction-signed relevance of its
    history and falls below the no-relevance rate when it is negative."""
    signed = generate_long_history(replace(SMALL, label_relevance="signed"))
    assert np.array_equal(signed.table.streams[STREAM].ids, data.table.streams[STREAM].ids)
    assert np.array_equal(signed.ranker_train.item_sparse, data.ranker_train.item_sparse)
    satisfaction = signed.world.item_satisfaction
    assert set(np.unique(satisfaction)) == {-1.0, 1.0}
    by_popularity = np.argsort(-signed.world.item_popularity)
    for band in np.array_split(satisfaction[by_popularity], 4):
        assert 0.4 < (band > 0).mean() < 0.6
    rows, events = signed.ranker_train, signed.table.streams[STREAM]
    end = signed.table.history_end(STREAM, rows.user_index, rows.request_time)
    signed_relevance = np.empty(len(end))
    for i, (u, e) in enumerate(zip(rows.user_index, end)):
        history = events.ids[max(events.offsets[u], e - SMALL.label_window) : e]
        relevance = signed.world.relevance(history, rows.item_sparse[i])
        signed_relevance[i] = (relevance * satisfaction[history[:, 0] - ITEM_ID_BASE]).sum()
    rate = lambda mask: rows.labels[mask, 0].mean()  # noqa: E731
    positive, none, negative = signed_relevance >= 2, signed_relevance == 0, signed_relevance <= -2
    assert min(positive.sum(), none.sum(), negative.sum()) > 100
    assert rate(positive) > rate(none) + 0.1
    assert rate(negative) < rate(none)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"num_items": 10, "num_categories": 20}, "LongHistoryConfig.num_items"),
        ({"new_item_fraction": 1.0}, "LongHistoryConfig.new_item_fraction"),
        ({"days": 2}, "LongHistoryConfig.days"),
        ({"label_relevance": "mean"}, "LongHistoryConfig.label_relevance"),
        ({"relevance": "semantic"}, "LongHistoryConfig.relevance"),
    ],
)
def test_bad_long_history_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        LongHistoryConfig(**overrides)
    assert info.value.field == field
