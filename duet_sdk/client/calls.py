"""What each client method sends to which ensemble, and how it reads the answer back (no network here).

A ``Call`` is one Triton request of at most ``max_batch`` users: its wire inputs, the outputs it asks
for and a ``decode`` that turns those outputs, and the release the response reports (its model
version), into per-user results. Per-user scalars (``request_time``,
``<s>_len``) travel as (B, 1): Triton needs a non-empty ``dims`` per input, so the ensembles declare
them ``dims: [1]`` (with ``reshape: { shape: [ ] }`` to give the models the (B,) of the interface).

Example:
    >>> calls = embed_calls(histories, interface)  # one Call per max_batch users
    >>> expected_inputs(interface, UPSTREAM)["click_ids"]
    ('INT64', (-1, -1, 4))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from duet_sdk.client.errors import ServerError
from duet_sdk.client.tensors import (
    candidate_tensors,
    chunks,
    code_tensors,
    history_tensors,
    recent_history_tensors,
    split_scores,
    static_tensors,
)
from duet_sdk.errors import ConfigError
from duet_sdk.interface import (
    DOWNSTREAM,
    FRESH,
    UPSTREAM,
    Embedding,
    FreshRequest,
    FreshResult,
    ScoreRequest,
    Scores,
    ServingInterface,
    UserHistory,
)

R = TypeVar("R")
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Call(Generic[R]):
    """One request to ``model``: ``inputs`` in wire layout, ``outputs`` to fetch, ``decode`` (outputs, release
    of the response) -> results."""

    model: str
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    decode: Callable[[Mapping[str, np.ndarray | None], str], list[R]]


def embed_calls(histories: Sequence[UserHistory], interface: ServingInterface) -> list[Call[Embedding]]:
    """``duet_upstream`` calls for validated histories; each yields one ``Embedding`` per user."""
    return [_embed_call(chunk, interface) for chunk in chunks(histories, interface.max_batch)]


def score_calls(requests: Sequence[ScoreRequest], interface: ServingInterface) -> list[Call[Scores]]:
    """``duet_downstream`` calls for validated requests; each yields ``Scores`` (path "stored") per user."""
    return [_score_call(chunk, interface) for chunk in chunks(requests, interface.max_batch)]


def fresh_calls(requests: Sequence[FreshRequest], interface: ServingInterface) -> list[Call[FreshResult]]:
    """``duet_fresh`` calls for validated requests; each yields scores (path "fresh") and codes per user."""
    return [_fresh_call(chunk, interface) for chunk in chunks(requests, interface.max_batch)]


def expected_inputs(interface: ServingInterface, ensemble: str) -> dict[str, tuple[str, Shape]]:
    """Input name -> (Triton datatype, wire shape with -1 for dynamic axes, batch first) of an ensemble."""
    static = {"static_sparse": ("INT64", (-1, interface.static_sparse)),
              "static_dense": ("FP32", (-1, interface.static_dense))}
    history = {"request_time": ("INT64", (-1, 1)), **static}
    for name, info in interface.streams.items():
        history |= {f"{name}_ids": ("INT64", (-1, -1, info.event_fields)), f"{name}_ts": ("INT64", (-1, -1)),
                    f"{name}_len": ("INT64", (-1, 1))}
    items = {"item_sparse": ("INT64", (-1, -1, interface.item_sparse)),
             "item_dense": ("FP32", (-1, -1, interface.item_dense))}
    codes = {f"{name}_codes": ("INT64", (-1, info.levels)) for name, info in interface.embeddings.items()}
    if interface.history is not None:  # the ranker's target-attention history
        items |= {"history_ids": ("INT64", (-1, -1, len(interface.history.fields))), "history_len": ("INT64", (-1, 1))}
    return _by_ensemble(ensemble, {UPSTREAM: history, DOWNSTREAM: static | items | codes, FRESH: history | items})


def expected_outputs(interface: ServingInterface, ensemble: str) -> dict[str, tuple[str, Shape]]:
    """Output name -> (Triton datatype, shape with -1 for dynamic axes, batch first) of an ensemble."""
    codes = {f"{name}_codes": ("INT64", (-1, info.levels)) for name, info in interface.embeddings.items()}
    vectors = {f"{name}_embedding": ("FP32", (-1, info.dim)) for name, info in interface.embeddings.items()}
    scores = {"scores": ("FP32", (-1, -1, len(interface.tasks)))}
    return _by_ensemble(ensemble, {UPSTREAM: codes | vectors, DOWNSTREAM: scores, FRESH: scores | codes})


def _by_ensemble(ensemble: str, table: dict[str, dict[str, tuple[str, Shape]]]) -> dict[str, tuple[str, Shape]]:
    if ensemble not in table:
        raise ConfigError("ensemble", f"one of {sorted(table)}", ensemble)
    return table[ensemble]


def _wire(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-user scalars (B,) -> (B, 1), the shape Triton's inference API takes for ``dims: [1]``."""
    return {name: a.reshape(-1, 1) if a.ndim == 1 else a for name, a in tensors.items()}


def _embed_call(histories: Sequence[UserHistory], interface: ServingInterface) -> Call[Embedding]:
    names = interface.embeddings

    def decode(out: Mapping[str, np.ndarray | None], release: str) -> list[Embedding]:
        b = len(histories)
        codes = {n: _output(out, f"{n}_codes", (b, i.levels), UPSTREAM) for n, i in names.items()}
        vectors = {n: _output(out, f"{n}_embedding", (b, i.dim), UPSTREAM) for n, i in names.items()}
        return [Embedding(h.user_id, {n: tuple(codes[n][k].tolist()) for n in names},
                          {n: tuple(vectors[n][k].tolist()) for n in names}, release)
                for k, h in enumerate(histories)]

    return Call(UPSTREAM, _wire(history_tensors(histories, interface)),
                tuple(expected_outputs(interface, UPSTREAM)), decode)


def _score_call(requests: Sequence[ScoreRequest], interface: ServingInterface) -> Call[Scores]:
    items, counts = candidate_tensors([r.candidates for r in requests], interface)
    tensors = static_tensors([r.static_sparse for r in requests], [r.static_dense for r in requests], interface)
    tensors |= items | code_tensors([r.codes for r in requests], interface)
    if interface.history is not None:
        tensors |= recent_history_tensors([r.recent_history for r in requests], interface.history)

    def decode(out: Mapping[str, np.ndarray | None], release: str) -> list[Scores]:
        scores = _output(out, "scores", (len(requests), items["item_sparse"].shape[1], len(interface.tasks)),
                         DOWNSTREAM)
        return [Scores(r.user_id, _rows(s), "stored", release)
                for r, s in zip(requests, split_scores(scores, counts))]

    return Call(DOWNSTREAM, _wire(tensors), tuple(expected_outputs(interface, DOWNSTREAM)), decode)


def _fresh_call(requests: Sequence[FreshRequest], interface: ServingInterface) -> Call[FreshResult]:
    histories = [r.history for r in requests]
    items, counts = candidate_tensors([r.candidates for r in requests], interface)
    names = interface.embeddings

    def decode(out: Mapping[str, np.ndarray | None], release: str) -> list[FreshResult]:
        b = len(requests)
        scores = _output(out, "scores", (b, items["item_sparse"].shape[1], len(interface.tasks)), FRESH)
        codes = {n: _output(out, f"{n}_codes", (b, i.levels), FRESH) for n, i in names.items()}
        return [FreshResult(Scores(h.user_id, _rows(s), "fresh", release),
                            {n: tuple(codes[n][k].tolist()) for n in names})
                for k, (h, s) in enumerate(zip(histories, split_scores(scores, counts)))]

    tensors = history_tensors(histories, interface) | items
    if interface.history is not None:
        tensors |= recent_history_tensors([fresh_recent_history(r, interface) for r in requests], interface.history)
    return Call(FRESH, _wire(tensors), tuple(expected_outputs(interface, FRESH)), decode)


def fresh_recent_history(request: FreshRequest, interface: ServingInterface) -> Sequence[Sequence[int]]:
    """The ranker's history of a fresh request: as given, else the history stream's events' fields."""
    if request.recent_history is not None:
        return request.recent_history
    return interface.history.rows(request.history.streams.get(interface.history.stream, ()))


def _output(out: Mapping[str, np.ndarray | None], name: str, shape: Shape, model: str) -> np.ndarray:
    """Output ``name``, checked to have ``shape``; a missing or misshapen output is a ``ServerError``."""
    array = out.get(name)
    if array is None:
        raise ServerError(f"the response has no output {name!r}", None, model)
    if tuple(array.shape) != shape:
        raise ServerError(f"output {name!r} has shape {tuple(array.shape)}, expected {shape}", None, model)
    return array


def _rows(scores: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(row) for row in scores.tolist())
