"""Clients of DUET's Triton ensembles: request types, validation, tensors and the gRPC clients.

``DuetClient``, ``AsyncDuetClient`` and ``expected_inputs`` load ``duet_sdk.client.client`` (and so
``tritonclient``) on first access; the rest is plain Python and numpy.
"""

from duet_sdk.client.errors import (
    ClientError,
    DeadlineExceeded,
    InvalidArgument,
    InvalidRequest,
    ServerError,
    Unavailable,
)
from duet_sdk.interface import (
    Candidates,
    Embedding,
    Event,
    FreshRequest,
    FreshResult,
    ScoreRequest,
    Scores,
    UserHistory,
)

_LAZY = ("AsyncDuetClient", "DuetClient", "Releases", "expected_inputs", "expected_outputs")
__all__ = ["AsyncDuetClient", "Candidates", "ClientError", "DeadlineExceeded", "DuetClient", "Embedding", "Event",
           "FreshRequest", "FreshResult", "InvalidArgument", "InvalidRequest", "Releases", "ScoreRequest", "Scores",
           "ServerError", "Unavailable", "UserHistory", "expected_inputs", "expected_outputs"]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from duet_sdk.client import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
