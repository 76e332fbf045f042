"""The serving half of ``make demo``: publish the export, serve it on a real tritonserver, call all three
ensembles for real validation users, compare with in-process PyTorch, run event-triggered inference
into a real Redis, score through the feature store, log scores, and stop both servers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from duet_sdk.client import DuetClient, FreshRequest, ScoreRequest
from duet_sdk.data.events import EventDataset
from duet_sdk.online import EtiConfig, EtiWorker, RedisHistory, RedisServer, RedisStore, RedisStreamQueue, RedisThrottle
from duet_sdk.online.replay import ranker_requests, store_histories
from duet_sdk.online.scorer import Scorer
from duet_sdk.serving.reference import InProcessDuet
from duet_sdk.serving.releases import read_index, startup_models
from duet_sdk.serving.repository import publish
from duet_sdk.serving.server import TritonServer
from duet_sdk.serving.swap import swap_release

# Stated tolerances, as in the export manifest (fp32 runtimes vs eager).
TOLERANCE = {"embedding": 1e-4, "probability": 1e-5}


log = logging.getLogger(__name__)

@dataclass
class Parity:
    """One ensemble checked against PyTorch: rows, worst |diff|, its tolerance, rows with equal codes."""

    ensemble: str
    rows: int
    max_abs_diff: float
    tolerance: float
    codes_equal: int | None = None
    code_rows: int = 0

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance and (self.codes_equal is None or self.codes_equal == self.code_rows)

    def line(self) -> str:
        codes = "" if self.codes_equal is None else f"{self.codes_equal}/{self.code_rows} codes equal"
        verdict = "ok" if self.ok else "MISMATCH"
        diff = f"{self.max_abs_diff:>13.2e} {self.tolerance:>10.0e}"
        return f"{self.ensemble:<16} {self.rows:>5} {diff}  {codes:<20} {verdict}"


def _check_ensembles(client: DuetClient, reference: InProcessDuet, requests) -> list[Parity]:
    names = list(client.interface.embeddings)
    histories = [h for h, _ in requests]
    embedded = client.embed(histories)
    want = [reference.embed(h) for h in histories]
    up = Parity(
        "duet_upstream",
        len(histories),
        max(
            float(np.abs(np.array(e.vectors[n]) - w[f"{n}_embedding"]).max())
            for e, w in zip(embedded, want)
            for n in names
        ),
        TOLERANCE["embedding"],
        sum(all(e.codes[n] == tuple(w[f"{n}_codes"].tolist()) for n in names) for e, w in zip(embedded, want)),
        len(histories),
    )
    scored = client.score(
        [ScoreRequest(h.user_id, h.static_sparse, h.static_dense, e.codes, c) for (h, c), e in zip(requests, embedded)]
    )
    down = Parity(
        "duet_downstream",
        sum(len(c) for _, c in requests),
        max(
            float(np.abs(np.array(s.scores) - reference.score(h.static_sparse, h.static_dense, e.codes, c)).max())
            for s, (h, c), e in zip(scored, requests, embedded)
        ),
        TOLERANCE["probability"],
    )
    fresh = client.score_fresh([FreshRequest(h, c) for h, c in requests])
    expected = [reference.score_fresh(h, c) for h, c in requests]
    fr = Parity(
        "duet_fresh",
        down.rows,
        max(float(np.abs(np.array(f.scores.scores) - s).max()) for f, (s, _) in zip(fresh, expected)),
        TOLERANCE["probability"],
        sum(f.codes == {n: tuple(c.tolist()) for n, c in codes.items()} for f, (_, codes) in zip(fresh, expected)),
        len(requests),
    )
    return [up, down, fr]


def _eti_round(
    client: DuetClient, redis_url: str, requests, reference: InProcessDuet, now: int
) -> tuple[dict, dict, float]:
    """Load histories into Redis, trigger half the users, run a worker, then score everyone through the
    store. Returns (worker metrics, requests per path, worst |scores - PyTorch|)."""
    interface = client.interface
    history = RedisHistory(redis_url, {s: info.max_len for s, info in interface.streams.items()})
    store_histories(history, (h for h, _ in requests))
    queue = RedisStreamQueue(redis_url, consumer="demo-events")
    for h, _ in requests[::2]:
        for _ in range(3):  # a burst of qualifying events: the throttle window coalesces it
            queue.publish(h.user_id, "conv", now - 1)
    store = RedisStore(redis_url)
    worker = EtiWorker(
        RedisStreamQueue(redis_url, consumer="demo-worker"),
        RedisThrottle(redis_url, window_s=60.0),
        history,
        store,
        client.embed,
        EtiConfig(max_batch=16, max_wait_s=0.05),
        clock=lambda: now,
    )
    while worker.run_once():
        pass
    scorer = Scorer(client, store, history, clock=lambda: now)
    results = scorer.score([(h.user_id, c) for h, c in requests])
    worst = max(
        float(np.abs(np.array(r.scores) - reference.score_fresh(replace(h, request_time=now), c)[0]).max())
        for r, (h, c) in zip(results, requests)
    )
    return worker.metrics.to_dict(), dict(scorer.metrics.paths), worst


def serve_and_check(runs: Path, export_dir: Path, repository: Path, dataset: EventDataset, users: int = 32) -> bool:
    """Publish, serve, check; logs everything (INFO); True when every check is within tolerance."""
    published = publish(export_dir, repository, "cpu")
    models = ", ".join(published.models)
    log.info(f"published release {published.version} of {models} and 3 ensembles into {repository}")
    index = read_index(repository)
    with (
        RedisServer() as redis,
        TritonServer(repository, models=startup_models(index)) as server,
        DuetClient(server.endpoints.grpc_url, timeout_s=60) as client,
    ):
        log.info(f"tritonserver ready: {server.endpoints.describe()}; redis-server at {redis.url}")
        if index["target"] != index["current"]:
            report = swap_release(server, index["target"])
            log.info(f"swapped from release {report.previous} to release {report.current} in {report.duration_s:.1f}s")
        interface = client.connect()
        requests = ranker_requests(dataset, users, min(16, interface.max_candidates))
        reference = InProcessDuet(runs, interface)
        parities = _check_ensembles(client, reference, requests)
        log.info(f"{'ensemble':<16} {'rows':>5} {'max abs diff':>13} {'tolerance':>10}  {'codes':<20} verdict")
        for parity in parities:
            log.info(parity.line())
        now = max(h.request_time for h, _ in requests)
        metrics, paths, worst = _eti_round(client, redis.url, requests, reference, now)
        eti_ok = worst <= TOLERANCE["probability"]
        log.info(
            f"ETI: {metrics['triggers']} triggers, {metrics['throttled'] + metrics['coalesced']} coalesced by the "
            "throttle, "
            f"{metrics['embedded']} users embedded into Redis; scorer paths {paths}; "
            f"max |score - PyTorch| {worst:.2e} ({'ok' if eti_ok else 'MISMATCH'})"
        )
        fresh = client.score_fresh([FreshRequest(h, c) for h, c in requests[:3]])
        log.info(
            f"scores ({interface.tasks[0]}, first 5 candidates) from duet_fresh, release "
            f"{fresh[0].scores.model_version}:"
        )
        for result in fresh:
            log.info(
                f"  user {result.scores.user_id:>10}: " + " ".join(f"{row[0]:.4f}" for row in result.scores.scores[:5])
            )
    log.info("tritonserver and redis-server stopped")
    return all(p.ok for p in parities) and eti_ok
