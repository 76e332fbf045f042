"""Prometheus exposition of the ETI worker's and the scorer's counters: the text a scrape returns holds
the same numbers as the metrics objects."""

from collections import Counter

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from duet_sdk.online import EtiCollector, InMemoryHistory, SqliteStore
from duet_sdk.online.scorer import Scorer, ScorerMetrics
from duet_sdk.online.scorer_metrics import ScorerCollector


def scrape(collector) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(s.name + str(sorted(s.labels.items())) if s.labels else s.name): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_worker_counters_and_staleness_histogram_are_exported(online):
    online.user("u1", ts=1_000)
    worker = online.worker("w1", clock=lambda: 1_003.0)
    online.queue_for("producer").publish("u1", "click", 1_000)
    online.queue_for("producer").publish("ghost", "click", 1_000)
    assert worker.run_once() == 1
    got = scrape(EtiCollector(worker))
    assert got["duet_eti_triggers_total"] == 2 and got["duet_eti_written_total"] == 1
    assert got["duet_eti_missing_profile_total"] == 1 and got["duet_eti_dead_lettered_total"] == 0
    assert got["duet_eti_staleness_seconds_count"] == 1 and got["duet_eti_staleness_seconds_sum"] == 3.0
    assert got["duet_eti_staleness_seconds_bucket[('le', '2.5')]"] == 0
    assert got["duet_eti_staleness_seconds_bucket[('le', '5.0')]"] == 1
    assert got["duet_eti_embed_calls_total[('users', '1')]"] == 1
    assert got["duet_eti_pending_triggers"] == 0
    assert got["duet_eti_redis_recoveries_total"] == 0


def test_scorer_paths_and_releases_are_exported():
    class FakeScorer:
        metrics = ScorerMetrics(paths={"stored": 5, "fresh": 2, "default": 1}, releases=Counter({"1": 3, "2": 4}),
                                missing_codes=2, stale_version=0)
    got = scrape(ScorerCollector(FakeScorer()))
    assert got["duet_scorer_requests_total[('path', 'stored')]"] == 5
    assert got["duet_scorer_requests_total[('path', 'fresh')]"] == 2
    assert got["duet_scorer_missing_codes_total"] == 2
    assert got["duet_scorer_release_requests_total[('release', '2')]"] == 4


def test_scorer_latency_histogram_counts_every_call_even_a_failed_one(tmp_path):
    class DownClient:
        def connect(self):
            raise ConnectionError("server down")

    scorer = Scorer(DownClient(), SqliteStore(tmp_path / "codes.db"), InMemoryHistory({"click": 8}))
    scorer.metrics.latency_s.add(0.004)  # one earlier call of 4 ms
    with pytest.raises(ConnectionError):
        scorer.score([("u1", [1, 2])])
    got = scrape(ScorerCollector(scorer))
    assert got["duet_scorer_latency_seconds_count"] == 2
    assert got["duet_scorer_latency_seconds_bucket[('le', '0.005')]"] >= 1
    assert got["duet_scorer_latency_seconds_bucket[('le', '+Inf')]"] == 2
    assert got["duet_scorer_latency_seconds_sum"] >= 0.004
