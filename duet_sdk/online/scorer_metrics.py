"""Prometheus exposition (prometheus_client) of a ``Scorer``'s counters, read at each scrape.

Kept apart from ``scorer.py``: the collector only reads ``scorer.metrics`` (``ScorerMetrics``), so the
scorer needs no hook. Series: ``duet_scorer_requests_total{path="stored|fresh|default"}``,
``duet_scorer_release_requests_total{release="V"}`` (the release that served them), the histogram
``duet_scorer_latency_seconds`` (each ``score`` call) and one
``duet_scorer_<cause>_total`` per miss cause (``missing_codes``, ``stale_version``, ...).

Example::

    registry = CollectorRegistry()
    registry.register(ScorerCollector(scorer))
    prometheus_client.start_http_server(9109, addr="127.0.0.1", registry=registry)
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass

from duet_sdk.online.eti_metrics import histogram


class ScorerCollector:
    """A prometheus_client collector of one scorer's ``metrics``."""

    def __init__(self, scorer, namespace: str = "duet_scorer") -> None:
        self.scorer, self.namespace = scorer, namespace

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        m = self.scorer.metrics
        requests = CounterMetricFamily(f"{self.namespace}_requests", "scored requests by the path that served them",
                                       labels=["path"])
        for path, n in sorted(getattr(m, "paths", {}).items()):
            requests.add_metric([path], n)
        yield requests
        by_release = CounterMetricFamily(f"{self.namespace}_release_requests", "scored requests by the release that "
                                         "served them", labels=["release"])
        for release, n in sorted(getattr(m, "releases", {}).items()):
            by_release.add_metric([str(release)], n)
        yield by_release
        if hasattr(m, "latency_s"):
            yield histogram(f"{self.namespace}_latency_seconds", "Scorer.score call latency", m.latency_s)
        for f in fields(m) if is_dataclass(m) else ():
            value = getattr(m, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                yield CounterMetricFamily(f"{self.namespace}_{f.name}", f"ScorerMetrics.{f.name}", value=value)
