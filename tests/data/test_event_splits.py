"""Example construction from a log: the per-user time split, the global temporal split, side tables,
and the spilled (memory-mapped) dataset, checked against independent Python references."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from duet_sdk.data.batching import collate
from duet_sdk.data.eventlog import EventLogOptions, load_event_log
from duet_sdk.data.events import EventTable, StreamEvents
from duet_sdk.data.schema import EventSchema, StreamSpec, len_key, ts_key
from duet_sdk.data.spec import EventLogSpec, preset
from duet_sdk.errors import DataError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MOVIELENS = FIXTURES / "movielens_small.inter"
SPEC = preset("movielens")
SETS = ("click_train", "click_val", "conv_train", "conv_val", "ranker_train", "ranker_val")
COLUMNS = ("user_index", "request_time", "item_sparse", "item_dense", "labels", "label_mask", "synthetic")


def _by_user() -> dict[int, list[tuple[int, int, int]]]:
    """user -> [(timestamp, item, rating)] sorted by time (ties in file order)."""
    out = defaultdict(list)
    for line in MOVIELENS.read_text().splitlines()[1:]:
        u, i, r, t = map(int, line.split("\t"))
        out[u].append((t, i, r))
    return {u: sorted(events, key=lambda e: e[0]) for u, events in out.items()}


def _positives(ds, name: str) -> dict[tuple[int, int], list[float]]:
    """(raw user, item) -> labels of the rows with a positive first task."""
    examples = getattr(ds, name)
    users = ds.table.user_ids[examples.user_index]
    rows = (
        np.flatnonzero(examples.labels[:, 0] == 1)
        if name.startswith("click")
        else np.flatnonzero(examples.label_mask[:, 0] == 1)
    )
    return {(int(users[k]), int(examples.item_sparse[k, 0])): examples.labels[k].tolist() for k in rows}


def _times(split: str) -> tuple[int, int]:
    times = sorted(t for events in _by_user().values() for t, _, _ in events)
    return times[int(0.7 * len(times))], times[int(0.9 * len(times))]


@pytest.fixture(scope="module")
def per_user():
    return load_event_log(MOVIELENS, SPEC, EventLogOptions(val_fraction=0.3, session_gap=0))


@pytest.fixture(scope="module")
def global_split():
    t1, t2 = _times("global")
    options = EventLogOptions(split="global", train_end=t1, val_end=t2, session_gap=0)  # fraction cutoffs
    return load_event_log(MOVIELENS, SPEC, options), t1, t2


def test_per_user_split_labels_each_users_tail_and_keeps_users_apart(per_user):
    by_user = _by_user()
    cutoff = {u: events[min(math.floor(0.8 * len(events)), len(events) - 1)][0] for u, events in by_user.items()}
    train_users = set(per_user.table.user_ids[per_user.click_train.user_index].tolist())
    val_users = set(per_user.table.user_ids[per_user.click_val.user_index].tolist())
    assert train_users and val_users and not train_users & val_users
    for name in ("click_train", "click_val"):
        examples = getattr(per_user, name)
        users = per_user.table.user_ids[examples.user_index]
        assert np.array_equal(examples.request_time, [cutoff[u] for u in users])
    expected = {
        (u, i): [1.0, float(r >= 4)]
        for u, events in by_user.items()
        for t, i, r in events
        if t >= cutoff[u] and len(events) >= 5
    }
    got = _positives(per_user, "click_train") | _positives(per_user, "click_val")
    assert got == expected  # every pair rated at/after the cutoff, liked = rating >= 4, nothing else


def test_global_split_trains_before_t1_and_validates_on_labels_in_t1_t2(global_split):
    ds, t1, t2 = global_split
    by_user = _by_user()
    assert ds.report.split_times == (t1, t2) and "global temporal split" in ds.report.summary()
    # validation: each user requested at their first event in [T1, T2), positives exactly the pairs rated in it
    first = {u: min(t for t, _, _ in events if t >= t1) for u, events in by_user.items() if events[-1][0] >= t1}
    for name in ("click_val", "conv_val"):
        examples = getattr(ds, name)
        assert np.array_equal(examples.request_time, [first[u] for u in ds.table.user_ids[examples.user_index]])
    warm = {u for u, events in by_user.items() if events[0][0] < t1}  # users with history before T1
    val_expected = {
        (u, i): [1.0, float(r >= 4)]
        for u, events in by_user.items()
        for t, i, r in events
        if t1 <= t < t2 and u in warm
    }
    assert _positives(ds, "click_val") == val_expected
    assert warm == set(by_user) and ds.report.cold_users_not_validated == 0
    conv = _positives(ds, "conv_val")
    assert {p: labels[0] for p, labels in conv.items() if labels[0] == 1} == {
        p: 1.0 for p, (_, liked) in val_expected.items() if liked
    }
    # training: labels only from events before T1, each user's window starting at their cutoff
    train_expected = {}
    for u, events in by_user.items():
        before = [e for e in events if e[0] < t1]
        if len(before) >= 5:
            cut = before[min(math.floor(0.8 * len(before)), len(before) - 1)][0]
            train_expected |= {(u, i): [1.0, float(r >= 4)] for t, i, r in before if t >= cut}
    assert _positives(ds, "click_train") == train_expected
    assert ds.click_train.request_time.max() < t1 and ds.conv_train.request_time.max() < t1
    both = set(ds.click_train.user_index.tolist()) & set(ds.click_val.user_index.tolist())
    assert both  # one user trains and validates: time, not users, separates the sets


def test_cold_start_users_validate_only_when_asked(tmp_path):
    t1, t2 = _times("global")
    path = tmp_path / "with_cold.inter"
    cold_rows = [f"{900 + u}\t{i}\t5\t{t1 + 60 * i}" for u in range(2) for i in range(1, 4)]  # first events after T1
    path.write_text(MOVIELENS.read_text() + "\n".join(cold_rows) + "\n")
    warm = load_event_log(path, SPEC, EventLogOptions(split="global", train_end=t1, val_end=t2))
    assert warm.report.cold_users_not_validated == 2 and "2 users without enough history" in warm.report.summary()
    assert not {900, 901} & set(warm.table.user_ids[warm.click_val.user_index].tolist())
    everyone = load_event_log(path, SPEC, EventLogOptions(split="global", train_end=t1, val_end=t2, min_val_history=0))
    assert {900, 901} <= set(everyone.table.user_ids[everyone.click_val.user_index].tolist())
    assert everyone.report.cold_users_not_validated == 0


def test_global_split_histories_hold_only_events_before_the_request(global_split):
    ds, t1, _ = global_split
    by_user = _by_user()
    for name in ("click_train", "click_val", "conv_val"):
        if name != "click_train":  # validation histories are exactly the events before T1
            examples = getattr(ds, name)
            ends = ds.table.history_end("click", examples.user_index, examples.request_time)
            assert np.array_equal(ends, ds.table.history_end("click", examples.user_index, np.full(len(examples), t1)))
        examples = getattr(ds, name)
        batch = collate(ds.table, examples, np.arange(len(examples)))
        request = batch["request_time"].numpy()
        users = ds.table.user_ids[examples.user_index]
        for stream, max_len in (("click", 50), ("conv", 20)):
            ts, lengths = batch[ts_key(stream)].numpy(), batch[len_key(stream)].numpy()
            valid = np.arange(ts.shape[1])[None, :] >= (ts.shape[1] - lengths)[:, None]
            assert np.all(np.where(valid, ts, -1) < request[:, None])
            wanted = [
                sum(t < r and (stream == "click" or rating >= 4) for t, _, rating in by_user[u])
                for u, r in zip(users, request)
            ]
            assert np.array_equal(lengths, np.minimum(wanted, max_len))


def test_negatives_avoid_the_users_window_items_in_both_splits(per_user, global_split):
    ds, t1, t2 = global_split
    by_user = _by_user()
    window = {(u, i) for u, events in by_user.items() for t, i, _ in events if t1 <= t < t2}
    click = ds.click_val
    negative = click.labels[:, 0] == 0
    pairs = set(zip(ds.table.user_ids[click.user_index[negative]].tolist(), click.item_sparse[negative, 0].tolist()))
    assert pairs and not pairs & window
    assert negative.sum() <= 4 * (~negative).sum()


def test_global_split_times_default_to_event_time_quantiles_and_must_be_ordered():
    ds = load_event_log(MOVIELENS, SPEC, EventLogOptions(split="global"))
    times = np.sort([t for events in _by_user().values() for t, _, _ in events])
    t1, t2 = ds.report.split_times
    assert t1 == int(np.quantile(times, 0.8, method="lower")) and t2 == times[-1] + 1
    with pytest.raises(DataError, match="T1 < T2"):
        load_event_log(MOVIELENS, SPEC, EventLogOptions(split="global", train_end=int(times[-1]) + 10))


def test_tasks_the_spec_leaves_out_are_masked_not_labelled_zero(per_user):
    conv = per_user.conv_train
    assert conv.label_mask[:, 0].all() and not conv.label_mask[:, 1:].any()  # MovieLens: no link/button clicks
    assert not conv.synthetic.any()  # every liked movie was rated: no unattributed conversions


def test_spilled_dataset_is_memory_mapped_and_equal_to_the_in_memory_one(tmp_path):
    for split in ("user", "global"):
        memory = load_event_log(MOVIELENS, SPEC, EventLogOptions(split=split))
        spilled = load_event_log(
            MOVIELENS, SPEC, EventLogOptions(split=split, spill_dir=str(tmp_path), block_events=100)
        )
        assert (
            spilled.spill_path.parent == tmp_path
            and not list(spilled.spill_path.glob("read_*"))
            and not list(spilled.spill_path.glob("sorted_*"))
        )
        assert isinstance(spilled.click_train.labels.base, np.memmap)
        for stream in ("click", "conv"):
            a, b = memory.table.streams[stream], spilled.table.streams[stream]
            assert isinstance(b.ids.base, np.memmap)
            assert (
                np.array_equal(a.offsets, b.offsets)
                and np.array_equal(a.timestamps, b.timestamps)
                and np.array_equal(a.ids, b.ids)
            )
        for name in ("click_val", "conv_val"):  # negatives are drawn per block: positive rows compare
            positive = lambda ds: {p: labels for p, labels in _positives(ds, name).items() if labels[0] == 1}  # noqa: E731
            assert positive(memory) == positive(spilled) != {}


def test_item_side_table_joins_on_item_id_and_counts_missing_items():
    spec = EventLogSpec.from_toml(FIXTURES / "movielens_items.toml")
    ds = load_event_log(MOVIELENS, spec)
    examples = ds.conv_train
    item = examples.item_sparse[:, 0]
    known = item <= 55
    assert np.array_equal(examples.item_sparse[known, 1], item[known] % 7)
    assert np.allclose(examples.item_dense[known, 1], 1960 + item[known])
    assert np.all(examples.item_sparse[~known, 1] == 0) and np.all(examples.item_dense[~known, 1] == 0)
    missing = int(np.sum(ds.table.streams["click"].ids[:, 0] > 55) > 0)
    assert (
        ds.report.side_table_missing["item_table"]
        == len({i for i in np.unique(ds.table.streams["click"].ids[:, 0]) if i > 55})
        and missing
    )
    assert [s.max_len for s in ds.schema.streams] == [8, 4]


def test_history_end_binary_search_matches_a_sorted_key_search():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 30, 50)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    ts = np.concatenate([np.sort(rng.integers(0, 100, c)) for c in counts]).astype(np.int64)
    schema = EventSchema(
        streams=(StreamSpec("click", 8),),
        id_fields=("item_id",),
        num_semantic_codes=0,
        static_sparse=("user_id",),
        static_dense=(),
        item_sparse=("item_id",),
        item_dense=(),
    )
    table = EventTable(
        schema,
        np.arange(50),
        np.zeros((50, 1), np.int64),
        np.zeros((50, 0), np.float32),
        {"click": StreamEvents(offsets, ts, np.zeros((len(ts), 1), np.int64))},
    )
    users, request = rng.integers(0, 50, 500), rng.integers(-5, 110, 500)
    owner = np.repeat(np.arange(50), counts)
    reference = np.searchsorted(owner * 1000 + ts, users * 1000 + np.clip(request, 0, 999), side="left")
    assert np.array_equal(table.history_end("click", users, request), reference)


def _session_cutoff(events: list[tuple[int, int, int]], gap: int) -> tuple[int, bool]:
    """Reference: (request time, at a session start) of one user's time-sorted events."""
    target = min(math.floor(0.8 * len(events)), len(events) - 1)
    starts = [k for k in range(1, len(events)) if events[k][0] - events[k - 1][0] >= gap]
    if not starts:
        return events[target][0], False
    best = min(starts, key=lambda k: (abs(k - target), k))  # ties: the earlier start
    return events[best][0], True


@pytest.mark.parametrize("split", ["user", "global"])
def test_session_gap_requests_training_rows_at_the_session_start_nearest_the_cutoff(split, tmp_path):
    gap = 6 * 3600
    t1, t2 = _times("global")
    # the fixture's users come back after long gaps; two more rate 8 movies in one sitting before T1
    path = tmp_path / "with_one_session_users.inter"
    one_session = [f"{900 + u}\t{i}\t4\t{t1 - 5000 + 60 * i}" for u in range(2) for i in range(1, 9)]
    path.write_text(MOVIELENS.read_text() + "\n".join(one_session) + "\n")
    log_by_user = _by_user() | {900 + u: [(t1 - 5000 + 60 * i, i, 4) for i in range(1, 9)] for u in range(2)}
    common = dict(session_gap=gap, val_fraction=0.0)
    options = EventLogOptions(split="global", train_end=t1, val_end=t2, **common) if split == "global" else (
        EventLogOptions(**common)
    )
    only = EventLogOptions(**{**options.__dict__, "sessions_only": True})
    ds, ds_only = load_event_log(path, SPEC, options), load_event_log(path, SPEC, only)
    expected, at_session = {}, set()
    for u, events in log_by_user.items():
        before = [e for e in events if e[0] < t1] if split == "global" else events
        if len(before) >= 5:
            expected[u], opened = _session_cutoff(before, gap)
            if opened:
                at_session.add(u)
    assert at_session and set(expected) - at_session  # the fixture has users of both kinds
    got = dict(zip(ds.table.user_ids[ds.click_train.user_index].tolist(), ds.click_train.request_time.tolist()))
    assert got == {u: t for u, t in expected.items() if u in got} and set(got) == set(expected)
    users_only = set(ds_only.table.user_ids[ds_only.click_train.user_index].tolist())
    assert users_only == at_session
    # the previous event of a session-start request is at least `gap` earlier: rows ask about a return
    for u in at_session:
        previous = max(t for t, _, _ in log_by_user[u] if t < got[u])
        assert got[u] - previous >= gap
