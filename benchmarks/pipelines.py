"""Serving on a real tritonserver against in-process ONNX Runtime on the same artifacts, in one run.

- ``overhead``: per model (click_encoder, conv_encoder, ranker) and per ensemble (duet_upstream,
  duet_downstream, duet_fresh), one user and 16 or 128 candidates at concurrency 1 over raw gRPC,
  against the same ``model.onnx`` files run in this process by ONNX Runtime with the served thread
  count (an ensemble in process: its models called one after the other, codes passed on), measured
  just before and just after the served run, the faster of the two kept;
- ``sweep``: each ensemble from concurrency 1 to 32, measured the perf_analyzer way
  (``duet_sdk.tune.measure``): p50/p90/p99, requests/s, whether the windows settled;
- ``eti``: event-triggered inference end to end (triggers on a real Redis stream, histories read from
  Redis, ``EtiWorker`` calling duet_upstream, codes written to the Redis feature store) in users/s,
  against raw duet_upstream throughput from one caller at the same batch sizes, raw calls and worker
  steps interleaved (median ratio of a few rounds), with the worker's Redis round trips per user.
"""

from __future__ import annotations

import cProfile
import json
import logging
import time
from pathlib import Path

import numpy as np

from duet_sdk import interface as api
from duet_sdk.client import DuetClient
from duet_sdk.online import EtiConfig, EtiWorker, RedisHistory, RedisServer, RedisStore, RedisStreamQueue, RedisThrottle
from duet_sdk.online.redis_server import RoundTrips
from duet_sdk.online.replay import store_histories
from duet_sdk.serving.config import read_config
from duet_sdk.tune.measure import MeasureConfig, measure_concurrency
from duet_sdk.tune.requests import NOW, ensemble_requests, infer_inputs, model_requests, sample_users, unwire

log = logging.getLogger(__name__)
COMPONENTS = ("click_encoder", "conv_encoder", "ranker")


class InProcess:
    """The release's ONNX artifacts in this process: ``run(name, wire) -> dict[output, ndarray]`` for a
    component or an ensemble (by base name)."""

    def __init__(self, repo: Path, version: int) -> None:
        import onnxruntime

        self.sessions = {}
        for model in COMPONENTS:
            directory = repo / api.release_model(model, version)
            threads = int(read_config(directory / "config.pbtxt").parameters["threads"].string_value)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            signature = json.loads((directory / str(version) / "signature.json").read_text(encoding="utf-8"))
            session = onnxruntime.InferenceSession(str(directory / str(version) / "model.onnx"), options,
                                                   providers=["CPUExecutionProvider"])
            self.sessions[model] = (session, signature)

    def model(self, model: str, wire: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session, signature = self.sessions[model]
        names = [o["name"] for o in signature["outputs"]]
        return dict(zip(names, session.run(names, unwire(wire, signature["inputs"]))))

    def run(self, name: str, wire: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if name in self.sessions:
            return self.model(name, wire)
        if name == api.DOWNSTREAM:
            return self.model("ranker", wire)
        out = {**self.model("click_encoder", wire), **self.model("conv_encoder", wire)}
        if name == api.UPSTREAM:
            return out
        return self.model("ranker", wire | {k: v for k, v in out.items() if k.endswith("_codes")})


def _inprocess(engine: InProcess, name: str, wires: list, seconds: float) -> dict:
    """Sequential calls for about ``seconds``: p50/p99 ms and requests/s."""
    for wire in wires[:2]:
        engine.run(name, wire)
    lat, start, i = [], time.perf_counter(), 0
    while time.perf_counter() - start < seconds or len(lat) < 20:
        t = time.perf_counter()
        engine.run(name, wires[i % len(wires)])
        lat.append(time.perf_counter() - t)
        i += 1
    ms = np.array(lat) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "rps": len(lat) / (time.perf_counter() - start)}


def overhead(url: str, repo: Path, version: int, interface, measure: MeasureConfig, seconds: float) -> list[dict]:
    """Triton (concurrency 1) vs in-process per model and ensemble at 16 and 128 candidates."""
    engine = InProcess(repo, version)
    rows = []
    for name in (*COMPONENTS, *api.ENSEMBLES):
        for candidates in (16, 128) if name not in ("click_encoder", "conv_encoder", api.UPSTREAM) else (None,):
            c = candidates or 16
            if name in engine.sessions:
                signature = engine.sessions[name][1]
                wires = model_requests([s["name"] for s in signature["inputs"]], interface, 1, c, n=8)
            else:
                wires = ensemble_requests(interface, name, 1, c, n=8)
            before = _inprocess(engine, name, wires, seconds / 2)
            served = measure_concurrency(
                url, api.release_model(name, version), [infer_inputs(w) for w in wires], 1, measure
            )
            after = _inprocess(engine, name, wires, seconds / 2)
            local = min(
                before, after, key=lambda r: r["p50_ms"]
            )  # the faster: drift on a shared machine can't flatter Triton
            rows.append(
                {
                    "name": name,
                    "candidates": candidates,
                    "triton": served.to_dict(),
                    "inprocess": local,
                    "overhead_p50_ms": served.p50_ms - local["p50_ms"],
                    "ratio_p50": served.p50_ms / local["p50_ms"],
                    "overhead_p99_ms": served.p99_ms - local["p99_ms"],
                }
            )
            log.info(
                "overhead %s (%s candidates): Triton p50 %.2f ms vs in-process %.2f ms",
                name,
                candidates,
                served.p50_ms,
                local["p50_ms"],
            )
    return rows


def sweep(
    url: str, version: int, interface, concurrencies: tuple[int, ...], measure: MeasureConfig, candidates: int = 16
) -> list[dict]:
    """Every ensemble at each concurrency (one user, ``candidates`` candidates per request)."""
    rows = []
    for name in api.ENSEMBLES:
        requests = [infer_inputs(w) for w in ensemble_requests(interface, name, 1, candidates, n=16)]
        for c in concurrencies:
            m = measure_concurrency(url, api.release_model(name, version), requests, c, measure)
            rows.append(m.to_dict() | {"name": name, "candidates": candidates})
            log.info(
                "sweep %s c=%d: %.1f req/s p50 %.2f p99 %.2f ms%s",
                name,
                c,
                m.rps,
                m.p50_ms,
                m.p99_ms,
                "" if m.stable else " (unstable)",
            )
    return rows


def eti(url: str, interface, batches: tuple[int, ...], users: int, rounds: int = 3,
        profile: Path | None = None) -> list[dict]:
    """ETI users/s into the store vs raw duet_upstream users/s at each batch size (one worker, one caller).

    Each of ``rounds`` rounds starts from an empty Redis and interleaves the two at batch granularity:
    a raw ``embed`` of ``batch`` users, then one worker step (``batch`` triggers), and so on, each timed
    on its own; so a burst of other load on the machine slows both sides alike. The median round's
    ratio is reported, with every round's, and the worker's Redis round trips per user (counted on its
    client: load-independent). ``profile``: a cProfile of the worker steps of one more round, not
    measured (``eti-b{batch}.prof``)."""
    histories = [h for h, _ in sample_users(interface, users, candidates=1, seed=5)]
    rows = []
    with RedisServer() as redis, DuetClient(url, timeout_s=60) as client:
        client.connect()
        client.embed(histories[: max(batches)])  # warm
        for batch in batches:
            measured = [_eti_round(redis.url, client, interface, histories, batch, None) for _ in range(rounds)]
            if profile:  # one more round, profiled: the profiler's overhead stays out of the figures
                _eti_round(redis.url, client, interface, histories, batch, profile)
            ratios = [eti_rate / raw for raw, eti_rate, _, _ in measured]
            median = sorted(range(rounds), key=lambda i: ratios[i])[rounds // 2]
            raw, eti_rate, stored, trips = measured[median]
            rows.append(
                {
                    "batch": batch,
                    "users": len(histories),
                    "stored": min(m[2] for m in measured),
                    "eti_users_per_s": eti_rate,
                    "raw_users_per_s": raw,
                    "ratio": ratios[median],
                    "ratios": ratios,
                    "redis_round_trips_per_user": trips / len(histories),
                }
            )
            log.info("ETI batch %d: %.1f users/s into the store vs raw %.1f users/s (median of %d rounds, "
                     "ratios %s; %.2f Redis round trips per user)", batch, eti_rate, raw, rounds,
                     " ".join(f"{x:.2f}" for x in ratios), trips / len(histories))
    return rows


def _eti_round(url: str, client: DuetClient, interface, histories: list, batch: int,
               profile: Path | None) -> tuple[float, float, int, int]:
    """One round from an empty Redis: (raw users/s, ETI users/s into the store, users stored, worker round
    trips), raw calls and worker steps alternating; ETI counts the users its timed steps wrote."""
    redis_flush(url)
    max_len = {s: info.max_len for s, info in interface.streams.items()}
    with RedisHistory(url, max_len) as loader:
        store_histories(loader, histories)
    with RedisStreamQueue(url, consumer="bench-events") as events:
        for h in histories:
            events.publish(h.user_id, "conv", NOW - 1)
    trips = RoundTrips(url)  # the worker's one client: every request it sends is counted
    store = RedisStore(trips.client)
    worker = EtiWorker(
        RedisStreamQueue(trips.client, consumer="bench-worker"),
        RedisThrottle(trips.client, window_s=60.0),
        RedisHistory(trips.client, max_len),
        store,
        client.embed,
        EtiConfig(max_batch=batch, max_wait_s=0.01),
        clock=lambda: NOW,
    )
    profiler = cProfile.Profile() if profile else None
    step = profiler.runcall if profiler else (lambda f: f())
    raw_s = eti_s = 0.0
    written = 0
    trips.reset()
    for k in range(0, len(histories), batch):
        start = time.perf_counter()
        client.embed(histories[k : k + batch])
        raw_s += time.perf_counter() - start
        start = time.perf_counter()
        written += step(worker.run_once)
        eti_s += time.perf_counter() - start
    counted = trips.count
    while worker.run_once():  # users a step left behind (none expected) are stored, but not counted in time
        pass
    stored = len(store.get_many([h.user_id for h in histories]))
    trips.close()
    if profiler:
        profile.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(profile / f"eti-b{batch}.prof")
    return len(histories) / raw_s, written / eti_s, stored, counted


def redis_flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
