"""Tensor building: bucketed lengths, left padding, truncation to the most recent events, score slicing."""

import numpy as np
import pytest
from client_fakes import INTERFACE, NOW, candidates, fresh_request, history, score_request

from duet_sdk.client.calls import embed_calls, expected_inputs, fresh_calls, score_calls
from duet_sdk.client.tensors import (
    bucket,
    candidate_tensors,
    chunks,
    code_tensors,
    history_tensors,
    recent,
    split_scores,
    stream_tensors,
)
from duet_sdk.interface import DOWNSTREAM, FRESH, UPSTREAM, Event, StreamInfo


@pytest.mark.parametrize("n, cap, expected", [
    (0, 64, 1), (1, 64, 1), (2, 64, 2), (3, 64, 4), (5, 64, 8), (8, 64, 8), (9, 64, 16),
    (64, 64, 64), (70, 100, 100), (65, 100, 100), (50, 100, 64), (3, 3, 3),
])
def test_bucket_is_the_smallest_power_of_two_capped(n, cap, expected):
    assert bucket(n, cap) == expected


def test_chunks_split_in_order_with_at_most_size_each():
    assert chunks(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    assert chunks(list(range(4)), 4) == [[0, 1, 2, 3]]


def test_stream_is_left_padded_to_the_bucket_of_the_longest_history():
    users = [history(0, clicks=3), history(1, clicks=1), history(2, clicks=0)]
    t = stream_tensors(users, "click", INTERFACE.streams["click"])
    assert t["click_ids"].shape == (3, 4, 3) and t["click_ids"].dtype == np.int64  # bucket(3) = 4
    assert t["click_ts"].shape == (3, 4) and t["click_len"].tolist() == [3, 1, 0]
    np.testing.assert_array_equal(t["click_ts"][0], [0, NOW - 100, NOW - 99, NOW - 98])  # most recent last
    np.testing.assert_array_equal(t["click_ids"][0], [[0, 0, 0], [0, 1, 2], [1, 2, 3], [2, 3, 4]])
    np.testing.assert_array_equal(t["click_ids"][1], [[0, 0, 0]] * 3 + [[0, 1, 2]])
    assert not t["click_ids"][2].any() and not t["click_ts"][2].any()


def test_all_empty_stream_still_sends_one_padded_step():
    t = stream_tensors([history(clicks=0), history(streams={})], "click", INTERFACE.streams["click"])
    assert t["click_ids"].shape == (2, 1, 3) and t["click_len"].tolist() == [0, 0]
    assert not t["click_ids"].any()


def test_long_history_keeps_the_most_recent_max_len_events():
    events = [Event(NOW - 100 + i, (i, i)) for i in range(10)]
    info = StreamInfo(max_len=6, event_fields=2)  # not a power of two: T is capped at 6
    assert recent(events, 6) == events[4:] and recent(events[:3], 6) == events[:3]
    t = stream_tensors([history(streams={"s": events})], "s", info)
    assert t["s_ids"].shape == (1, 6, 2) and t["s_len"].tolist() == [6]
    np.testing.assert_array_equal(t["s_ts"][0], [NOW - 100 + i for i in range(4, 10)])


def test_history_tensors_cover_the_upstream_inputs():
    t = history_tensors([history(0), history(5)], INTERFACE)
    assert t["request_time"].tolist() == [NOW, NOW] and t["static_sparse"].tolist() == [[0, 7], [5, 7]]
    assert t["static_dense"].dtype == np.float32 and t["conv_len"].tolist() == [1, 1]
    assert set(t) == set(expected_inputs(INTERFACE, UPSTREAM))


def test_candidates_are_padded_with_zero_rows_and_scores_sliced_back():
    t, counts = candidate_tensors([candidates(3, first=1.0), candidates(5, first=1.0)], INTERFACE)
    assert counts == [3, 5] and t["item_sparse"].shape == (2, 8, 2) and t["item_dense"].shape == (2, 8, 3)
    assert not t["item_dense"][0, 3:].any() and not t["item_sparse"][1, 5:].any()
    np.testing.assert_array_equal(t["item_dense"][1, :5, 0], [1, 2, 3, 4, 5])
    scores = np.arange(2 * 8 * 2, dtype=np.float32).reshape(2, 8, 2)
    per_user = split_scores(scores, counts)
    assert [s.shape for s in per_user] == [(3, 2), (5, 2)]
    np.testing.assert_array_equal(per_user[1], scores[1, :5])


def test_candidate_count_is_capped_at_max_candidates():
    t, _ = candidate_tensors([candidates(INTERFACE.max_candidates)], INTERFACE)
    assert t["item_sparse"].shape[1] == INTERFACE.max_candidates


def test_code_tensors_have_one_row_per_user():
    t = code_tensors([{"click": (1, 2), "conv": (0, 1, 7)}, {"click": (3, 4), "conv": (5, 6, 7)}], INTERFACE)
    assert t["click_codes"].tolist() == [[1, 2], [3, 4]] and t["conv_codes"].shape == (2, 3)


@pytest.mark.parametrize("ensemble", [UPSTREAM, DOWNSTREAM, FRESH])
def test_calls_send_exactly_the_expected_inputs_in_wire_shapes(ensemble):
    make = {UPSTREAM: lambda: embed_calls([history(u) for u in range(6)], INTERFACE),
            DOWNSTREAM: lambda: score_calls([score_request(u) for u in range(6)], INTERFACE),
            FRESH: lambda: fresh_calls([fresh_request(u) for u in range(6)], INTERFACE)}[ensemble]
    calls = make()
    assert [c.model for c in calls] == [ensemble, ensemble] and calls[0].inputs["static_sparse"].shape[0] == 4
    expected = expected_inputs(INTERFACE, ensemble)
    for call in calls:
        assert set(call.inputs) == set(expected)
        for name, array in call.inputs.items():
            dtype, shape = expected[name]
            assert {"INT64": np.int64, "FP32": np.float32}[dtype] == array.dtype, name
            assert len(shape) == array.ndim and all(e in (-1, g) for e, g in zip(shape, array.shape)), name
    if ensemble != DOWNSTREAM:
        assert calls[0].inputs["request_time"].shape == (4, 1) and calls[1].inputs["click_len"].shape == (2, 1)
