"""In-process PyTorch answers for what the ensembles serve, to check a deployment against.

``InProcessDuet`` extracts the same serving modules ``duet-export`` converts (from the same gated
checkpoints) and runs them eagerly, one user at a time, on exactly the tensors a client would send.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from duet_sdk._extras import missing_extra

try:
    import torch
except ModuleNotFoundError as exc:  # the [train] extra is not installed
    raise missing_extra(exc, __name__) from exc

from duet_sdk.client.calls import fresh_recent_history
from duet_sdk.client.tensors import (
    candidate_tensors,
    code_tensors,
    history_tensors,
    recent_history_tensors,
    static_tensors,
)
from duet_sdk.export.extract import ServingModel
from duet_sdk.interface import Candidates, FreshRequest, ServingInterface, UserHistory


class InProcessDuet:
    """Eager serving modules of ``runs`` (a duet-train output): ``<e>_encoder`` per encoder and ``ranker``."""

    def __init__(self, runs: Path, interface: ServingInterface, ranker: str = "duet") -> None:
        from duet_sdk.export.pipeline import build_serving
        from duet_sdk.export.sources import select_all
        from duet_sdk.export.spec import ExportSpec, ShapeSpec

        encoders = tuple(interface.embeddings)
        shapes = ShapeSpec(
            opt_batch=1, max_batch=interface.max_batch, opt_candidates=1, max_candidates=interface.max_candidates
        )
        spec = ExportSpec(checkpoints=runs, encoders=encoders, ranker=ranker, shapes=shapes)
        self.models: dict[str, ServingModel] = build_serving(select_all(Path(runs), encoders, ranker, False), spec)
        self.interface = interface

    @staticmethod
    def _run(model: ServingModel, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {n: torch.from_numpy(np.ascontiguousarray(arrays[n])) for n in model.signature.input_names}
        return {k: v.numpy() for k, v in model.eager(inputs).items()}

    def embed(self, history: UserHistory) -> dict[str, np.ndarray]:
        """One user -> ``<e>_codes`` (levels,) int64 and ``<e>_embedding`` (dim,) fp32 per embedding."""
        arrays = history_tensors([history], self.interface)
        out: dict[str, np.ndarray] = {}
        for name in self.interface.embeddings:
            out |= {k: v[0] for k, v in self._run(self.models[f"{name}_encoder"], arrays).items()}
        return out

    def score(self, static_sparse: Sequence[int], static_dense: Sequence[float], codes: Mapping[str, Sequence[int]],
              candidates: Candidates, recent_history: Sequence[Sequence[int]] = ()) -> np.ndarray:
        """One user's scores (N, K) from SIDE codes (and, for a ranker with target attention, the user's
        recent history rows, oldest first), as ``duet_downstream`` computes them."""
        arrays = static_tensors([static_sparse], [static_dense], self.interface)
        arrays |= code_tensors([codes], self.interface)
        if self.interface.history is not None:
            arrays |= recent_history_tensors([recent_history], self.interface.history)
        items, counts = candidate_tensors([candidates], self.interface)
        arrays |= items
        return self._run(self.models["ranker"], arrays)["scores"][0, : counts[0]]

    def score_fresh(self, history: UserHistory, candidates: Candidates,
                    recent_history: Sequence[Sequence[int]] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``duet_fresh`` in process: embed, then score from the codes; returns (scores (N, K), codes).
        ``recent_history`` as in ``FreshRequest`` (None: from ``history``'s history stream)."""
        embedded = self.embed(history)
        codes = {name: embedded[f"{name}_codes"] for name in self.interface.embeddings}
        recent = () if self.interface.history is None else fresh_recent_history(
            FreshRequest(history, candidates, recent_history), self.interface)
        return self.score(history.static_sparse, history.static_dense, codes, candidates, recent), codes
