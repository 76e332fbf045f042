"""Event-triggered inference worker: Redis Streams triggers -> duet_upstream -> SIDE codes in the store.

    python clients/eti_worker.py --triton 127.0.0.1:8001 --redis redis://127.0.0.1:6379/0 --consumer w1

Run several with different ``--consumer`` names to scale out (one consumer group). A worker that dies
leaves its unacknowledged triggers pending; another reclaims them after ``--reclaim-idle-s``. Prints
its metrics as JSON every ``--metrics-every`` seconds and once more on SIGINT/SIGTERM, and serves them
in Prometheus format with ``--metrics-port``. Triggers that keep failing go to ``<stream>:dead``.
"""

from __future__ import annotations

import argparse
import json
import threading

from _common import (
    add_connection_flags,
    add_metrics_flag,
    apply_credentials,
    report_errors,
    serve_metrics,
    stop_on_signals,
    stores,
)

from duet_sdk.client import DuetClient
from duet_sdk.online import EtiCollector, EtiConfig, EtiWorker, RedisStreamQueue, RedisThrottle
from duet_sdk.online._redis import redact
from duet_sdk.online.queue import default_consumer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_connection_flags(p)
    defaults = EtiConfig()
    p.add_argument("--consumer", default=default_consumer(), help="consumer name in the group (unique per worker)")
    p.add_argument("--window-s", type=float, default=30.0, help="per-user throttle window")
    p.add_argument("--max-batch", type=int, default=defaults.max_batch)
    p.add_argument("--max-wait-s", type=float, default=defaults.max_wait_s)
    p.add_argument("--reclaim-idle-s", type=float, default=defaults.reclaim_idle_s)
    p.add_argument("--max-deliveries", type=int, default=defaults.max_deliveries,
                   help="a trigger delivered more often goes to the dead-letter stream")
    add_metrics_flag(p)
    p.add_argument("--metrics-every", type=float, default=5.0)
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: until signalled)")
    args = p.parse_args(argv)
    apply_credentials(args)
    return report_errors("eti_worker", run, args)


def run(args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    with DuetClient(args.triton, timeout_s=10.0) as client:
        interface = client.connect()
        history, store = stores(args, {s: info.max_len for s, info in interface.streams.items()})
        worker = EtiWorker(
            RedisStreamQueue(args.redis, consumer=args.consumer),
            RedisThrottle(args.redis, args.window_s),
            history,
            store,
            client.embed,
            EtiConfig(
                max_batch=args.max_batch,
                max_wait_s=args.max_wait_s,
                reclaim_idle_s=args.reclaim_idle_s,
                max_deliveries=args.max_deliveries,
            ),
        )
        serve_metrics(args.metrics_port, EtiCollector(worker))
        print(
            f"eti_worker {args.consumer}: model version {interface.version}, Triton {args.triton}, "
            f"Redis {redact(args.redis)}",
            flush=True,
        )
        if args.duration:
            timer = threading.Timer(args.duration, stop.set)
            timer.daemon = True
            timer.start()
        runner = threading.Thread(target=worker.run, args=(stop,))
        runner.start()
        while not stop.wait(args.metrics_every):
            print(json.dumps(worker.metrics.to_dict()), flush=True)
        runner.join()
        print(json.dumps(worker.metrics.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
