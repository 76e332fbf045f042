"""A server on a release repository; bounded concurrent load on the three alias ensembles and a Scorer
while releases are swapped; the check of every response against in-process PyTorch of the release it
reports (shared by the release tests and ``benchmarks/release_swap.py``; a module of its own, not the
conftest, which another conftest on the path would shadow)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from duet_sdk.client import DuetClient
from duet_sdk.interface import FreshRequest, ScoreRequest
from duet_sdk.serving.releases import read_index, startup_models
from duet_sdk.serving.server import TritonServer

PROBABILITY_ATOL, EMBEDDING_ATOL = 1e-5, 1e-4  # fp32 ONNX Runtime vs eager


def serve(repository, **options) -> TritonServer:
    """A TritonServer loading what ``repository.json`` says (the loaded releases and the aliases)."""
    return TritonServer(repository, models=startup_models(read_index(repository)), **options)


@dataclass
class Load:
    """What the load threads saw: (ensemble, release, user index, result) per response, and failures."""

    responses: list[tuple[str, str, int, object, float]] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def served_between(self, start: float, end: float) -> int:
        return sum(start <= at <= end for *_, at in self.responses)


def run_load(url: str, users, codes, scorer_factory, stop: threading.Event, load: Load, per_call: int = 2) -> list:
    """Start one thread per ensemble (fresh, upstream, downstream with ``codes``) and one for the Scorer
    (``scorer_factory(client)``); each loops until ``stop``. Returns the threads."""
    def loop(kind: str) -> None:
        with DuetClient(url, timeout_s=30, retries=3) as client:
            scorer = scorer_factory(client) if kind == "scorer" else None
            step = 0
            while not stop.is_set():
                picked = [(step * per_call + k) % len(users) for k in range(per_call)]
                step += 1
                try:
                    results = _call(kind, client, scorer, users, codes, picked)
                except Exception as exc:  # every failure counts against the swap
                    with load.lock:
                        load.failures.append(exc)
                    continue
                now = time.monotonic()
                with load.lock:
                    for i, result in zip(picked, results):
                        release = (
                            result.model_version if hasattr(result, "model_version") else result.scores.model_version
                        )
                        load.responses.append((kind, release, i, result, now))

    threads = [
        threading.Thread(target=loop, args=(kind,), daemon=True)
        for kind in ("fresh", "upstream", "downstream", "scorer")
    ]
    for t in threads:
        t.start()
    return threads


def _call(kind: str, client, scorer, users, codes, picked):
    if kind == "fresh":
        return client.score_fresh([FreshRequest(*users[i]) for i in picked])
    if kind == "upstream":
        return client.embed([users[i][0] for i in picked])
    if kind == "downstream":
        return client.score(
            [
                ScoreRequest(
                    users[i][0].user_id, users[i][0].static_sparse, users[i][0].static_dense, codes[i], users[i][1]
                )
                for i in picked
            ]
        )
    return scorer.score([(users[i][0].user_id, users[i][1]) for i in picked])


def mismatches(load: Load, users, codes, references: dict, stored: dict) -> tuple[list[str], Counter]:
    """Every response checked against PyTorch of the release it reports; returns (mismatch descriptions,
    responses per (ensemble, release)). ``stored[user index]``: (release, codes) the Scorer's store holds."""
    cache: dict = {}

    def want(kind: str, release: str, i: int):
        key = (kind, release, i)
        if key not in cache:
            ref, (history, candidates) = references[release], users[i]
            if kind == "fresh":
                cache[key] = ref.score_fresh(history, candidates)
            elif kind == "upstream":
                cache[key] = ref.embed(history)
            elif kind == "downstream":
                cache[key] = ref.score(history.static_sparse, history.static_dense, codes[i], candidates)
            else:
                cache[key] = ref.score(history.static_sparse, history.static_dense, stored[i][1], candidates)
        return cache[key]

    bad, seen = [], Counter()
    for kind, release, i, result, _ in load.responses:
        seen[(kind, release)] += 1
        if release not in references:
            bad.append(f"{kind} user {i}: unknown release {release!r}")
            continue
        expected = want(kind, release, i)
        if kind == "fresh":
            scores, codes_ = expected
            ok = np.abs(np.array(result.scores.scores) - scores).max() <= PROBABILITY_ATOL and result.codes == {
                n: tuple(c.tolist()) for n, c in codes_.items()
            }
        elif kind == "upstream":
            ok = all(
                result.codes[n] == tuple(expected[f"{n}_codes"].tolist())
                and np.abs(np.array(result.vectors[n]) - expected[f"{n}_embedding"]).max() <= EMBEDDING_ATOL
                for n in result.codes
            )
        else:
            ok = np.abs(np.array(result.scores) - expected).max() <= PROBABILITY_ATOL
            if kind == "scorer":
                ok = ok and result.path == "stored" and release == stored[i][0]
        if not ok:
            bad.append(f"{kind} user {i}: release {release} response differs from that release's PyTorch")
    return bad, seen
