"""What the DUET clients raise: invalid requests (caught before sending) and server errors.

``ClientError`` is the base; ``Unavailable`` and ``DeadlineExceeded`` are the transient server errors
the clients retry. ``from_triton`` maps a ``tritonclient`` exception onto this hierarchy, keeping the
server's message, its gRPC status (``"StatusCode.UNAVAILABLE"``) and the model that was called.
"""

from __future__ import annotations

from duet_sdk.errors import DuetError


class ClientError(DuetError):
    """Base class of the errors the DUET clients raise."""


class InvalidRequest(ClientError, ValueError):
    """A request does not fit the served interface; ``field`` is a path like ``histories[3].streams.click[5].ids``."""

    def __init__(self, field: str, expected: str, got: object) -> None:
        self.field, self.expected, self.got = field, expected, got
        super().__init__(f"{field}: expected {expected}, got {got!r}")


class ServerError(ClientError):
    """The server (or the channel to it) failed a call: its message, gRPC status and the model called."""

    def __init__(self, message: str, status: str | None = None, model: str | None = None) -> None:
        self.message, self.status, self.model = message, status, model
        super().__init__(f"{model or 'server'}: [{status or 'no status'}] {message}")


class Unavailable(ServerError):
    """The server is unreachable, overloaded or still loading (transient: retried)."""


class DeadlineExceeded(ServerError):
    """A call ran past its deadline (transient: retried)."""


class InvalidArgument(ServerError, InvalidRequest):
    """The server refused a request as invalid (gRPC INVALID_ARGUMENT): its message names the input and
    what was expected. An ``InvalidRequest`` too, so one ``except InvalidRequest`` catches bad input
    found on either side; never retried."""

    def __init__(self, message: str, status: str | None = None, model: str | None = None) -> None:
        self.message, self.status, self.model = message, status, model
        self.field, self.expected, self.got = model or "request", "input the model accepts", message
        ClientError.__init__(self, f"{model or 'server'}: [{status or 'no status'}] {message}")


TRANSIENT = (Unavailable, DeadlineExceeded)
# CANCELLED: the client cancels calls only after another call of the same request failed, and drops
# their results, so a CANCELLED it reports is the server cutting an in-flight call short while it stops
# (seen in a graceful stop under load); inference calls are safe to retry.
_BY_STATUS = {"StatusCode.UNAVAILABLE": Unavailable, "StatusCode.DEADLINE_EXCEEDED": DeadlineExceeded,
              "StatusCode.CANCELLED": Unavailable, "StatusCode.INVALID_ARGUMENT": InvalidArgument}
# Triton answers NOT_FOUND for a model while its versions are being unloaded or loaded (a graceful stop,
# a swap): transient, like a server that is not up yet.
_UNLOADING = ("has no available versions", "is not ready")


def from_triton(exc: Exception, model: str | None) -> ServerError:
    """The ``ServerError`` for a ``tritonclient.utils.InferenceServerException`` raised calling ``model``.

    ``tritonclient.grpc`` sets ``exc.status()`` to ``str(grpc.StatusCode.X)`` (``"StatusCode.UNAVAILABLE"``)
    for RPC failures and to None for client-side failures (those map to a plain ``ServerError``).
    """
    status = exc.status() if hasattr(exc, "status") else None
    message = exc.message() if hasattr(exc, "message") else None
    text = message if message is not None else str(exc)
    if status == "StatusCode.NOT_FOUND" and any(s in text for s in _UNLOADING):
        return Unavailable(text, status, model)
    return _BY_STATUS.get(status, ServerError)(text, status, model)
