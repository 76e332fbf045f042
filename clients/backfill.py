"""Re-embed the feature store's users onto the current (or a given) release, at a bounded rate.

    python clients/backfill.py --triton 127.0.0.1:8001 --redis redis://127.0.0.1:6379/0 --rate 200 \\
        --resume backfill.json [--release 2] [--metrics-port 9102]

Run it after a swap: users whose stored codes come from another release are re-embedded with the target
release (pinned) and rewritten. Progress is printed after every batch; ``--resume`` keeps the scan cursor
so a restart continues; ``--metrics-port`` exports ``duet_backfill_users_on_old_release`` and
``duet_backfill_reembedded_total`` for Prometheus. Exits 0 when no user is left on another release,
1 when some are (no profile to re-embed from), 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from _common import add_connection_flags, stop_on_signals, stores

from duet_sdk.client import DuetClient
from duet_sdk.errors import DuetError
from duet_sdk.online.backfill import Backfill, BackfillProgress


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_connection_flags(p)
    p.add_argument("--release", type=int, help="release to backfill onto (default: the server's current one)")
    p.add_argument("--rate", type=float, default=100.0, help="most users re-embedded per second (default %(default)s)")
    p.add_argument("--batch", type=int, default=16, help="users per embed call (default %(default)s)")
    p.add_argument("--resume", type=Path, help="JSON file keeping the scan cursor between runs")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = stop_on_signals()
    report = _metrics(args.metrics_port)
    try:
        with DuetClient(args.triton, timeout_s=10.0) as client:
            interface = client.connect()
            history, store = stores(args, {s: info.max_len for s, info in interface.streams.items()})
            with store:
                backfill = Backfill(client, store, history, args.release, args.rate, args.batch, args.resume)
                progress = backfill.run(stop, report)
    except DuetError as exc:
        print(f"backfill: error: {exc}", file=sys.stderr)
        return 2
    print(f"backfill: release {progress.target}: {progress.reembedded} users re-embedded ({progress.run_reembedded} by "
          f"this run in {progress.elapsed_s:.1f}s, {progress.rate_users_s:.1f} users/s), "
          f"{progress.remaining_old} still on other releases, "
          f"{progress.no_profile} without a profile")
    return 0 if progress.remaining_old == 0 else 1


def _metrics(port: int | None):
    """A progress callback printing one line and, with ``port``, updating Prometheus gauges."""
    gauges = None
    if port is not None:
        from prometheus_client import Gauge, start_http_server

        start_http_server(port, addr="127.0.0.1")
        gauges = (Gauge("duet_backfill_users_on_old_release", "users whose codes come from another release"),
                  Gauge("duet_backfill_reembedded_total", "users re-embedded onto the target release"))

    def report(progress: BackfillProgress) -> None:
        print(f"backfill: release {progress.target}: scanned {progress.scanned}, re-embedded {progress.reembedded}, "
              f"pass {progress.passes + 1}, {progress.rate_users_s:.1f} users/s", flush=True)
        if gauges is not None:
            gauges[0].set(progress.remaining_old or 0)
            gauges[1].set(progress.reembedded)

    return report


if __name__ == "__main__":
    raise SystemExit(main())
