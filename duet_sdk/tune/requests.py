"""Valid load for the tuner and the benchmarks: sampled users with full histories and a fixed number of
candidates, turned into the wire tensors of each ensemble (the client's own encoding) and of each
component model, and into ``tritonclient`` inputs.

Example:
    >>> wire = ensemble_requests(interface, "duet_fresh", users=1, candidates=16, n=8)
    >>> infer_inputs(wire[0])  # list[tritonclient.grpc.InferInput]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from duet_sdk import interface as api
from duet_sdk.client.calls import embed_calls, fresh_calls, score_calls
from duet_sdk.errors import ConfigError
from duet_sdk.interface import Candidates, Event, FreshRequest, ScoreRequest, ServingInterface, UserHistory

NOW = 1_702_000_000


def sample_users(
    interface: ServingInterface, n: int, candidates: int, seed: int = 0
) -> list[tuple[UserHistory, Candidates]]:
    """``n`` users with every stream at its full length (the worst case a model serves), Zipf-like item
    IDs (a long tail) and ``candidates`` candidates each."""
    if not 1 <= candidates <= interface.max_candidates:
        raise ConfigError("candidates", f"1..{interface.max_candidates} (the export's max_candidates)", candidates)
    rng = np.random.default_rng(seed)
    users = []
    for u in range(n):
        streams = {}
        for name, info in interface.streams.items():
            ts = np.sort(NOW - rng.integers(0, 30 * 86_400, info.max_len))
            ids = rng.zipf(1.3, size=(info.max_len, info.event_fields)) % 10**9
            streams[name] = [Event(int(t), tuple(int(x) for x in row)) for t, row in zip(ts, ids)]
        history = UserHistory(
            f"user-{seed}-{u}",
            NOW,
            [int(x) for x in rng.integers(0, 50, interface.static_sparse)],
            [float(x) for x in rng.normal(size=interface.static_dense)],
            streams,
        )
        items = Candidates(
            [[int(x) for x in rng.zipf(1.3, interface.item_sparse) % 10**6] for _ in range(candidates)],
            [[float(x) for x in rng.normal(size=interface.item_dense)] for _ in range(candidates)],
        )
        users.append((history, items))
    return users


def _codes(interface: ServingInterface, rng: np.random.Generator) -> dict[str, tuple[int, ...]]:
    return {
        name: tuple(int(x) for x in rng.integers(0, info.codebook_size, info.levels))
        for name, info in interface.embeddings.items()
    }


def ensemble_requests(
    interface: ServingInterface, ensemble: str, users: int = 1, candidates: int = 16, n: int = 8, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """``n`` requests of ``users`` users each to ``ensemble``, as wire tensors (name -> array, batch first)."""
    if not 1 <= users <= interface.max_batch:
        raise ConfigError("users", f"1..{interface.max_batch} (the interface's max_batch)", users)
    sampled = sample_users(interface, n * users, candidates, seed)
    rng = np.random.default_rng(seed + 1)
    out = []
    for start in range(0, n * users, users):
        group = sampled[start : start + users]
        if ensemble == api.UPSTREAM:
            calls = embed_calls([h for h, _ in group], interface)
        elif ensemble == api.DOWNSTREAM:
            calls = score_calls(
                [ScoreRequest(h.user_id, h.static_sparse, h.static_dense, _codes(interface, rng), c) for h, c in group],
                interface,
            )
        elif ensemble == api.FRESH:
            calls = fresh_calls([FreshRequest(h, c) for h, c in group], interface)
        else:
            raise ConfigError("ensemble", f"one of {api.ENSEMBLES}", ensemble)
        out.append(calls[0].inputs)
    return out


def model_requests(
    input_names: Sequence[str],
    interface: ServingInterface,
    users: int = 1,
    candidates: int = 16,
    n: int = 8,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Wire requests of a component model taking ``input_names``: the inputs of the first ensemble
    (upstream, downstream, fresh) that has them all."""
    for ensemble in api.ENSEMBLES:
        requests = ensemble_requests(interface, ensemble, users, candidates, n, seed)
        if set(input_names) <= set(requests[0]):
            return [{name: r[name] for name in input_names} for r in requests]
    raise ConfigError("model inputs", "inputs that one of the ensembles takes", sorted(input_names))


def infer_inputs(arrays: dict[str, np.ndarray]) -> list:
    """``tritonclient.grpc.InferInput``s of wire tensors, data set."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def unwire(arrays: dict[str, np.ndarray], signature_inputs: Sequence[dict]) -> dict[str, np.ndarray]:
    """Wire tensors as a model's runtime takes them: per-user scalars (B, 1) back to (B,) where the
    signature says so."""
    return {
        s["name"]: arrays[s["name"]].reshape(-1) if len(s["shape"]) == 1 else arrays[s["name"]]
        for s in signature_inputs
    }
