"""Clients of DUET's three Triton ensembles over gRPC: ``DuetClient`` (sync) and ``AsyncDuetClient``.

On first use (or ``connect()``) a client reads the ``ServingInterface`` from the ``duet_interface``
parameter of ``duet_upstream``'s config. Each method then validates its users against it (raising
``InvalidRequest`` before anything is sent), splits them into requests of at most ``max_batch`` users
(the async client sends those concurrently), and retries each request on ``Unavailable`` /
``DeadlineExceeded`` with exponential backoff and jitter; other errors raise at once with the server's
message. ``timeout_s`` is the deadline of each attempt.

Releases: every result carries the release that produced it (``model_version``: the model version of
Triton's response). An unpinned call goes to the alias ensembles (``duet_fresh``), which serve the
current release; ``release=V`` pins a call to release V's own ensembles (``duet_fresh_vV``). When an
unpinned response reports a release other than the client's current interface, the client re-reads the
interface from that release's ensemble config, so a new current release is picked up without a
restart. ``releases()`` says which release is current (the version the alias ``duet_upstream``'s
metadata lists) and which are loaded (``duet_downstream_vV`` ready, probed for the ``RELEASE_WINDOW``
releases either side of the current one). It uses only calls open to every client: duet-serve
restricts Triton's repository index (model control) to the operator key.

Example:
    >>> with DuetClient("127.0.0.1:8001", timeout_s=0.5) as client:
    ...     embeddings = client.embed(histories)                      # duet_upstream
    ...     scores = client.score([ScoreRequest(...)])                # duet_downstream, stored codes
    ...     fresh = client.score_fresh([FreshRequest(history, cands)])  # duet_fresh, scores + codes
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from duet_sdk.client.calls import Call, embed_calls, expected_inputs, expected_outputs, fresh_calls, score_calls
from duet_sdk.client.errors import ServerError, from_triton
from duet_sdk.client.retry import RetryPolicy, acall_with_retry, call_with_retry
from duet_sdk.client.validate import check_fresh_requests, check_histories, check_score_requests, check_users
from duet_sdk.errors import ConfigError
from duet_sdk.interface import (
    DOWNSTREAM,
    PARAMETER,
    UPSTREAM,
    Embedding,
    FreshRequest,
    FreshResult,
    ScoreRequest,
    Scores,
    ServingInterface,
    UserHistory,
    release_model,
)

try:
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("duet_sdk.client needs tritonclient with gRPC: pip install 'tritonclient[grpc]'") from exc

__all__ = ["AsyncDuetClient", "DuetClient", "Releases", "expected_inputs", "expected_outputs"]
R = TypeVar("R")


@dataclass(frozen=True)
class Releases:
    """What the server serves: the ``current`` release (the aliases') and every ``loaded`` (pinnable) one."""

    current: int | None
    loaded: tuple[int, ...]


RELEASE_WINDOW = 8  # releases probed on either side of the current one (a repository keeps far fewer on disk)


def current_from_metadata(metadata: Mapping[str, Any]) -> int | None:
    """The current release from ``get_model_metadata("duet_upstream", as_json=True)``: the alias serves
    only that release's version (the newest if a swap shows two for a moment); None if it lists none."""
    versions = [int(v) for v in metadata.get("versions", []) if str(v).isdigit()]
    return max(versions) if versions else None


def probe_window(current: int | None) -> range:
    """The releases whose ``duet_downstream_vV`` ``releases()`` asks about: ``RELEASE_WINDOW`` either side
    of the current one (none without a current release)."""
    if current is None:
        return range(0)
    return range(max(1, current - RELEASE_WINDOW), current + RELEASE_WINDOW + 1)


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
        self._interface: ServingInterface | None = None  # the current release's
        self._interfaces: dict[int, ServingInterface] = {}  # per release, for pinned calls

    def _adopt(self, config: Mapping[str, Any], current: bool) -> ServingInterface:
        interface = interface_from_config(config)
        self._interfaces[int(interface.version)] = interface
        if current:
            self._interface = interface
        return interface

    def _moved(self, release: str, pinned: int | None) -> int | None:
        """The release to adopt as current when an unpinned response came from another release, else None."""
        if pinned is None and self._interface is not None and release != self._interface.version and release.isdigit():
            return int(release)
        return None


def _target(call: Call[Any], release: int | None) -> str:
    """The model a call goes to: the alias, or the pinned release's ensemble."""
    return call.model if release is None else release_model(call.model, release)


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
        """The current release's ``ServingInterface``, fetched once (again with ``refresh``)."""
        if self._interface is None or refresh:
            self._adopt(self._config(UPSTREAM), current=True)
        return self._interface

    @property
    def interface(self) -> ServingInterface:
        return self.connect()

    def interface_for(self, release: int | None) -> ServingInterface:
        """The interface of ``release`` (None: the current one), fetched once per release."""
        if release is None:
            return self.connect()
        if release not in self._interfaces:
            self._adopt(self._config(release_model(UPSTREAM, release)), current=False)
        return self._interfaces[release]

    def releases(self) -> Releases:
        """The current release (``duet_upstream``'s metadata) and the loaded ones (``duet_downstream_vV``
        ready, for V within ``RELEASE_WINDOW`` of the current one); no operator key needed."""
        current = current_from_metadata(self._rpc(UPSTREAM, lambda t: t.get_model_metadata(
            UPSTREAM, as_json=True, client_timeout=self.timeout_s)))
        loaded = [v for v in probe_window(current) if self._rpc(None, lambda t, v=v: t.is_model_ready(
            release_model(DOWNSTREAM, v), client_timeout=self.timeout_s))]
        return Releases(current, tuple(loaded))

    def _config(self, model: str) -> Mapping[str, Any]:
        return self._rpc(model, lambda t: t.get_model_config(model, as_json=True, client_timeout=self.timeout_s))

    def embed(self, histories: Sequence[UserHistory], release: int | None = None) -> list[Embedding]:
        """SIDE codes and vectors of each user, from ``duet_upstream`` (of ``release`` if given); one
        ``Embedding`` per history, in order, each naming the release that produced it."""
        check_users(histories, "histories")
        interface = self.interface_for(release)
        check_histories(histories, interface)
        return self._run(embed_calls(histories, interface), release)

    def score(self, requests: Sequence[ScoreRequest], release: int | None = None) -> list[Scores]:
        """Candidate scores from stored codes (``duet_downstream``, of ``release`` if given: stored codes
        belong to the release that produced them); path "stored", one per request."""
        check_users(requests, "requests")
        interface = self.interface_for(release)
        check_score_requests(requests, interface)
        return self._run(score_calls(requests, interface), release)

    def score_fresh(self, requests: Sequence[FreshRequest], release: int | None = None) -> list[FreshResult]:
        """Candidate scores from full histories (``duet_fresh``, of ``release`` if given), path "fresh", with
        the codes computed."""
        check_users(requests, "requests")
        interface = self.interface_for(release)
        check_fresh_requests(requests, interface)
        return self._run(fresh_calls(requests, interface), release)

    def _run(self, calls: Sequence[Call[R]], release: int | None) -> list[R]:
        return [result for call in calls for result in self._infer(call, release)]

    def _infer(self, call: Call[R], release: int | None) -> list[R]:
        inputs, outputs = infer_inputs(call), [grpcclient.InferRequestedOutput(n) for n in call.outputs]
        model = _target(call, release)
        result = self._rpc(model, lambda t: t.infer(model, inputs, outputs=outputs, client_timeout=self.timeout_s))
        produced = str(result.get_response().model_version)
        moved = self._moved(produced, release)
        if moved is not None:
            self._adopt(self._config(release_model(UPSTREAM, moved)), current=True)
        return call.decode({name: result.as_numpy(name) for name in call.outputs}, produced)

    def _rpc(self, model: str | None, fn: Callable[[Any], R]) -> R:
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
        """The current release's ``ServingInterface``, fetched once (again with ``refresh``)."""
        async with self._lock:
            if self._interface is None or refresh:
                self._adopt(await self._config(UPSTREAM), current=True)
            return self._interface

    async def interface_for(self, release: int | None) -> ServingInterface:
        """See ``DuetClient.interface_for``."""
        if release is None:
            return await self.connect()
        if release not in self._interfaces:
            self._adopt(await self._config(release_model(UPSTREAM, release)), current=False)
        return self._interfaces[release]

    async def releases(self) -> Releases:
        """See ``DuetClient.releases``."""
        current = current_from_metadata(await self._rpc(UPSTREAM, lambda t: t.get_model_metadata(
            UPSTREAM, as_json=True, client_timeout=self.timeout_s)))
        loaded = [v for v in probe_window(current) if await self._rpc(None, lambda t, v=v: t.is_model_ready(
            release_model(DOWNSTREAM, v), client_timeout=self.timeout_s))]
        return Releases(current, tuple(loaded))

    async def _config(self, model: str) -> Mapping[str, Any]:
        return await self._rpc(model, lambda t: t.get_model_config(model, as_json=True, client_timeout=self.timeout_s))

    async def embed(self, histories: Sequence[UserHistory], release: int | None = None) -> list[Embedding]:
        """See ``DuetClient.embed``."""
        check_users(histories, "histories")
        interface = await self.interface_for(release)
        check_histories(histories, interface)
        return await self._run(embed_calls(histories, interface), release)

    async def score(self, requests: Sequence[ScoreRequest], release: int | None = None) -> list[Scores]:
        """See ``DuetClient.score``."""
        check_users(requests, "requests")
        interface = await self.interface_for(release)
        check_score_requests(requests, interface)
        return await self._run(score_calls(requests, interface), release)

    async def score_fresh(self, requests: Sequence[FreshRequest], release: int | None = None) -> list[FreshResult]:
        """See ``DuetClient.score_fresh``."""
        check_users(requests, "requests")
        interface = await self.interface_for(release)
        check_fresh_requests(requests, interface)
        return await self._run(fresh_calls(requests, interface), release)

    async def _run(self, calls: Sequence[Call[R]], release: int | None) -> list[R]:
        tasks = [asyncio.ensure_future(self._infer(call, release)) for call in calls]
        try:
            chunks = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # let them finish cancelling
            raise
        return [result for chunk in chunks for result in chunk]

    async def _infer(self, call: Call[R], release: int | None) -> list[R]:
        inputs, outputs = infer_inputs(call), [grpcclient.InferRequestedOutput(n) for n in call.outputs]
        model = _target(call, release)
        result = await self._rpc(model, lambda t: t.infer(model, inputs, outputs=outputs,
                                                          client_timeout=self.timeout_s))
        produced = str(result.get_response().model_version)
        moved = self._moved(produced, release)
        if moved is not None:
            self._adopt(await self._config(release_model(UPSTREAM, moved)), current=True)
        return call.decode({name: result.as_numpy(name) for name in call.outputs}, produced)

    async def _rpc(self, model: str | None, fn: Callable[[Any], Awaitable[R]]) -> R:
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
