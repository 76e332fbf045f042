"""A ranker with target attention: the client sends each user's recent history (the most recent L rows,
left-padded) to duet_downstream and duet_fresh only when the served interface says the ranker takes one,
refuses a malformed or missing one naming the field, and reads old interfaces (no history) as before."""

import json
from dataclasses import replace

import numpy as np
import pytest
from client_fakes import INTERFACE, NOW, FakeTriton, candidates, history, score_request

from duet_sdk.client import DuetClient, InvalidRequest
from duet_sdk.client import client as client_module
from duet_sdk.client.calls import expected_inputs, fresh_calls, score_calls
from duet_sdk.client.tensors import recent_history_tensors
from duet_sdk.client.validate import check_fresh_requests, check_score_requests
from duet_sdk.interface import DOWNSTREAM, FRESH, UPSTREAM, Event, FreshRequest, HistoryInfo, ServingInterface

L = 5
HISTORY = HistoryInfo(stream="click", fields=("item_id", "author_id"), columns=(0, 2), event_fields=3, max_len=L)
TA_INTERFACE = replace(INTERFACE, history=HISTORY)
I64 = np.iinfo(np.int64)


def rows(n: int, start: int = 0) -> list[tuple[int, int]]:
    return [(start + i, -(start + i)) for i in range(n)]


def test_history_tensors_keep_the_most_recent_L_rows_left_padded_with_their_lengths():
    out = recent_history_tensors([rows(0), rows(2, 10), rows(L + 3, 100)], HISTORY)
    assert out["history_ids"].shape == (3, L, 2) and out["history_ids"].dtype == np.int64
    np.testing.assert_array_equal(out["history_len"], [0, 2, L])
    np.testing.assert_array_equal(out["history_ids"][0], 0)
    np.testing.assert_array_equal(out["history_ids"][1, -2:], rows(2, 10))
    np.testing.assert_array_equal(out["history_ids"][1, :-2], 0)
    np.testing.assert_array_equal(out["history_ids"][2], rows(L + 3, 100)[-L:])  # the oldest 3 dropped


def test_all_empty_histories_travel_as_one_padding_slot_with_length_zero():
    out = recent_history_tensors([(), []], HISTORY)
    assert out["history_ids"].shape == (2, 1, 2) and out["history_len"].tolist() == [0, 0]


def test_expected_inputs_carry_the_history_on_downstream_and_fresh_only_when_the_ranker_takes_one():
    for ensemble in (DOWNSTREAM, FRESH):
        assert expected_inputs(TA_INTERFACE, ensemble)["history_ids"] == ("INT64", (-1, -1, 2))
        assert expected_inputs(TA_INTERFACE, ensemble)["history_len"] == ("INT64", (-1, 1))
        assert "history_ids" not in expected_inputs(INTERFACE, ensemble)
    assert "history_ids" not in expected_inputs(TA_INTERFACE, UPSTREAM)


def test_score_call_sends_each_users_rows_and_a_ranker_without_history_gets_none():
    requests = [replace(score_request(0), recent_history=rows(3)), replace(score_request(1), recent_history=())]
    [call] = score_calls(requests, TA_INTERFACE)
    assert call.inputs["history_ids"].shape == (2, 4, 2) and call.inputs["history_len"].tolist() == [[3], [0]]
    np.testing.assert_array_equal(call.inputs["history_ids"][0, 1:], rows(3))
    [plain] = score_calls(requests, INTERFACE)
    assert "history_ids" not in plain.inputs and "history_len" not in plain.inputs


def test_fresh_call_takes_the_history_from_the_stream_unless_given():
    user = history(0, clicks=L + 2)  # click event i has ids (i, i + 1, i + 2): fields at columns 0 and 2
    [derived] = fresh_calls([FreshRequest(user, candidates())], TA_INTERFACE)
    np.testing.assert_array_equal(derived.inputs["history_ids"][0], [(i, i + 2) for i in range(2, L + 2)])
    [given] = fresh_calls([FreshRequest(user, candidates(), rows(1, 42))], TA_INTERFACE)
    np.testing.assert_array_equal(given.inputs["history_ids"][0], [(42, -42)])
    [empty] = fresh_calls([FreshRequest(history(0, clicks=0), candidates())], TA_INTERFACE)
    assert empty.inputs["history_len"].tolist() == [[0]]


@pytest.mark.parametrize("recent, field", [
    (None, "requests[0].recent_history"),
    ("12", "requests[0].recent_history"),
    ([(1, 2), (1, 2, 3)], "requests[0].recent_history[1]"),
    ([(1, 2), (1, 2.5)], "requests[0].recent_history[1][1]"),
    ([(1, I64.max + 1)], "requests[0].recent_history[0][1]"),
    ([(1, "a")], "requests[0].recent_history[0][1]"),
])
def test_a_missing_or_malformed_history_is_refused_naming_the_field(recent, field):
    with pytest.raises(InvalidRequest) as info:
        check_score_requests([replace(score_request(0), recent_history=recent)], TA_INTERFACE)
    assert info.value.field == field


def test_any_int64_ids_and_any_length_are_valid():
    extreme = [(I64.min, I64.max), (0, -1)] * 50  # 100 rows > L: the client keeps the last L
    check_score_requests([replace(score_request(0), recent_history=extreme)], TA_INTERFACE)
    check_score_requests([replace(score_request(0), recent_history=np.array(extreme, np.int64))], TA_INTERFACE)
    check_fresh_requests([FreshRequest(history(0), candidates(), extreme)], TA_INTERFACE)


def test_the_history_stream_may_be_one_no_encoder_reads():
    interface = replace(INTERFACE, history=replace(HISTORY, stream="behavior", columns=(0, 1), event_fields=2))
    user = history(0, streams={"click": [], "behavior": [Event(NOW - 5, (7, 8)), Event(NOW - 1, (9, 10))]})
    check_fresh_requests([FreshRequest(user, candidates())], interface)
    [call] = fresh_calls([FreshRequest(user, candidates())], interface)
    np.testing.assert_array_equal(call.inputs["history_ids"][0], [(7, 8), (9, 10)])
    with pytest.raises(InvalidRequest, match=r"streams\.behavior\[0\]\.ids"):
        check_fresh_requests(
            [FreshRequest(history(0, streams={"behavior": [Event(NOW, (1, 2, 3))]}), candidates())], interface
        )


def test_interface_json_round_trips_the_history_and_old_interfaces_have_none():
    assert ServingInterface.from_json(TA_INTERFACE.to_json()) == TA_INTERFACE
    old = json.loads(INTERFACE.to_json())
    del old["history"]  # an interface published before rankers took histories
    assert ServingInterface.from_json(json.dumps(old)) == INTERFACE


def test_the_client_sends_the_history_of_the_served_interface(monkeypatch):
    fake = FakeTriton(TA_INTERFACE)  # checks every input against expected_inputs of the interface
    monkeypatch.setattr(client_module, "_triton_client", lambda url: fake)
    with DuetClient("127.0.0.1:8001", timeout_s=1.0, retries=0) as client:
        client.score([replace(score_request(0), recent_history=rows(L + 4))])
        client.score_fresh([FreshRequest(history(1), candidates())])
    (*_, sent_score), (*_, sent_fresh) = [call for call in fake.infers]
    np.testing.assert_array_equal(sent_score["history_ids"][0], rows(L + 4)[-L:])
    assert sent_fresh["history_len"].tolist() == [[3]]
