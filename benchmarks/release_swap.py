"""Swap and rollback under load, and the backfill rate, on the tiny two-release deployment of the tests.

    PYTHONPATH=. .venv/bin/python benchmarks/release_swap.py --work runs/bench-release --users 200 --rate 500

Builds two *different* exports (seeds 0 and 100; kept under ``--work`` and reused), publishes both,
starts tritonserver (release 1 current) and redis-server, runs concurrent load on duet_fresh,
duet_upstream, duet_downstream and a Scorer, swaps to release 2 and back to release 1, and reports per
swap its duration and the per-user responses served while it ran (each request carries 2 users); then
every response is checked against in-process PyTorch of the release it reports (mismatches must be 0).
Last, ``--users`` users are stored with release-1 codes and the backfill moves them to release 2 at most
``--rate`` users/s: it reports users/s. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serving"))

from conftest import export_runs, make_runs  # noqa: E402
from release_load import Load, mismatches, run_load, serve  # noqa: E402
from request_samples import random_users  # noqa: E402

from duet_sdk.client import DuetClient  # noqa: E402
from duet_sdk.online import Backfill, RedisHistory, RedisServer, RedisStore, StoredCodes  # noqa: E402
from duet_sdk.online.replay import store_histories  # noqa: E402
from duet_sdk.online.scorer import Scorer  # noqa: E402
from duet_sdk.serving.reference import InProcessDuet  # noqa: E402
from duet_sdk.serving.repository import publish  # noqa: E402
from duet_sdk.serving.swap import swap_release  # noqa: E402

NOW = 1_702_000_000


def exports(work: Path) -> list[tuple[Path, Path]]:
    """(runs, export) for seeds 0 and 100, built once under ``work``."""
    out = []
    for seed in (0, 100):
        runs, export = work / f"runs-{seed}", work / f"export-{seed}"
        if not (export / "manifest.json").exists():
            make_runs(runs, seed)
            export_runs(runs, export, ("onnx",))
        out.append((runs, export))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("runs/bench-release"))
    p.add_argument("--users", type=int, default=200, help="stored users the backfill moves")
    p.add_argument("--rate", type=float, default=500.0, help="backfill limit, users/s")
    p.add_argument("--settle-s", type=float, default=2.0, help="load before, between and after the swaps")
    args = p.parse_args()
    (runs_a, export_a), (runs_b, export_b) = exports(args.work)
    repo = args.work / f"repo-{int(time.time())}"
    publish(export_a, repo)
    publish(export_b, repo)
    result: dict = {}
    with RedisServer() as redis, serve(repo) as server, DuetClient(server.endpoints.grpc_url, timeout_s=30) as client:
        interface = client.connect()
        references = {
            "1": InProcessDuet(runs_a, interface),
            "2": InProcessDuet(runs_b, replace(interface, version="2")),
        }
        history = RedisHistory(redis.url, {s: i.max_len for s, i in interface.streams.items()})
        store = RedisStore(redis.url)
        users = [(replace(h, request_time=NOW), c) for h, c in random_users(interface, args.users, seed=41)]
        store_histories(history, (h for h, _ in users))
        stored = {}
        for start in range(0, len(users), 16):
            for k, e in enumerate(client.embed([h for h, _ in users[start : start + 16]], release=1)):
                stored[start + k] = ("1", e.codes)
        store.put_many([StoredCodes(users[i][0].user_id, c, v, NOW - 10) for i, (v, c) in stored.items()])
        loaded_users = users[:8]
        codes = [stored[i][1] for i in range(len(loaded_users))]
        stop, load = threading.Event(), Load()
        threads = run_load(
            server.endpoints.grpc_url,
            loaded_users,
            codes,
            lambda c: Scorer(c, store, history, write_back=False, clock=lambda: NOW),
            stop,
            load,
        )
        swaps = []
        try:
            time.sleep(args.settle_s)
            for target in (2, 1):
                started = time.monotonic()
                report = swap_release(server, target)
                swaps.append(
                    {
                        "to": target,
                        "duration_s": round(report.duration_s, 3),
                        "user_responses_during_swap": load.served_between(started, time.monotonic()),
                    }
                )
                time.sleep(args.settle_s)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        bad, seen = mismatches(load, loaded_users, codes, references, stored)
        result |= {
            "swaps": swaps,
            "responses": len(load.responses),
            "failed_requests": len(load.failures),
            "mismatches": len(bad),
            "responses_by_ensemble_and_release": {f"{k}@{v}": n for (k, v), n in sorted(seen.items())},
        }
        swap_release(server, 2)
        progress = Backfill(client, store, history, target=2, rate_users_s=args.rate, batch=16).run()
        result["backfill"] = {
            "users": progress.reembedded,
            "seconds": round(progress.elapsed_s, 2),
            "users_per_s": round(progress.rate_users_s, 1),
            "limit_users_per_s": args.rate,
            "remaining_old": progress.remaining_old,
            "passes": progress.passes,
        }
        store.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
