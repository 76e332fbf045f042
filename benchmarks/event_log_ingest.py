"""Event-log ingest: rows/s and peak RSS of ``load_event_log`` at growing log sizes.

    .venv/bin/python benchmarks/event_log_ingest.py --rows 1000000 10000000 --formats parquet csv

For each size a log in the Taobao UserBehavior layout is generated chunk by chunk straight to disk
(never whole in memory) with realistic marginals:

* heavy-tailed user activity: each user's weight is log-normal (sigma 1.5), about 100 events per user
  on average (Taobao: 100M rows, 988k users);
* Zipf item popularity (exponent 1.1) over a catalogue that grows over time (half the items exist at
  the start, the rest appear evenly over the log's 9 days); 30 % of events go to a Zipf over the
  newest 5 % of the items available then, so new items get popular;
* Taobao's behaviour mix: pv 89.6 %, cart 5.5 %, fav 2.9 %, buy 2.0 %; 9,439 categories.

Each load runs in a child process (``os.wait4`` gives its peak RSS) with ``spill_dir`` set, so the
dataset ends up in memory-mapped files; the child then streams 50 training batches from them. Data
lives under ``--work`` (default ``data_cache/ingest``, gitignored) and is deleted afterwards unless
``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

START = 1_511_539_200  # 2017-11-24 16:00 UTC, Taobao's first day
DAYS = 9
BEHAVIORS = np.array(["pv", "cart", "fav", "buy"])
MIX = np.array([0.896, 0.055, 0.029, 0.020])
CHUNK = 2_000_000


def _zipf_ranks(rng: np.random.Generator, n: int, size: np.ndarray | int, s: float = 1.1) -> np.ndarray:
    """Ranks in [0, size) with p(r) ~ (r + 1)^-s (inverse CDF of the continuous power law)."""
    u = rng.random(n)
    top = np.asarray(size, dtype=np.float64) ** (1.0 - s)
    return np.minimum((1.0 + u * (top - 1.0)) ** (1.0 / (1.0 - s)) - 1.0, np.asarray(size) - 1).astype(np.int64)


def generate(path: Path, rows: int, fmt: str, seed: int = 0) -> None:
    """Write a Taobao-layout log of ``rows`` rows to ``path`` (Parquet or headerless CSV), in chunks."""
    rng = np.random.default_rng(seed)
    num_users, num_items = max(10, rows // 100), max(100, rows // 24)
    user_cdf = np.cumsum(rng.lognormal(0.0, 1.5, num_users))
    user_ids = rng.permutation(num_users * 2)[:num_users] + 1  # sparse raw ids
    writer = None
    for lo in range(0, rows, CHUNK):
        n = min(CHUNK, rows - lo)
        t = START + (lo + np.arange(n)) / rows * DAYS * 86400  # time advances through the file
        available = (num_items * (0.5 + 0.5 * (t - START) / (DAYS * 86400))).astype(np.int64)
        item = _zipf_ranks(rng, n, available)
        recent = rng.random(n) < 0.3
        newest = np.maximum(1, available // 20)
        item[recent] = available[recent] - 1 - _zipf_ranks(rng, int(recent.sum()), newest[recent])
        user = user_ids[np.minimum(np.searchsorted(user_cdf, rng.random(n) * user_cdf[-1]), num_users - 1)]
        behavior = BEHAVIORS[np.searchsorted(np.cumsum(MIX), rng.random(n) * MIX.sum())]
        jitter = rng.integers(-1800, 1800, n)  # logs are only roughly in time order
        table = pa.table({
            "user_id": user, "item_id": item + 1, "category_id": (item * 7919) % 9439,
            "behavior_type": behavior, "timestamp": np.clip(t.astype(np.int64) + jitter, START, None),
        })
        if fmt == "parquet":
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        else:
            writer = writer or pa_csv.CSVWriter(
                path, table.schema, write_options=pa_csv.WriteOptions(include_header=False, quoting_style="none")
            )
            writer.write_table(table)
    writer.close()


def ingest_child(path: str, spill: str, batches: int) -> None:
    """In a child process: load the log, stream training batches, print JSON figures."""
    from duet_sdk.data.batching import iterate_batches
    from duet_sdk.data.eventlog import EventLogOptions, load_event_log
    from duet_sdk.data.spec import preset

    start = time.perf_counter()
    ds = load_event_log(path, preset("taobao"), EventLogOptions(spill_dir=spill))
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    seen = 0
    for i, batch in enumerate(iterate_batches(ds.table, ds.click_train, 256, shuffle=True)):
        seen += len(batch["labels"])
        if i + 1 >= batches:
            break
    print(
        json.dumps(
            {
                "rows": ds.report.read.rows_read,
                "load_s": load_s,
                "batch_s": time.perf_counter() - start,
                "batch_rows": seen,
                "users": ds.report.users_total,
                "items": ds.report.items_total,
                "sets": ds.report.rows,
                "spill_bytes": sum(p.stat().st_size for p in Path(ds.spill_path).glob("*.bin")),
            }
        )
    )


def run_one(path: Path, spill: Path, batches: int) -> dict:
    """Load ``path`` in a child process; its figures plus peak RSS (GiB) from ``os.wait4``."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", str(path), "--spill", str(spill), "--batches", str(batches)],
        stdout=subprocess.PIPE,
        env=env,
    )
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"ingest of {path} failed with exit code {child.returncode}")
    figures = json.loads(out.decode().strip().splitlines()[-1])
    figures["peak_rss_gib"] = usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--formats", nargs="+", choices=("parquet", "csv"), default=["parquet", "csv"])
    p.add_argument("--work", type=Path, default=Path("data_cache/ingest"))
    p.add_argument("--batches", type=int, default=50, help="training batches streamed after each load")
    p.add_argument("--keep", action="store_true", help="keep generated logs and spill files")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--spill", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return ingest_child(args.child, args.spill, args.batches)
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in args.rows:
        for fmt in args.formats:
            path = args.work / f"taobao_{rows}.{fmt}"
            start = time.perf_counter()
            generate(path, rows, fmt)
            gen_s = time.perf_counter() - start
            spill = args.work / f"spill_{rows}_{fmt}"
            figures = {
                "format": fmt,
                "file_gib": path.stat().st_size / 2**30,
                "generate_s": gen_s,
                **run_one(path, spill, args.batches),
            }
            figures["rows_per_s"] = figures["rows"] / figures["load_s"]
            results.append(figures)
            print(json.dumps(figures), flush=True)
            if not args.keep:
                path.unlink()
                shutil.rmtree(spill, ignore_errors=True)
    print("\n| rows | format | file GiB | load s | rows/s | peak RSS GiB | spilled GiB | 50 batches s |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['rows']:,} | {r['format']} | {r['file_gib']:.2f} | {r['load_s']:.1f} | {r['rows_per_s']:,.0f} | "
            f"{r['peak_rss_gib']:.2f} | {r['spill_bytes'] / 2**30:.2f} | {r['batch_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
