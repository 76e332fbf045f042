"""Counters of an ETI worker, and their Prometheus exposition (prometheus_client).

``EtiMetrics`` is what ``EtiWorker.metrics`` snapshots (also printed as JSON by ``clients/eti_worker.py``);
``EtiCollector`` exposes a worker's snapshot at each scrape, so Prometheus and the JSON never disagree.

Example::

    registry = CollectorRegistry()
    registry.register(EtiCollector(worker))
    prometheus_client.start_http_server(9108, addr="127.0.0.1", registry=registry)
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from dataclasses import dataclass, field, fields

# Staleness buckets (seconds): ETI aims at seconds; a trailing embedding waits up to a throttle window.
STALENESS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


@dataclass
class Summary:
    """Count, sum, max and cumulative bucket counts (upper ``bounds``, seconds) of a series, and
    percentiles over its last ``keep`` values."""

    keep: int = 10_000
    bounds: tuple[float, ...] = STALENESS_BUCKETS
    count: int = 0
    total: float = 0.0
    max: float = 0.0
    recent: deque = field(default_factory=deque)
    buckets: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.buckets = self.buckets or [0] * len(self.bounds)

    def add(self, x: float, times: int = 1) -> None:
        self.max = x if self.count == 0 else max(self.max, x)
        self.count += times
        self.total += x * times
        for i in range(bisect.bisect_left(self.bounds, x), len(self.bounds)):
            self.buckets[i] += times
        self.recent.extend([x] * min(times, self.keep))
        while len(self.recent) > self.keep:
            self.recent.popleft()

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank ``q``-th percentile (0..100) of the recent values; 0.0 when empty."""
        values = sorted(self.recent)
        return values[min(len(values) - 1, int(q / 100 * len(values)))] if values else 0.0


@dataclass
class EtiMetrics:
    """Counters of an EtiWorker since it started.

    Each of the ``triggers`` read (``reclaimed`` among them) is acked as ``throttled`` (and deferred to
    a trailing embedding), acked as ``missing_profile``, acked with its user's stored codes
    (``coalesced`` counts those that shared another trigger's embedding in the batch), moved to the
    dead-letter stream (``dead_lettered``: delivered more than ``max_deliveries`` times, or its user
    failed alone), or left pending by one of the ``failed_batches``. ``poison_users``: users whose
    embedding failed alone and was isolated from its batch. ``trailing``: users embedded at the end of a
    throttle window. ``embedded``: users embedded, of which ``written`` were stored. ``batch_sizes``:
    users per embed call -> calls. ``staleness_s``: per trigger covered by stored codes, produced_at -
    event_ts (throttled triggers: at their trailing embedding, from the earliest one). ``redis_recoveries``
    and ``lost_window_s``: trigger groups found gone (a Redis restart without persistence) and the summed
    seconds before each whose triggers are lost.
    """

    triggers: int = 0
    reclaimed: int = 0
    throttled: int = 0
    coalesced: int = 0
    missing_profile: int = 0
    dead_lettered: int = 0
    poison_users: int = 0
    trailing: int = 0
    embedded: int = 0
    written: int = 0
    failed_batches: int = 0
    redis_recoveries: int = 0
    lost_window_s: float = 0.0
    batch_sizes: Counter = field(default_factory=Counter)
    staleness_s: Summary = field(default_factory=Summary)

    def to_dict(self) -> dict:
        """JSON-able: the counters, ``batch_sizes`` by size, staleness count/mean/p50/p95/max."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("batch_sizes", "staleness_s")}
        s = self.staleness_s
        return out | {"batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                      "staleness_s": {"count": s.count, "mean": round(s.mean, 3), "p50": s.percentile(50),
                                      "p95": s.percentile(95), "max": s.max}}


class EtiCollector:
    """A prometheus_client collector of one worker: ``duet_eti_<counter>_total``, the staleness
    histogram ``duet_eti_staleness_seconds`` and ``duet_eti_pending_triggers`` (read at scrape time)."""

    def __init__(self, worker, namespace: str = "duet_eti") -> None:
        self.worker, self.namespace = worker, namespace

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.worker.metrics
        ns = self.namespace
        for f in fields(m):
            if f.name in ("batch_sizes", "staleness_s"):
                continue
            name = f.name.removesuffix("_s") + ("_seconds" if f.name.endswith("_s") else "")
            yield CounterMetricFamily(f"{ns}_{name}", f"EtiMetrics.{f.name}", value=getattr(m, f.name))
        yield histogram(f"{ns}_staleness_seconds", "produced_at - event_ts per covered trigger", m.staleness_s)
        calls = CounterMetricFamily(f"{ns}_embed_calls", "embed calls by users per call", labels=["users"])
        for size, n in sorted(m.batch_sizes.items()):
            calls.add_metric([str(size)], n)
        yield calls
        try:
            pending = self.worker.queue.pending()
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is down
            return
        yield GaugeMetricFamily(f"{ns}_pending_triggers", "triggers read but not acked (all consumers)", value=pending)


def histogram(name: str, documentation: str, summary: Summary):
    """A Prometheus histogram family of ``summary`` (cumulative buckets, +Inf = count, sum)."""
    from prometheus_client.core import HistogramMetricFamily

    buckets = [(str(b), c) for b, c in zip(summary.bounds, summary.buckets)] + [("+Inf", summary.count)]
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=summary.total)
