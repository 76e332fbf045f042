"""Clients of DUET's three Triton ensembles over gRPC: ``DuetClient`` (sync) and ``AsyncDuetClient``.

On first use (or ``connect()``) a client reads the ``ServingInterface`` from the ``duet_interface``
parameter of ``duet_upstream``'s config. Each method then validates its users against it (raising
``InvalidRequest`` before anything is sent), splits them into requests of at most ``max_batch`` users
(the async client sends those concurrently), and retries each request on ``Unavailable`` /
``DeadlineExceeded`` with exponential backoff and jitter; other errors raise at once with the server's
message. ``timeout_s`` is the deadline of each attempt. Results carry the interface's ``version``.

Example:
    >>> with DuetClient("127.0.0.1:8001", timeout_s=0.5) as client:
    ...     embeddings = client.embed(histories)                      # duet_upstream
    ...     scores = client.score([ScoreRequest(...)])                # duet_downstream, stored codes
    ...     fresh = client.score_fresh([FreshRequest(history, cands)])  # duet_fresh, scores + codes
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Self, TypeVar

from duet_sdk.client.calls import Call, embed_calls, expected_inputs, expected_outputs, fresh_calls, score_calls
from duet_sdk.client.errors import ServerError, from_triton
from duet_sdk.client.retry import RetryPolicy, acall_with_retry, call_with_retry
from duet_sdk.client.types import Embedding, FreshRequest, FreshResult, ScoreRequest, Scores, UserHistory
from duet_sdk.client.validate import check_fresh_requests, check_histories, check_score_requests, check_users
from duet_sdk.errors import ConfigError
from duet_sdk.serving.interface import PARAMETER, UPSTREAM, ServingInterface

try:
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("duet_sdk.client needs tritonclient with gRPC: pip install 'tritonclient[grpc]'") from exc

__all__ = ["AsyncDuetClient", "DuetClient", "expected_inputs", "expected_outputs"]
R = TypeVar("R")


def _triton_client(url: str) -> Any:
    """The sync tritonclient (tests replace this factory)."""
    return grpcclient.InferenceServerClient(url)


def _aio_triton_client(url: str) -> Any:
    """The asyncio tritonclient (tests replace this factory)."""
    return grpcaio.InferenceServerClient(url)


def check_address(url: object) -> str:
    """``host:port`` (a name, IPv4 or ``[IPv6]``; port 1..65535; no scheme) or ``unix:PATH``, else
    ConfigError: gRPC would otherwise retry a malformed address as if the server were down, default the
    port to 443, or wrap an out-of-range port onto another one."""
    expected = "host:port (port 1..65535, no scheme) or unix:PATH"
    if not isinstance(url, str) or not url or any(c.isspace() for c in url):
        raise ConfigError("url", expected, url)
    if url.startswith("unix:"):
        return url
    host, sep, port = url.rpartition(":")
    if not sep or not host or "://" in url or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError("url", expected, url)
    if host.startswith("["):
        if not host.endswith("]"):
            raise ConfigError("url", expected, url)
    elif ":" in host or "/" in host:
        raise ConfigError("url", expected, url)
    return url


class _Base:
    def __init__(self, url: str, timeout_s: float, retries: int, backoff_s: float, max_backoff_s: float) -> None:
        if not (isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
                and 0 < timeout_s < float("inf")):
            raise ConfigError("timeout_s", "a finite number of seconds > 0", timeout_s)
        self.url, self.timeout_s = check_address(url), float(timeout_s)
        self.policy = RetryPolicy(retries, backoff_s, max_backoff_s)
        self._triton: Any = None
        self._interface: ServingInterface | None = None


class DuetClient(_Base):
    """Blocking client; a context manager that closes its gRPC channel.

    Args:
        url: ``host:port`` of Triton's gRPC endpoint.
        timeout_s: deadline of each attempt of each request, in seconds.
        retries: retries of a request after a transient error (so ``retries + 1`` attempts at most).
        backoff_s, max_backoff_s: the first backoff and its cap; it doubles per retry, with jitter.
    """

    def __init__(self, url: str = "127.0.0.1:8001", timeout_s: float = 1.0, retries: int = 3,
                 backoff_s: float = 0.05, max_backoff_s: float = 1.0) -> None:
        super().__init__(url, timeout_s, retries, backoff_s, max_backoff_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the gRPC channel (a later call opens a new one)."""
        if self._triton is not None:
            triton, self._triton = self._triton, None
            triton.close()

    def connect(self, refresh: bool = False) -> ServingInterface:
        """The server's ``ServingInterface``, fetched once (again with ``refresh``)."""
        if self._interface is None or refresh:
            config = self._rpc(UPSTREAM, lambda t: t.get_model_config(UPSTREAM, as_json=True,
                                                                      client_timeout=self.timeout_s))
            self._interface = interface_from_config(config)
        return self._interface

    @property
    def interface(self) -> ServingInterface:
        return self.connect()

    def embed(self, histories: Sequence[UserHistory]) -> list[Embedding]:
        """SIDE codes and vectors of each user, from ``duet_upstream``; one ``Embedding`` per history, in order."""
        check_users(histories, "histories")
        interface = self.connect()
        check_histories(histories, interface)
        return self._run(embed_calls(histories, interface))

    def score(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        """Candidate scores from stored codes (``duet_downstream``); path "stored", one per request."""
        check_users(requests, "requests")
        interface = self.connect()
        check_score_requests(requests, interface)
        return self._run(score_calls(requests, interface))

    def score_fresh(self, requests: Sequence[FreshRequest]) -> list[FreshResult]:
        """Candidate scores from full histories (``duet_fresh``), path "fresh", with the codes computed."""
        check_users(requests, "requests")
        interface = self.connect()
        check_fresh_requests(requests, interface)
        return self._run(fresh_calls(requests, interface))

    def _run(self, calls: Sequence[Call[R]]) -> list[R]:
        return [result for call in calls for result in self._infer(call)]

    def _infer(self, call: Call[R]) -> list[R]:
        inputs, outputs = infer_inputs(call), [grpcclient.InferRequestedOutput(n) for n in call.outputs]
        result = self._rpc(call.model, lambda t: t.infer(call.model, inputs, outputs=outputs,
                                                         client_timeout=self.timeout_s))
        return call.decode({name: result.as_numpy(name) for name in call.outputs})

    def _rpc(self, model: str, fn: Callable[[Any], R]) -> R:
        """``fn(tritonclient)`` with retries; tritonclient errors become ``ServerError``s."""
        def attempt() -> R:
            if self._triton is None:
                self._triton = _triton_client(self.url)
            try:
                return fn(self._triton)
            except InferenceServerException as exc:
                raise from_triton(exc, model) from exc

        return call_with_retry(attempt, self.policy)


class AsyncDuetClient(_Base):
    """``asyncio`` client with the same methods as ``DuetClient`` (awaitable); use ``async with``.

    The requests of one call (one per ``max_batch`` users) are sent concurrently; if one fails, the
    others are cancelled and its error is raised.
    """

    def __init__(self, url: str = "127.0.0.1:8001", timeout_s: float = 1.0, retries: int = 3,
                 backoff_s: float = 0.05, max_backoff_s: float = 1.0) -> None:
        super().__init__(url, timeout_s, retries, backoff_s, max_backoff_s)
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the gRPC channel (a later call opens a new one)."""
        if self._triton is not None:
            triton, self._triton = self._triton, None
            await triton.close()

    async def connect(self, refresh: bool = False) -> ServingInterface:
        """The server's ``ServingInterface``, fetched once (again with ``refresh``)."""
        async with self._lock:
            if self._interface is None or refresh:
                config = await self._rpc(UPSTREAM, lambda t: t.get_model_config(UPSTREAM, as_json=True,
                                                                                client_timeout=self.timeout_s))
                self._interface = interface_from_config(config)
            return self._interface

    async def embed(self, histories: Sequence[UserHistory]) -> list[Embedding]:
        """See ``DuetClient.embed``."""
        check_users(histories, "histories")
        interface = await self.connect()
        check_histories(histories, interface)
        return await self._run(embed_calls(histories, interface))

    async def score(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        """See ``DuetClient.score``."""
        check_users(requests, "requests")
        interface = await self.connect()
        check_score_requests(requests, interface)
        return await self._run(score_calls(requests, interface))

    async def score_fresh(self, requests: Sequence[FreshRequest]) -> list[FreshResult]:
        """See ``DuetClient.score_fresh``."""
        check_users(requests, "requests")
        interface = await self.connect()
        check_fresh_requests(requests, interface)
        return await self._run(fresh_calls(requests, interface))

    async def _run(self, calls: Sequence[Call[R]]) -> list[R]:
        tasks = [asyncio.ensure_future(self._infer(call)) for call in calls]
        try:
            chunks = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # let them finish cancelling
            raise
        return [result for chunk in chunks for result in chunk]

    async def _infer(self, call: Call[R]) -> list[R]:
        inputs, outputs = infer_inputs(call), [grpcclient.InferRequestedOutput(n) for n in call.outputs]
        result = await self._rpc(call.model, lambda t: t.infer(call.model, inputs, outputs=outputs,
                                                               client_timeout=self.timeout_s))
        return call.decode({name: result.as_numpy(name) for name in call.outputs})

    async def _rpc(self, model: str, fn: Callable[[Any], Awaitable[R]]) -> R:
        async def attempt() -> R:
            if self._triton is None:
                self._triton = _aio_triton_client(self.url)
            try:
                return await fn(self._triton)
            except InferenceServerException as exc:
                raise from_triton(exc, model) from exc

        return await acall_with_retry(attempt, self.policy)


def infer_inputs(call: Call[Any]) -> list[Any]:
    """The ``InferInput``s of a call, with their data set."""
    inputs = []
    for name, array in call.inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def interface_from_config(config: Mapping[str, Any]) -> ServingInterface:
    """The ``ServingInterface`` in a ``get_model_config(..., as_json=True)`` answer (or its ``config``)."""
    parameters = config.get("config", config).get("parameters", {})
    text = parameters.get(PARAMETER, {}).get("string_value")
    if not text:
        raise ServerError(f"the model config has no parameter {PARAMETER!r}; is this a DUET repository?",
                          None, UPSTREAM)
    try:
        return ServingInterface.from_json(text)
    except ConfigError as exc:
        raise ServerError(str(exc), None, UPSTREAM) from exc
