"""Request validation names the offending field, accepts what is valid on purpose (long, empty streams)."""

import math

import pytest
from client_fakes import INTERFACE, NOW, candidates, fresh_request, history, score_request

from duet_sdk.client.errors import ClientError, InvalidRequest
from duet_sdk.client.validate import check_fresh_requests, check_histories, check_score_requests
from duet_sdk.errors import DuetError
from duet_sdk.interface import Candidates, Event, FreshRequest


def _clicks(*events):
    return {"click": list(events)}


@pytest.mark.parametrize(
    "bad, field",
    [
        (history(streams={"likes": []}), "histories[1].streams.likes"),
        (history(streams=_clicks(Event(NOW, (1, 2)))), "histories[1].streams.click[0].ids"),
        (
            history(streams=_clicks(Event(NOW - 1, (1, 2, 3)), Event(NOW, (1, 2, 3, 4)))),
            "histories[1].streams.click[1].ids",
        ),
        (history(streams=_clicks(Event(NOW, (1, 2.5, 3)))), "histories[1].streams.click[0].ids[1]"),
        (history(streams=_clicks(Event(NOW, (1, 2**63, 3)))), "histories[1].streams.click[0].ids[1]"),
        (history(streams=_clicks(Event(NOW, (1, "3", 3)))), "histories[1].streams.click[0].ids[1]"),
        (history(streams=_clicks(Event(NOW, (1, None, 3)))), "histories[1].streams.click[0].ids[1]"),
        (history(streams=_clicks(Event(-1, (1, 2, 3)))), "histories[1].streams.click[0].ts"),
        (history(request_time=2**33, streams=_clicks(Event(2**32 + 1, (1, 2, 3)))), "histories[1].request_time"),
        (
            history(streams=_clicks(Event(NOW - 5, (1, 2, 3)), Event(NOW - 9, (1, 2, 3)))),
            "histories[1].streams.click[1].ts",
        ),
        (history(streams=_clicks(Event(NOW + 1, (1, 2, 3)))), "histories[1].streams.click[0].ts"),
        (history(streams={"click": [(NOW, (1, 2, 3))]}), "histories[1].streams.click[0]"),
        (history(request_time=-5), "histories[1].request_time"),
        (history(static_sparse=(1,)), "histories[1].static_sparse"),
        (history(static_sparse=(1, "a")), "histories[1].static_sparse[1]"),
        (history(static_dense=(math.nan,)), "histories[1].static_dense[0]"),
        (history(static_dense=(math.inf,)), "histories[1].static_dense[0]"),
        (history(static_dense=(1e39,)), "histories[1].static_dense[0]"),  # finite as float64, inf as float32
        (history(static_dense=(-3.5e38,)), "histories[1].static_dense[0]"),
        (history(static_dense=()), "histories[1].static_dense"),
        (history(user_id=3), "histories[1].user_id"),
        ("not a history", "histories[1]"),
    ],
)
def test_invalid_history_names_the_field(bad, field):
    with pytest.raises(InvalidRequest) as info:
        check_histories([history(), bad], INTERFACE)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: expected ")


def test_invalid_request_is_a_client_error_and_a_value_error():
    with pytest.raises(InvalidRequest) as info:
        check_histories([history(static_sparse=(1,))], INTERFACE)
    assert isinstance(info.value, ClientError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, DuetError)
    assert str(info.value) == "histories[0].static_sparse: expected 2 int64s, got '1 values'"


@pytest.mark.parametrize("users", [[], ()])
def test_empty_user_list_is_rejected(users):
    with pytest.raises(InvalidRequest, match="histories: expected at least one user"):
        check_histories(users, INTERFACE)


def test_long_empty_and_missing_streams_are_valid():
    long_clicks = _clicks(*(Event(NOW - 100 + i, (i, i, i)) for i in range(50)))  # max_len is 6
    check_histories([history(streams=long_clicks), history(streams={}), history(clicks=0, convs=0)], INTERFACE)


def test_more_users_than_max_batch_is_valid():
    check_histories([history(u) for u in range(3 * INTERFACE.max_batch + 1)], INTERFACE)


def test_events_at_request_time_and_ties_are_valid():
    check_histories([history(streams=_clicks(Event(NOW, (1, 2, 3)), Event(NOW, (4, 5, 6))))], INTERFACE)


@pytest.mark.parametrize(
    "codes, field",
    [
        ({"click": (1, 2)}, "requests[0].codes.conv"),
        ({"click": (1, 2), "conv": (0, 1, 7), "extra": (1,)}, "requests[0].codes.extra"),
        ({"click": (1,), "conv": (0, 1, 7)}, "requests[0].codes.click"),
        ({"click": (1, 16), "conv": (0, 1, 7)}, "requests[0].codes.click[1]"),
        ({"click": (1, 2), "conv": (0, -1, 7)}, "requests[0].codes.conv[1]"),
        ({"click": (1, 2), "conv": (0, 1, 8)}, "requests[0].codes.conv[2]"),
        ({"click": (1, 2), "conv": (0, 1.0, 7)}, "requests[0].codes.conv[1]"),
    ],
)
def test_invalid_codes_name_the_field(codes, field):
    with pytest.raises(InvalidRequest) as info:
        check_score_requests([score_request(codes=codes)], INTERFACE)
    assert info.value.field == field


@pytest.mark.parametrize(
    "bad, field",
    [
        (Candidates([], []), "requests[0].candidates.item_sparse"),
        (candidates(INTERFACE.max_candidates + 1), "requests[0].candidates.item_sparse"),
        (Candidates([(1, 2), (3, 4)], [(0.0, 0.0, 0.0)]), "requests[0].candidates.item_dense"),
        (Candidates([(1, 2), (3,)], [(0.0, 0.0, 0.0)] * 2), "requests[0].candidates.item_sparse[1]"),
        (Candidates([(1, 2)], [(0.0, math.nan, 0.0)]), "requests[0].candidates.item_dense[0][1]"),
        (Candidates([(1, 2)], [(0.0, 0.0, 1e39)]), "requests[0].candidates.item_dense[0][2]"),
        (Candidates([(1, 2)], [(0.0, 0.0)]), "requests[0].candidates.item_dense[0]"),
    ],
)
def test_invalid_candidates_name_the_field(bad, field):
    with pytest.raises(InvalidRequest) as info:
        check_fresh_requests([FreshRequest(history(), bad)], INTERFACE)
    assert info.value.field == field


def test_fresh_requests_check_the_history_under_its_own_path():
    with pytest.raises(InvalidRequest) as info:
        check_fresh_requests(
            [fresh_request(), FreshRequest(history(static_dense=(math.nan,)), candidates())], INTERFACE
        )
    assert info.value.field == "requests[1].history.static_dense[0]"


def test_max_candidates_and_valid_requests_pass():
    check_score_requests([score_request(n=INTERFACE.max_candidates), score_request(1, n=1)], INTERFACE)
    check_fresh_requests([fresh_request(n=INTERFACE.max_candidates)], INTERFACE)
