"""What "best" means for ``duet-tune``, and the measured Pareto front.

- ``throughput``: load at ``concurrency`` requests in flight; a config is feasible when no request
  failed and its p99 <= ``slo_p99_ms``; the best feasible one has the most requests/s.
- ``latency``: load at ``rate`` requests/s; feasible when no request failed and it kept up (achieved
  >= 90 % of the rate); the best feasible one has the lowest p99.

Unstable measurements (the windows never agreed within 10 %) stay candidates but rank after stable ones.

Example:
    >>> objective = Objective("throughput", concurrency=8, slo_p99_ms=20.0)
    >>> best = objective.best(points)   # one of ``points``; None when none is feasible
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from duet_sdk.errors import ConfigError
from duet_sdk.tune.measure import Measurement

KEEP_UP = 0.9  # a rate is kept up when at least this share of it is answered


@dataclass(frozen=True)
class Objective:
    """``kind`` "throughput" (needs ``concurrency`` and ``slo_p99_ms``) or "latency" (needs ``rate``)."""

    kind: str
    concurrency: int | None = None
    slo_p99_ms: float | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "throughput":
            if not isinstance(self.concurrency, int) or self.concurrency < 1:
                raise ConfigError("--concurrency", "an int >= 1 for --objective throughput", self.concurrency)
            if not isinstance(self.slo_p99_ms, int | float) or not 0 < self.slo_p99_ms < math.inf:
                raise ConfigError("--slo-p99-ms", "milliseconds > 0 for --objective throughput", self.slo_p99_ms)
        elif self.kind == "latency":
            if not isinstance(self.rate, int | float) or not 0 < self.rate < math.inf:
                raise ConfigError("--rate", "requests/s > 0 for --objective latency", self.rate)
        else:
            raise ConfigError("--objective", "throughput or latency", self.kind)

    def describe(self) -> str:
        if self.kind == "throughput":
            return f"highest requests/s with p99 <= {self.slo_p99_ms} ms at concurrency {self.concurrency}"
        return f"lowest p99 at {self.rate} requests/s"

    def feasible(self, m: Measurement) -> bool:
        if m.errors or not m.requests or math.isnan(m.p99_ms):
            return False
        if self.kind == "throughput":
            return m.p99_ms <= self.slo_p99_ms
        return m.rps >= KEEP_UP * self.rate

    def key(self, m: Measurement) -> tuple:
        """Sort key, larger is better."""
        score = m.rps if self.kind == "throughput" else -m.p99_ms
        return (self.feasible(m), m.stable, score)

    def best(self, points: Sequence) -> object | None:
        """The best feasible point (anything with a ``measurement``), or None."""
        feasible = [p for p in points if self.feasible(p.measurement)]
        return max(feasible, key=lambda p: self.key(p.measurement)) if feasible else None


def pareto_front(points: Sequence) -> list:
    """Points (with ``measurement``) not dominated in (higher requests/s, lower p99), errors excluded;
    sorted by requests/s."""
    clean = [p for p in points if not p.measurement.errors and p.measurement.requests]
    front = [p for p in clean if not any(
        q.measurement.rps >= p.measurement.rps and q.measurement.p99_ms <= p.measurement.p99_ms
        and (q.measurement.rps > p.measurement.rps or q.measurement.p99_ms < p.measurement.p99_ms) for q in clean)]
    return sorted(front, key=lambda p: p.measurement.rps)
