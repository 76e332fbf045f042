"""Score (user, candidates) from stored SIDE codes, falling back on a miss, and say which path served.

Paths: ``stored`` (codes in the feature store from the served model version -> ``duet_downstream``),
``fresh`` (no usable codes: the user's history -> ``duet_fresh``; its codes are written back), or
``default`` (no usable codes and fallback "default", or no profile at all: ``default_scores``).
Codes from another model version count as a miss: they belong to another SIDE codebook.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from duet_sdk.client.types import Candidates, FreshRequest, ScoreRequest, Scores
from duet_sdk.errors import ConfigError
from duet_sdk.online.history import HistoryStore
from duet_sdk.online.store import FeatureStore
from duet_sdk.online.types import StoredCodes

FALLBACKS = ("fresh", "default")


@dataclass
class ScorerMetrics:
    """Requests per path, and misses split by cause."""

    paths: dict[str, int] = field(default_factory=lambda: {"stored": 0, "fresh": 0, "default": 0})
    missing_codes: int = 0
    stale_version: int = 0
    missing_profile: int = 0


class Scorer:
    """``score([(user_id, candidates), ...]) -> [Scores]`` in request order.

    Args:
        client: a ``DuetClient`` (connected on first use).
        store: where ETI writes codes; history: users' profiles and events (for static features and
            the fresh path).
        fallback: on a miss, "fresh" (compute now) or "default" (``default_scores`` per task).
        write_back: on the fresh path, store the codes it computed.
    """

    def __init__(self, client, store: FeatureStore, history: HistoryStore, fallback: str = "fresh",
                 default_scores: Sequence[float] | None = None, write_back: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        if fallback not in FALLBACKS:
            raise ConfigError("fallback", f"one of {FALLBACKS}", fallback)
        self.client, self.store, self.history = client, store, history
        self.fallback, self.write_back, self.clock = fallback, write_back, clock
        self.default_scores = None if default_scores is None else tuple(float(x) for x in default_scores)
        self.metrics = ScorerMetrics()

    def _default(self, user: str, candidates: Candidates, interface) -> Scores:
        per_task = self.default_scores or (0.0,) * len(interface.tasks)
        if len(per_task) != len(interface.tasks):
            raise ConfigError("default_scores", f"one score per task {interface.tasks}", per_task)
        return Scores(user, tuple(per_task for _ in range(len(candidates))), "default", interface.version)

    def score(self, requests: Sequence[tuple[str, Candidates]]) -> list[Scores]:
        interface = self.client.connect()
        now = int(self.clock())
        users = [u for u, _ in requests]
        stored = self.store.get_many(users)
        profiles = {h.user_id: h for h in self.history.histories(list(dict.fromkeys(users)), now)}
        results: list[Scores | None] = [None] * len(requests)
        hits, misses = [], []
        for i, (user, candidates) in enumerate(requests):
            record = stored.get(user)
            if user not in profiles:
                self.metrics.missing_profile += 1
                results[i] = self._default(user, candidates, interface)
            elif record is not None and record.model_version == interface.version:
                hits.append(i)
            else:
                self.metrics.missing_codes += record is None
                self.metrics.stale_version += record is not None
                misses.append(i)
        if hits:
            scored = self.client.score([
                ScoreRequest(user, profiles[user].static_sparse, profiles[user].static_dense, stored[user].codes, candidates)
                for user, candidates in (requests[i] for i in hits)])
            for i, result in zip(hits, scored):
                results[i] = result
        if misses and self.fallback == "default":
            for i in misses:
                results[i] = self._default(*requests[i], interface)
        elif misses:
            fresh = self.client.score_fresh([FreshRequest(profiles[requests[i][0]], requests[i][1]) for i in misses])
            for i, result in zip(misses, fresh):
                results[i] = result.scores
            if self.write_back:
                self.store.put_many([StoredCodes(requests[i][0], r.codes, interface.version, float(now))
                                     for i, r in zip(misses, fresh)])
        for result in results:
            self.metrics.paths[result.path] += 1
        return results
