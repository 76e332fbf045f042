import numpy as np
import pytest

from duet_sdk.data.batching import collate, iterate_batches, pad_stream
from duet_sdk.data.events import EventTable, ExampleSet, StreamEvents
from duet_sdk.data.schema import EventSchema, StreamSpec
from duet_sdk.errors import DataError

SCHEMA = EventSchema(streams=(StreamSpec("click", 3), StreamSpec("conv", 2)), num_semantic_codes=0)
F = len(SCHEMA.event_fields)


def _table() -> EventTable:
    """User 0: clicks at t=10,20,30,40 and a conversion at 25; user 1: nothing."""
    row = lambda item: [item] + [0] * (F - 1)  # noqa: E731
    clicks = StreamEvents.from_lists([[(t, row(100 + t)) for t in (40, 10, 30, 20)], []], F)
    convs = StreamEvents.from_lists([[(25, row(7))], []], F)
    return EventTable(
        schema=SCHEMA,
        user_ids=np.array([11, 12]),
        static_sparse=np.zeros((2, 3), np.int64),
        static_dense=np.zeros((2, 3), np.float32),
        streams={"click": clicks, "conv": convs},
    )


def _examples(users, times) -> ExampleSet:
    n = len(users)
    return ExampleSet(
        tasks=("ctr",), user_index=np.array(users), request_time=np.array(times, dtype=np.int64),
        item_sparse=np.zeros((n, 5), np.int64), item_dense=np.zeros((n, 2), np.float32),
        labels=np.zeros((n, 1), np.float32), label_mask=np.ones((n, 1), np.float32), synthetic=np.zeros(n, bool),
    )


def test_pad_stream_left_pads_with_most_recent_event_last():
    ids = np.arange(5, dtype=np.int64).reshape(5, 1) * 10
    ts = np.arange(5, dtype=np.int64)
    out_ids, out_ts, lengths = pad_stream(ids, ts, np.array([0, 3]), np.array([2, 5]), width=4)
    assert lengths.tolist() == [2, 2]
    assert out_ts.tolist() == [[0, 0, 0, 1], [0, 0, 3, 4]]
    assert out_ids[:, :, 0].tolist() == [[0, 0, 0, 10], [0, 0, 30, 40]]


def test_history_holds_only_events_strictly_before_request_time():
    batch = collate(_table(), _examples([0, 0, 0], [10, 31, 25]), np.arange(3))
    assert batch["click_len"].tolist() == [0, 3, 2]
    assert batch["click_ts"][1].tolist() == [10, 20, 30]
    assert batch["click_ts"][2, -2:].tolist() == [10, 20]
    assert batch["conv_len"].tolist() == [0, 1, 0]  # the conversion at t=25 is not before t=25


def test_long_history_keeps_the_most_recent_max_len_events():
    batch = collate(_table(), _examples([0], [1000]), np.arange(1))
    assert batch["click_len"].tolist() == [3]  # max_len of the click stream
    assert batch["click_ts"][0].tolist() == [20, 30, 40]
    assert batch["click_ids"][0, :, 0].tolist() == [120, 130, 140]


def test_user_with_no_events_gets_an_empty_stream_of_width_one():
    batch = collate(_table(), _examples([1, 1], [50, 60]), np.arange(2))
    assert batch["click_len"].tolist() == [0, 0]
    assert tuple(batch["click_ids"].shape) == (2, 1, F)


def test_pad_to_max_pads_every_stream_to_its_max_len():
    batch = collate(_table(), _examples([0], [31]), np.arange(1), pad_to_max=True)
    assert tuple(batch["click_ids"].shape) == (1, 3, F)
    assert tuple(batch["conv_ids"].shape) == (1, 2, F)


def test_iterate_batches_covers_every_row_once_and_shuffles_deterministically():
    examples = _examples([0] * 10, list(range(100, 110)))
    seen = [t for b in iterate_batches(_table(), examples, 3, shuffle=True, seed=5) for t in b["request_time"].tolist()]
    again = [
        t for b in iterate_batches(_table(), examples, 3, shuffle=True, seed=5) for t in b["request_time"].tolist()
    ]
    assert sorted(seen) == list(range(100, 110)) and seen == again


def test_unsorted_event_times_are_rejected():
    events = StreamEvents(np.array([0, 2, 2]), np.array([5, 1], np.int64), np.zeros((2, F), np.int64))
    with pytest.raises(DataError, match="sorted by time"):
        events.validate("click", 2, F)


def test_static_features_of_the_wrong_shape_are_rejected():
    table = _table()
    with pytest.raises(DataError, match="static_dense"):
        EventTable(SCHEMA, table.user_ids, table.static_sparse, np.zeros((2, 1), np.float32), table.streams)


def test_example_labels_of_the_wrong_shape_are_rejected():
    with pytest.raises(DataError, match="labels"):
        ExampleSet(
            ("a", "b"),
            np.zeros(2, np.int64),
            np.zeros(2, np.int64),
            np.zeros((2, 1), np.int64),
            np.zeros((2, 1), np.float32),
            np.zeros((2, 1), np.float32),
            np.ones((2, 2), np.float32),
            np.zeros(2, bool),
        )
