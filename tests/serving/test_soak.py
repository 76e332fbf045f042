"""Bounded soak: 8 concurrent clients across all three ensembles plus ETI (loadgen -> eti_worker ->
Redis) against a real tritonserver for ~30 s. Holds: 0 errors anywhere, and no memory growth beyond a
stated bound, sampled once a second from /proc for tritonserver with its Python-backend stubs, and for
the ETI worker process.

Bound: the mean RSS of the last 5 samples exceeds the mean of the 5 samples after a 5 s warm-up by at
most 10 % + 32 MiB (allocator caches settle within the warm-up; a leak of one request's tensors per
call would pass that within seconds at this rate)."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from request_samples import random_users

from duet_sdk.client import DuetClient
from duet_sdk.interface import FreshRequest, ScoreRequest

pytestmark = pytest.mark.slow
CLIENTS = Path(__file__).resolve().parents[2] / "clients"
SECONDS, CONCURRENCY, WARMUP = 30, 8, 5
MIB = 1 << 20


def rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (0 for a process that is gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


def growth_ok(samples: list[int]) -> tuple[bool, float, float]:
    base = float(np.mean(samples[WARMUP:WARMUP + 5]))
    last = float(np.mean(samples[-5:]))
    return last <= base * 1.10 + 32 * MIB, base / MIB, last / MIB


def test_soak_all_ensembles_and_eti_without_errors_or_memory_growth(triton, client, redis_url):
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    url = triton.endpoints.grpc_url
    population = ["--users", "60", "--seed", "5"]
    worker = subprocess.Popen([sys.executable, str(CLIENTS / "eti_worker.py"), "--triton", url, "--redis", redis_url,
                               "--duration", str(SECONDS + 8), "--window-s", "2", "--metrics-every", "1000"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    loadgen = subprocess.Popen([sys.executable, str(CLIENTS / "loadgen.py"), "--redis", redis_url, *population,
                                "--rate", "40", "--events", str(40 * SECONDS)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    interface = client.interface
    users = random_users(interface, 24, seed=21)
    rng = np.random.default_rng(0)
    scored = [
        ScoreRequest(
            h.user_id,
            h.static_sparse,
            h.static_dense,
            {n: [int(c) for c in rng.integers(0, e.codebook_size, e.levels)] for n, e in interface.embeddings.items()},
            c,
        )
        for h, c in users
    ]
    stop, errors, calls = threading.Event(), [], [0] * CONCURRENCY

    def load(k: int) -> None:
        with DuetClient(url, timeout_s=30, retries=0) as c:
            i = 0
            while not stop.is_set():
                batch = slice(i % 20, i % 20 + 1 + i % 4)
                try:
                    [
                        lambda: c.embed([h for h, _ in users[batch]]),
                        lambda: c.score(scored[batch]),
                        lambda: c.score_fresh([FreshRequest(h, cand) for h, cand in users[batch]]),
                    ][(k + i) % 3]()
                    calls[k] += 1
                except Exception as exc:  # noqa: BLE001 - every error counts
                    errors.append(exc)
                i += 1

    threads = [threading.Thread(target=load, args=(k,)) for k in range(CONCURRENCY)]
    for t in threads:
        t.start()
    server_rss, worker_rss = [], []
    for _ in range(SECONDS):
        time.sleep(1.0)
        server_rss.append(rss(triton._process.pid))
        worker_rss.append(rss(worker.pid))
    stop.set()
    for t in threads:
        t.join(60)
    gen_out, gen_err = loadgen.communicate(timeout=120)
    out, err = worker.communicate(timeout=120)
    metrics = json.loads(out.strip().splitlines()[-1])

    assert errors == [], f"{len(errors)} client errors, first: {errors[:3]}"
    assert loadgen.returncode == 0, gen_err
    assert worker.returncode == 0, err
    assert metrics["failed_batches"] == 0 and metrics["dead_lettered"] == 0 and metrics["written"] > 0, metrics
    ok_server, base_s, last_s = growth_ok(server_rss)
    ok_worker, base_w, last_w = growth_ok(worker_rss)
    print(
        f"soak: {sum(calls)} calls at concurrency {CONCURRENCY} in {SECONDS}s; ETI {metrics['triggers']} triggers, "
        f"{metrics['written']} written; RSS tritonserver+stubs {base_s:.0f} -> {last_s:.0f} MiB, "
        f"worker {base_w:.0f} -> {last_w:.0f} MiB"
    )
    assert min(calls) > 0
    assert ok_server, f"tritonserver+stubs RSS grew {base_s:.0f} -> {last_s:.0f} MiB: {[s // MIB for s in server_rss]}"
    assert ok_worker, f"worker RSS grew {base_w:.0f} -> {last_w:.0f} MiB: {[s // MIB for s in worker_rss]}"
