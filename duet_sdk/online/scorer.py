"""Score (user, candidates) from stored SIDE codes, falling back on a miss, and say which path and release served.

Paths: ``stored`` (codes in the feature store from a release the server has loaded -> that release's
``duet_downstream_vV``, because only its ranker holds the codebooks those codes index), ``fresh`` (no
usable codes: the user's history -> ``duet_fresh`` of the current release; its codes are written back
with the release that produced them), or ``default`` (no usable codes and fallback "default", or no
profile at all: ``default_scores``). Codes of a release that is no longer loaded count as a miss; so do
codes whose release was unloaded between the check and the call (the server refuses the pinned call).
A ranker with target attention gets each user's recent history from the history store on both paths
(the most recent ``interface.history.max_len`` events of its stream, their ID fields).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from duet_sdk.client.errors import InvalidRequest, ServerError
from duet_sdk.errors import ConfigError
from duet_sdk.interface import Candidates, FreshRequest, ScoreRequest, Scores, ServingInterface, UserHistory
from duet_sdk.online.eti_metrics import Summary
from duet_sdk.online.history import HistoryStore
from duet_sdk.online.store import FeatureStore
from duet_sdk.online.types import StoredCodes

FALLBACKS = ("fresh", "default")
# Latency buckets (seconds) of a score call: a ranking request budget is tens of milliseconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
log = logging.getLogger(__name__)


@dataclass
class ScorerMetrics:
    """Requests per path and per release that served them, misses split by cause, and the latency of
    each ``score`` call (``latency_s``, whatever its outcome)."""

    paths: dict[str, int] = field(default_factory=lambda: {"stored": 0, "fresh": 0, "default": 0})
    releases: Counter = field(default_factory=Counter)
    missing_codes: int = 0
    stale_version: int = 0  # codes of a release the server no longer has loaded
    missing_profile: int = 0
    latency_s: Summary = field(default_factory=lambda: Summary(bounds=LATENCY_BUCKETS))


class Scorer:
    """``score([(user_id, candidates), ...]) -> [Scores]`` in request order.

    Args:
        client: a ``DuetClient`` (connected on first use).
        store: where ETI writes codes; history: users' profiles and events (for static features and
            the fresh path).
        fallback: on a miss, "fresh" (compute now) or "default" (``default_scores`` per task).
        write_back: on the fresh path, store the codes it computed.
        releases_ttl_s: how long the server's list of loaded releases is trusted before it is asked again.
    """

    def __init__(self, client, store: FeatureStore, history: HistoryStore, fallback: str = "fresh",
                 default_scores: Sequence[float] | None = None, write_back: bool = True,
                 clock: Callable[[], float] = time.time, releases_ttl_s: float = 1.0) -> None:
        if fallback not in FALLBACKS:
            raise ConfigError("fallback", f"one of {FALLBACKS}", fallback)
        self.client, self.store, self.history = client, store, history
        self.fallback, self.write_back, self.clock = fallback, write_back, clock
        self.default_scores = None if default_scores is None else tuple(float(x) for x in default_scores)
        self.releases_ttl_s = releases_ttl_s
        self._loaded: tuple[float, frozenset[str]] | None = None
        self._warned: set[str] = set()
        self.metrics = ScorerMetrics()

    def loaded_releases(self) -> frozenset[str]:
        """Releases the server has loaded (as stored-code version strings), cached ``releases_ttl_s``."""
        now = time.monotonic()
        if self._loaded is None or now - self._loaded[0] > self.releases_ttl_s:
            self._loaded = (now, frozenset(str(v) for v in self.client.releases().loaded))
        return self._loaded[1]

    def _default(self, user: str, candidates: Candidates, interface) -> Scores:
        per_task = self.default_scores or (0.0,) * len(interface.tasks)
        if len(per_task) != len(interface.tasks):
            raise ConfigError("default_scores", f"one score per task {interface.tasks}", per_task)
        return Scores(user, tuple(per_task for _ in range(len(candidates))), "default", interface.version)

    def score(self, requests: Sequence[tuple[str, Candidates]]) -> list[Scores]:
        start = time.perf_counter()
        try:
            return self._score(requests)
        finally:
            self.metrics.latency_s.add(time.perf_counter() - start)

    def _score(self, requests: Sequence[tuple[str, Candidates]]) -> list[Scores]:
        interface = self.client.connect()
        now = int(self.clock())
        users = [u for u, _ in requests]
        stored = self.store.get_many(users)
        profiles = {h.user_id: h for h in self.history.histories(list(dict.fromkeys(users)), now)}
        loaded = self.loaded_releases()
        results: list[Scores | None] = [None] * len(requests)
        by_release: dict[str, list[int]] = {}
        misses = []
        for i, (user, candidates) in enumerate(requests):
            record = stored.get(user)
            if user not in profiles:
                self.metrics.missing_profile += 1
                results[i] = self._default(user, candidates, interface)
            elif record is not None and record.model_version in loaded:
                by_release.setdefault(record.model_version, []).append(i)
            else:
                self.metrics.missing_codes += record is None
                self.metrics.stale_version += record is not None
                misses.append(i)
        for release, hits in by_release.items():
            misses += self._score_stored(requests, hits, release, stored, profiles, results)
        if misses and self.fallback == "default":
            for i in misses:
                results[i] = self._default(*requests[i], interface)
        elif misses:
            self._check_history_stream(interface)  # duet_fresh takes the history from the profiles' streams
            fresh = self.client.score_fresh([FreshRequest(profiles[requests[i][0]], requests[i][1]) for i in misses])
            for i, result in zip(misses, fresh):
                results[i] = result.scores
            if self.write_back:
                self.store.put_many([StoredCodes(requests[i][0], r.codes, r.scores.model_version, float(now))
                                     for i, r in zip(misses, fresh)])
        for result in results:
            self.metrics.paths[result.path] += 1
            self.metrics.releases[result.model_version] += 1
        return results

    def _score_stored(self, requests, hits: list[int], release: str, stored: dict[str, StoredCodes], profiles: dict,
                      results: list) -> list[int]:
        """Score ``hits`` with ``release``'s downstream; returns those to retry as misses (release gone)."""
        try:
            interface = self.client.interface_for(int(release))
            scored = self.client.score(
                [
                    ScoreRequest(
                        user,
                        profiles[user].static_sparse,
                        profiles[user].static_dense,
                        stored[user].codes,
                        candidates,
                        self._recent_history(profiles[user], interface),
                    )
                    for user, candidates in (requests[i] for i in hits)
                ],
                release=int(release),
            )
        except InvalidRequest:
            raise
        except ServerError:
            if release in self._refresh():
                raise  # the release is loaded: a real failure
            self.metrics.stale_version += len(hits)
            return hits
        for i, result in zip(hits, scored):
            results[i] = result
        return []

    def _recent_history(self, user: UserHistory, interface: ServingInterface) -> list[tuple[int, ...]] | None:
        """The ranker's recent history of ``user`` from the history store (None: the ranker takes none)."""
        info = self._check_history_stream(interface)
        return None if info is None else info.rows(user.streams.get(info.stream, ()))

    def _check_history_stream(self, interface: ServingInterface):
        """``interface.history``; ConfigError if the store keeps no events of its stream (every history
        would be empty), a warning (once) if it keeps fewer than the ranker reads."""
        info = interface.history
        if info is None:
            return None
        kept = self.history.max_len.get(info.stream)
        if kept is None:
            raise ConfigError(
                "history.max_len",
                f"a stream {info.stream!r} (release {interface.version}'s ranker "
                f"reads its {info.max_len} most recent events)",
                sorted(self.history.max_len),
            )
        if kept < info.max_len and info.stream not in self._warned:
            self._warned.add(info.stream)
            log.warning(
                "the history store keeps %d %s events per user; the ranker reads up to %d",
                kept,
                info.stream,
                info.max_len,
            )
        return info

    def _refresh(self) -> frozenset[str]:
        self._loaded = None
        return self.loaded_releases()
