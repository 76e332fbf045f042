"""The Taobao UserBehavior preset end to end through ``load_event_log``: routing, labels, the per-user
time split, negatives, downsampling and bad rows (migrated from the former ``data/taobao.py`` tests)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from duet_sdk.data.batching import collate
from duet_sdk.data.eventlog import EventLogOptions, load_event_log
from duet_sdk.data.routing import CLICK_TASKS, CONV_TASKS
from duet_sdk.data.schema import ids_key, len_key, ts_key
from duet_sdk.data.spec import preset
from duet_sdk.errors import ConfigError, DataError

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "taobao_small.csv"
SETS = ("click_train", "click_val", "conv_train", "conv_val")
SPEC = preset("taobao")
BEHAVIORS = SPEC.behaviors
BASE = 1_511_539_200  # hand-built logs add this to their small times (earlier years are implausible)


def load_taobao(path, options: EventLogOptions | None = None):
    return load_event_log(path, SPEC, options)


def TaobaoOptions(**kwargs) -> EventLogOptions:  # noqa: N802 - the old name keeps the tests below readable
    return EventLogOptions(**kwargs)


def _read_rows(path: Path) -> list[tuple[int, int, int, str, int]]:
    rows = []
    for line in path.read_text().splitlines():
        u, i, c, b, t = line.split(",")
        rows.append((int(u), int(i), int(c), b, int(t)))
    return rows


def _reference(rows, history_fraction: float = 0.8):
    """Independent per-user cutoff t_u and the (user, item) pairs touched at/after it."""
    by_user = defaultdict(list)
    for u, i, c, b, t in rows:
        by_user[u].append((t, i, c, b))
    cutoff, touched = {}, set()
    for u, events in by_user.items():
        events.sort(key=lambda e: e[0])
        cutoff[u] = events[math.floor(history_fraction * len(events))][0]
        touched |= {(u, i) for t, i, c, b in events if t >= cutoff[u]}
    return by_user, cutoff, touched


@pytest.fixture(scope="module")
def small():
    return load_taobao(FIXTURE)


@pytest.fixture(scope="module")
def rows():
    return _read_rows(FIXTURE)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _raw_user(ds, examples) -> np.ndarray:
    return ds.table.user_ids[examples.user_index]


def test_good_file_loads_with_expected_counts(small, rows):
    report = small.report
    assert report.read.rows_read == report.read.rows_ok == len(rows) == 1606
    assert report.read.bad_rows == []
    assert report.read.behavior_counts == dict(Counter(r[3] for r in rows))
    per_user = Counter(r[0] for r in rows)
    assert report.users_total == len(per_user) == small.table.num_users == 30
    assert report.users_total - report.users_eligible == sum(n < 5 for n in per_user.values()) == 3
    assert list(small.table.user_ids) == sorted(per_user)
    assert np.array_equal(small.table.static_sparse[:, 0], small.table.user_ids)
    short = {u for u, n in per_user.items() if n < 5}
    for name in SETS:
        examples = getattr(small, name)
        assert len(examples) > 0
        assert not short & set(_raw_user(small, examples).tolist())
    assert small.click_train.tasks == small.click_val.tasks == CLICK_TASKS
    assert small.conv_train.tasks == small.conv_val.tasks == CONV_TASKS
    assert "1606/1606 rows ok" in report.summary() and "27 with enough events" in report.summary()


def test_schema_has_click_and_conv_streams_and_taobao_fields():
    schema = replace(SPEC, streams={"click": (("pv",), 7), "conv": (("cart", "fav", "buy"), 3)}).schema()
    assert [(s.name, s.max_len) for s in schema.streams] == [("click", 7), ("conv", 3)]
    assert [(s.name, s.max_len) for s in SPEC.schema().streams] == [("click", 50), ("conv", 20)]
    assert schema.event_fields == ("item_id", "category_id", "behavior")
    assert schema.static_sparse == ("user_id",)
    assert schema.static_dense == ("log_click_count", "log_conv_count")
    assert schema.item_sparse == ("item_id", "category_id")
    assert schema.item_dense == ("log_item_popularity",)


def test_pv_routed_to_click_stream_and_cart_fav_buy_to_conv_stream(small, rows):
    table = small.table
    for u_index, uid in enumerate(table.user_ids):
        for stream, wanted in (("click", {"pv"}), ("conv", {"cart", "fav", "buy"})):
            events = table.streams[stream]
            lo, hi = events.offsets[u_index], events.offsets[u_index + 1]
            got = sorted((int(t), *map(int, ids)) for t, ids in zip(events.timestamps[lo:hi], events.ids[lo:hi]))
            want = sorted((t, i, c, BEHAVIORS.index(b)) for u, i, c, b, t in rows if u == uid and b in wanted)
            assert got == want
            assert np.all(np.diff(events.timestamps[lo:hi]) >= 0)
    assert set(table.streams["click"].ids[:, 2].tolist()) == {0}
    assert set(table.streams["conv"].ids[:, 2].tolist()) == {1, 2, 3}


def test_time_split_puts_no_future_event_in_any_history(small, rows):
    by_user, cutoff, _ = _reference(rows)
    for name in SETS:
        examples = getattr(small, name)
        batch = collate(small.table, examples, np.arange(len(examples)))
        request_time = batch["request_time"].numpy()
        users = _raw_user(small, examples)
        assert np.array_equal(request_time, [cutoff[u] for u in users])
        for spec in small.schema.streams:
            ts, lengths = batch[ts_key(spec.name)].numpy(), batch[len_key(spec.name)].numpy()
            width = ts.shape[1]
            valid = np.arange(width)[None, :] >= (width - lengths)[:, None]
            assert np.all(np.where(valid, ts, -1) < request_time[:, None])
            kinds = {"pv"} if spec.name == "click" else {"cart", "fav", "buy"}
            before = [sum(t < cutoff[u] and b in kinds for t, i, c, b in by_user[u]) for u in users]
            assert np.array_equal(lengths, np.minimum(before, spec.max_len))  # the whole history, nothing more
            assert batch[ids_key(spec.name)].shape[:2] == ts.shape


HAND_BUILT = [  # (user, item, behavior, ts); category = item + 1000
    (2, 20, "pv", 150), *[(2, 40 + k, "pv", 200 + k) for k in range(10)],  # user 2: t_u = 203
    (1, 10, "pv", 100), (1, 11, "pv", 101), (1, 11, "cart", 102), (1, 12, "pv", 103), (1, 10, "fav", 104),
    (1, 20, "pv", 105), (1, 20, "cart", 106), (1, 20, "buy", 107),  # user 1: t_u = 105
    (1, 21, "pv", 108), (1, 21, "fav", 109),
    (1, 30, "buy", 110),  # never viewed: unattributed conversion
    (1, 22, "buy", 111), (1, 22, "pv", 112),  # bought before its first pv: not attributed
    (1, 10, "buy", 113),  # viewed only in history: neither
    *[(3, 60 + k, "pv", t) for k, t in enumerate([300, 301, 302, 302, 302, 303])],  # user 3: ties at t_u = 302
]
HAND_OPTIONS = TaobaoOptions(history_fraction=0.4, val_fraction=0.0, downsample_rate=1.0, negatives_per_positive=2)


@pytest.fixture()
def hand_built(tmp_path):
    lines = [f"{u},{i},{i + 1000},{b},{BASE + t}" for u, i, b, t in reversed(HAND_BUILT)]
    return load_taobao(_write(tmp_path / "hand.csv", lines), HAND_OPTIONS)


def _rows_of(examples, user_index: int) -> dict[int, list[tuple]]:
    """candidate item -> [(labels, mask, synthetic), ...] for one user."""
    out = defaultdict(list)
    for k in np.flatnonzero(examples.user_index == user_index):
        row = (examples.labels[k].tolist(), examples.label_mask[k].tolist(), bool(examples.synthetic[k]))
        out[int(examples.item_sparse[k, 0])].append(row)
    return out


def test_click_and_conv_labels_of_a_hand_built_log(hand_built):
    ds = hand_built
    assert list(ds.table.user_ids) == [1, 2, 3] and len(ds.click_val) == len(ds.conv_val) == 0
    assert set(ds.click_train.request_time[ds.click_train.user_index == 0]) == {BASE + 105}
    assert set(ds.click_train.request_time[ds.click_train.user_index == 1]) == {BASE + 203}
    assert np.all(ds.click_train.item_sparse[:, 1] == ds.click_train.item_sparse[:, 0] + 1000)
    click, conv = _rows_of(ds.click_train, 0), _rows_of(ds.conv_train, 0)
    assert click[20] == [([1, 1], [1, 1], False)] and click[21] == [([1, 1], [1, 1], False)]
    assert click[22] == [([1, 0], [1, 1], False)]
    negatives = {item: r for item, r in click.items() if item not in (20, 21, 22)}
    assert sum(map(len, negatives.values())) == 6 and not {10, 20, 21, 22, 30} & set(negatives)
    assert all(r == ([0, 0], [1, 1], False) for rs in negatives.values() for r in rs)
    attributed_mask = [1, 0, 1, 1]
    assert conv[20] == [([1, 0, 1, 0], attributed_mask, False)]
    assert conv[21] == [([0, 0, 0, 1], attributed_mask, False)]
    assert conv[22] == [([0, 0, 0, 0], attributed_mask, False)]
    assert conv[30] == [([0, 1, 0, 0], [0, 1, 0, 0], True)]
    assert 10 not in conv  # bought after a history-only pv: neither attributed nor unattributed
    synthetic_negatives = [r for item, rs in conv.items() if item != 30 for r in rs if r[2]]
    assert synthetic_negatives == [([0, 0, 0, 0], [0, 1, 0, 0], True)] * 2
    assert sum(r[2] is False for item, rs in conv.items() if item not in (20, 21, 22) for r in rs) == 6


def test_events_tied_with_the_cutoff_are_labels_not_history(hand_built):
    ds = hand_built
    click = ds.click_train.subset(np.flatnonzero(ds.click_train.user_index == 2))
    assert set(click.request_time.tolist()) == {BASE + 302}
    positives = click.item_sparse[click.labels[:, 0] == 1, 0]
    assert sorted(positives.tolist()) == [62, 63, 64, 65]
    batch = collate(ds.table, click, np.arange(len(click)))
    assert set(batch[len_key("click")].tolist()) == {2}
    assert set(batch[ids_key("click")][:, -2:, 0].flatten().tolist()) == {60, 61}


def test_negatives_are_dropped_when_the_user_touched_every_item(tmp_path):
    lines = [f"1,{1 + k % 2},7,pv,{BASE + 10 + k}" for k in range(5)] + [f"1,2,7,cart,{BASE + 15}"]
    ds = load_taobao(_write(tmp_path / "tiny.csv", lines), HAND_OPTIONS)
    assert sorted(ds.click_train.item_sparse[:, 0].tolist()) == [1, 2]
    assert ds.click_train.labels.tolist() == [[1, 0], [1, 1]]


def test_crlf_line_ends_and_spaces_around_fields_are_accepted(tmp_path):
    lines = [f" 1, {1 + k % 2} ,7,\tpv ,{BASE + 10 + k}" for k in range(6)]
    path = tmp_path / "spaced.csv"
    path.write_bytes("\r\n".join(lines).encode() + b"\r\n")
    ds = load_taobao(path, HAND_OPTIONS)
    assert ds.report.read.rows_ok == 6 and ds.report.read.bad_rows == []
    assert ds.table.streams["click"].ids.tolist() == [[1 + k % 2, 7, 0] for k in range(6)]


def test_static_and_item_features_use_history_windows_only(tmp_path):
    lines = [f"{u},{i},{i + 1000},{b},{BASE + t}" for u, i, b, t in reversed(HAND_BUILT)]
    ds = load_taobao(_write(tmp_path / "hand.csv", lines), replace(HAND_OPTIONS, popularity_at_request=False))
    np.testing.assert_allclose(ds.table.static_dense[0], np.log1p([3, 2]), rtol=1e-6)  # user 1: 3 pv, cart + fav
    np.testing.assert_allclose(ds.table.static_dense[1], np.log1p([4, 0]), rtol=1e-6)  # user 2: 20, 40, 41, 42
    popularity = {int(i): float(d) for i, d in zip(ds.conv_train.item_sparse[:, 0], ds.conv_train.item_dense[:, 0])}
    assert popularity[20] == pytest.approx(math.log1p(1))  # user 2's history pv; user 1's are future
    assert popularity[21] == popularity[30] == popularity[45] == 0.0


def test_item_popularity_counts_the_items_events_before_each_rows_request(hand_built):
    # by default a candidate's log popularity is what serving would see at the request: every event
    # of the item (any user, any behaviour) strictly before the row's request time
    for examples in (hand_built.click_train, hand_built.conv_train):
        for item, t, value in zip(examples.item_sparse[:, 0], examples.request_time, examples.item_dense[:, 0]):
            expected = sum(1 for _, i, _, ts in HAND_BUILT if i == item and BASE + ts < t)
            assert value == pytest.approx(math.log1p(expected))
    rows = hand_built.click_train
    assert any(v > 0 for v in rows.item_dense[rows.user_index == 1, 0])  # user 2's request sees user 1's events


MALFORMED = {  # 1-based line number in the written file -> (line, words the reason must contain)
    1: ("1,2,3,pv", ["expected 5 fields", "got 4"]),
    10: ("", ["user_id", "empty"]),
    50: ("1,2,3,pv,1511539200,9", ["expected 5 fields", "got 6"]),
    100: ("abc,2,3,pv,1511539200", ["user_id", "not an integer"]),
    200: ("1,-5,3,pv,1511539200", ["item_id", "negative"]),
    300: (f"1,2,{2**63},pv,1511539200", ["category_id", "out of range"]),
    400: ("1,2,3,click,1511539200", ["behavior_type", "'click'", "pv, cart, fav, buy"]),
    500: (f"1,2,3,pv,{2**32}", ["timestamp", "year 2106", "plausible years 1990..2100"]),
    600: ("1,2,3,pv,15.5", ["timestamp", "whole number"]),
    700: ("1,2,3,buy,-1", ["timestamp", ">= 0", "'-1'"]),
    800: ("x,2,3,nope,-1", ["user_id"]),  # the first bad column names the row
    900: (
        "1,2,3,pv,1511539200000",
        ["timestamp", "year 49", 'milliseconds given as seconds? set timestamp_unit = "ms"'],
    ),
}


def test_malformed_rows_reported_with_line_numbers_and_column(tmp_path, small):
    lines = FIXTURE.read_text().splitlines()
    for number in sorted(MALFORMED):
        lines.insert(number - 1, MALFORMED[number][0])
    ds = load_taobao(_write(tmp_path / "bad.csv", lines))
    report = ds.report.read
    assert [where for where, _ in report.bad_rows] == [f"line {n}" for n in sorted(MALFORMED)]
    for where, reason in report.bad_rows:
        assert all(word in reason for word in MALFORMED[int(where.split()[1])][1]), reason
    assert report.rows_read == 1606 + len(MALFORMED) and report.rows_ok == 1606
    assert report.unknown_behaviors["click"] == 1 and "unknown behaviour values" in report.summary()
    assert "line 1:" in report.summary()
    for name in SETS:  # skipped rows change nothing else
        assert np.array_equal(getattr(ds, name).item_sparse, getattr(small, name).item_sparse)
    assert np.array_equal(ds.table.streams["conv"].ids, small.table.streams["conv"].ids)


def test_too_many_bad_rows_raise_data_error(tmp_path):
    lines = FIXTURE.read_text().splitlines()[:10] + ["1,2,3,view,1511539200"]
    path = _write(tmp_path / "bad.csv", lines)
    with pytest.raises(DataError, match=r"1 of 11 rows.*line 11: behavior_type"):
        load_taobao(path)
    assert load_taobao(path, TaobaoOptions(max_bad_fraction=0.1)).report.read.bad_rows[0][0] == "line 11"


def test_file_without_valid_rows_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="empty"):
        load_taobao(_write(tmp_path / "empty.csv", []))
    with pytest.raises(DataError, match="no valid row"):
        load_taobao(_write(tmp_path / "bad.csv", ["1,2,3,view,1511539200"]), TaobaoOptions(max_bad_fraction=1.0))


def test_synthetic_rows_are_flagged_and_only_unattributed_label_applies(small, rows):
    by_user, cutoff, touched = _reference(rows)
    viewed = {(u, i) for u, i, c, b, t in rows if b == "pv"}
    future_buys = {(u, i) for u, i, c, b, t in rows if b == "buy" and t >= cutoff[u]}
    unattributed = CONV_TASKS.index("unattributed_conversion")
    positives = set()
    for name in ("conv_train", "conv_val"):
        conv = getattr(small, name)
        syn = conv.synthetic
        assert syn.any() and (~syn).any()
        assert np.all(conv.label_mask[syn] == [0, 1, 0, 0])
        assert np.all(conv.label_mask[~syn] == [1, 0, 1, 1])
        assert np.all(conv.labels[~syn, unattributed] == 0)
        assert np.all(conv.labels[syn][:, [0, 2, 3]] == 0)
        pairs = list(zip(_raw_user(small, conv).tolist(), conv.item_sparse[:, 0].tolist()))
        is_positive = conv.labels[:, unattributed] == 1
        positives |= {p for p, flag in zip(pairs, is_positive) if flag}
        assert all(p not in touched for p, s, flag in zip(pairs, syn, is_positive) if s and not flag)
        assert (syn & ~is_positive).sum() == 4 * (syn & is_positive).sum()
    eligible = {u for u, events in by_user.items() if len(events) >= 5}
    assert positives == {(u, i) for u, i in future_buys - viewed if u in eligible}


def test_click_negatives_have_zero_labels_and_avoid_future_items(small, rows):
    _, _, touched = _reference(rows)
    for name in ("click_train", "click_val"):
        click = getattr(small, name)
        assert np.all(click.label_mask == 1)
        negative = click.labels[:, 0] == 0
        assert np.all(click.labels[negative] == 0)
        pairs = zip(_raw_user(small, click)[negative].tolist(), click.item_sparse[negative, 0].tolist())
        assert not set(pairs) & touched


def test_click_train_is_downsampled_keeping_all_positives_while_val_is_not(small):
    full = load_taobao(FIXTURE, TaobaoOptions(downsample_rate=1.0))
    kept, every = small.click_train, full.click_train
    assert kept.downsample_rate == 0.5 and every.downsample_rate == 1.0
    pos_kept, pos_every = kept.labels[:, 0] == 1, every.labels[:, 0] == 1
    assert np.array_equal(kept.item_sparse[pos_kept], every.item_sparse[pos_every])
    assert np.array_equal(kept.user_index[pos_kept], every.user_index[pos_every])
    assert 0.3 < (~pos_kept).sum() / (~pos_every).sum() < 0.7
    for name in ("click_val", "conv_train", "conv_val"):
        a, b = getattr(small, name), getattr(full, name)
        assert (
            a.downsample_rate == 1.0
            and np.array_equal(a.item_sparse, b.item_sparse)
            and np.array_equal(a.labels, b.labels)
        )


def test_train_and_validation_users_are_disjoint(small):
    for stream in ("click", "conv"):
        train, val = getattr(small, f"{stream}_train"), getattr(small, f"{stream}_val")
        assert set(train.user_index.tolist()).isdisjoint(val.user_index.tolist())
    assert set(small.click_val.user_index.tolist()) == set(small.conv_val.user_index.tolist())
    none = load_taobao(FIXTURE, TaobaoOptions(val_fraction=0.0))
    assert len(none.click_val) == len(none.conv_val) == 0
    half = load_taobao(FIXTURE, TaobaoOptions(val_fraction=0.5))
    assert 5 < len(set(half.conv_val.user_index.tolist())) < 22


def test_loading_is_deterministic_given_the_seed(small):
    again = load_taobao(FIXTURE)
    for name in SETS:
        a, b = getattr(small, name), getattr(again, name)
        for column in ("user_index", "request_time", "item_sparse", "item_dense", "labels", "label_mask", "synthetic"):
            assert np.array_equal(getattr(a, column), getattr(b, column)), (name, column)
    other = load_taobao(FIXTURE, TaobaoOptions(seed=1))
    assert not np.array_equal(other.conv_train.item_sparse, small.conv_train.item_sparse)
    assert set(other.click_val.user_index.tolist()) == set(
        small.click_val.user_index.tolist()
    )  # split ignores the seed


@pytest.mark.parametrize(
    "field, value",
    [
        ("block_events", 0),
        ("split", "random"),
        ("train_end_quantile", 1.0),
        ("history_fraction", 1.0),
        ("history_fraction", 0.0),
        ("min_events", 0),
        ("val_fraction", 1.0),
        ("val_fraction", -0.1),
        ("negatives_per_positive", -1),
        ("negatives_per_positive", True),
        ("downsample_rate", 0.0),
        ("downsample_rate", 1.5),
        ("max_bad_fraction", float("nan")),
        ("seed", -1),
        ("seed", "0"),
    ],
)
def test_bad_options_raise_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError) as excinfo:
        EventLogOptions(**{field: value})
    assert excinfo.value.field == f"EventLogOptions.{field}"
    assert field in str(excinfo.value)
