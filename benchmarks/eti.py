"""Event-triggered inference against raw ``duet_upstream``, alone: ``make bench``'s ETI rows, repeated.

    PYTHONPATH=. .venv/bin/python -m benchmarks.eti --out runs/bench --batches 16 --users 256 --rounds 5

Serves the same demo-shape deployment as ``make bench`` (cached under ``--out``/deploy) on a real
tritonserver and runs ``pipelines.eti`` for ``--rounds`` rounds: per batch size, raw duet_upstream
calls from one caller interleaved with the ETI worker's steps (users/s into the Redis store); the median
ratio, every round's ratio and the worker's Redis round trips per user. ``--profile DIR`` writes a
cProfile of the worker's steps of one more, unmeasured round (``eti-b{batch}.prof``). Prints one JSON
line per row and writes ``eti.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

log = logging.getLogger("benchmarks.eti")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench"), help="deploy cache and eti.json")
    p.add_argument("--batches", type=int, nargs="+", default=[16], help="ETI max_batch = raw batch sizes")
    p.add_argument("--users", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5, help="rounds of interleaved raw/ETI (median ratio reported)")
    p.add_argument("--profile", type=Path, default=None, help="write cProfile stats of the worker here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from benchmarks import pipelines
    from benchmarks.deployment import build_export
    from duet_sdk.client import DuetClient
    from duet_sdk.serving.config import ServingPolicy
    from duet_sdk.serving.releases import read_index, startup_models
    from duet_sdk.serving.repository import publish
    from duet_sdk.serving.server import TritonServer

    export = build_export(args.out / "deploy")
    repo = Path(tempfile.mkdtemp(prefix="bench-eti-repo-")) / "repository"
    publish(export, repo, "cpu", ServingPolicy())
    rows = []
    with TritonServer(repo, models=startup_models(read_index(repo))) as server:
        url = server.endpoints.grpc_url
        with DuetClient(url, timeout_s=60) as client:
            interface = client.connect()
        for row in pipelines.eti(url, interface, tuple(args.batches), args.users, args.rounds, args.profile):
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "eti.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
