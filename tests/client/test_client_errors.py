"""Mapping tritonclient errors onto the client hierarchy keeps the server's message, status and model."""

import grpc
import pytest
from tritonclient.grpc._utils import get_error_grpc
from tritonclient.utils import InferenceServerException

from duet_sdk.client.errors import (
    ClientError,
    DeadlineExceeded,
    InvalidArgument,
    InvalidRequest,
    ServerError,
    Unavailable,
    from_triton,
)
from duet_sdk.errors import DuetError


class _RpcError(grpc.RpcError):
    """What grpc raises; tritonclient turns it into an InferenceServerException via ``get_error_grpc``."""

    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details

    def debug_error_string(self):
        return "debug"


@pytest.mark.parametrize("code, kind", [
    (grpc.StatusCode.UNAVAILABLE, Unavailable),
    (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
    (grpc.StatusCode.CANCELLED, Unavailable),  # the server cut the call short while stopping
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
    (grpc.StatusCode.NOT_FOUND, ServerError),
    (grpc.StatusCode.INTERNAL, ServerError),
])
def test_grpc_status_maps_to_its_error_class(code, kind):
    exc = get_error_grpc(_RpcError(code, "the server said so"))  # exactly what tritonclient.grpc raises
    error = from_triton(exc, "duet_upstream")
    assert type(error) is kind
    assert error.message == "the server said so" and error.status == str(code) and error.model == "duet_upstream"
    assert "the server said so" in str(error) and "duet_upstream" in str(error)


def test_client_side_tritonclient_error_without_status_is_a_plain_server_error():
    error = from_triton(InferenceServerException("model version must be a string"), "duet_fresh")
    assert type(error) is ServerError and error.status is None and error.message == "model version must be a string"


def test_hierarchy():
    assert issubclass(Unavailable, ServerError) and issubclass(DeadlineExceeded, ServerError)
    assert issubclass(ServerError, ClientError) and issubclass(ClientError, DuetError)
    assert issubclass(InvalidRequest, ClientError) and issubclass(InvalidRequest, ValueError)
    error = InvalidRequest("histories[3].streams.click[5].ids", "3 int64s", "2 values")
    assert str(error) == "histories[3].streams.click[5].ids: expected 3 int64s, got '2 values'"


def test_invalid_argument_is_an_invalid_request_and_never_retried():
    from duet_sdk.client.errors import TRANSIENT

    error = from_triton(get_error_grpc(_RpcError(grpc.StatusCode.INVALID_ARGUMENT, "input click_codes: expected ...")),
                        "ranker")
    assert isinstance(error, InvalidRequest) and isinstance(error, ServerError) and not isinstance(error, TRANSIENT)
    assert "input click_codes" in str(error) and error.status == "StatusCode.INVALID_ARGUMENT"


@pytest.mark.parametrize("details", ["Request for unknown model: 'ranker' has no available versions",
                                     "Request for unknown model: 'duet_fresh' version 2 is not ready"])
def test_a_model_being_unloaded_is_unavailable_and_retried(details):
    error = from_triton(get_error_grpc(_RpcError(grpc.StatusCode.NOT_FOUND, details)), "duet_fresh")
    assert type(error) is Unavailable and error.message == details


def test_an_unknown_model_stays_a_server_error():
    error = from_triton(
        get_error_grpc(_RpcError(grpc.StatusCode.NOT_FOUND, "Request for unknown model: 'x' is not found")), "x"
    )
    assert type(error) is ServerError
