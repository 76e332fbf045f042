"""Triton's dynamic batcher on the cpu target, on vs off, measured side by side in one run.

    .venv/bin/python benchmarks/serving_batching.py --export runs/demo/export --requests 512 --concurrency 32

Publishes the same export twice (dynamic batching with ragged inputs; no batching), serves each on
its own tritonserver in turn, and sends the same ``--requests`` single-user ``duet_upstream`` requests
(real validation users, mixed history lengths) from ``--concurrency`` concurrent asyncio callers.
With ``--repeats R`` the two configurations alternate R times (on, off, on, off, ...), so drift on a
shared machine hits both. Reports users/s, latency percentiles and the mean executed batch size per
run, and the per-repeat throughput ratio with its median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from duet_sdk.client import AsyncDuetClient, DuetClient
from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.interface import release_model
from duet_sdk.online.replay import ranker_requests
from duet_sdk.serving.config import ServingPolicy
from duet_sdk.serving.repository import publish
from duet_sdk.serving.server import TritonServer
from duet_sdk.training.datasets import synthetic_data


async def _load(url: str, histories, concurrency: int) -> tuple[float, list[float]]:
    """Seconds for all requests and each request's latency."""
    async with AsyncDuetClient(url, timeout_s=120) as client:
        await client.connect()
        pending = iter(histories)
        latencies: list[float] = []

        async def caller():
            for history in pending:
                start = time.perf_counter()
                await client.embed([history])
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return time.perf_counter() - start, latencies


def measure(export: Path, policy: ServingPolicy, histories, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        publish(export, Path(tmp) / "repo", "cpu", policy)
        with TritonServer(Path(tmp) / "repo") as server, server.client() as c:
            with DuetClient(server.endpoints.grpc_url, timeout_s=120) as warm:
                warm.embed(histories[:concurrency])
            before = c.get_inference_statistics(release_model("click_encoder", 1)).model_stats[0]
            seconds, latencies = asyncio.run(_load(server.endpoints.grpc_url, histories, concurrency))
            after = c.get_inference_statistics(release_model("click_encoder", 1)).model_stats[0]
    ms = np.array(latencies) * 1e3
    executions = after.execution_count - before.execution_count
    return {"batching": policy.batching, "users_per_s": len(histories) / seconds, "seconds": seconds,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_batch": (after.inference_count - before.inference_count) / max(executions, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", type=Path, default=Path("runs/demo/export"))
    p.add_argument("--requests", type=int, default=512)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="alternating on/off pairs")
    p.add_argument("--seed", type=int, default=0, help="synthetic data seed (the one the export was trained on)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    dataset = synthetic_data(SyntheticConfig(seed=args.seed)).dataset
    histories = [h for h, _ in ranker_requests(dataset, args.requests, 1)]
    lengths = {s: [len(h.streams[s]) for h in histories] for s in histories[0].streams}
    print(
        f"{len(histories)} users; history lengths " + ", ".join(f"{s} {min(v)}..{max(v)}" for s, v in lengths.items())
    )
    rows = [
        measure(args.export, ServingPolicy(batching=b), histories, args.concurrency)
        for _ in range(args.repeats)
        for b in (True, False)
    ]
    print(f"\n{'dynamic batching':<17} {'users/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'mean batch':>11}")
    for r in rows:
        print(
            f"{'on' if r['batching'] else 'off':<17} {r['users_per_s']:>8.1f} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
            f"{r['mean_batch']:>11.2f}"
        )
    ratios = [on["users_per_s"] / off["users_per_s"] for on, off in zip(rows[::2], rows[1::2])]
    print(
        f"\nthroughput ratio on/off per repeat: {', '.join(f'{r:.2f}x' for r in ratios)}; median "
        f"{np.median(ratios):.2f}x "
        f"(concurrency {args.concurrency}, {len(histories)} single-user requests)"
    )
    if args.json:
        args.json.write_text(json.dumps({"concurrency": args.concurrency, "rows": rows, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
