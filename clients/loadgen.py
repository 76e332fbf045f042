"""Replay synthetic user event streams into online storage at a given rate, publishing ETI triggers.

    python clients/loadgen.py --redis redis://127.0.0.1:6379/0 --users 200 --rate 50 --events 2000

First every user's profile and older events are preloaded (shifted to end now); then the newer events
are sent one by one at ``--rate`` events/s, each appended to the user's history and, when its stream is
qualifying (``--qualifying``, default conv and click), published as a trigger on the Redis stream.
Redis calls are retried ``--retries`` times with exponential backoff and jitter (a Redis restart);
when Redis stays away the program stops with an error and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _common import (
    add_connection_flags,
    add_population_flags,
    apply_credentials,
    population,
    report_errors,
    stop_on_signals,
)

from duet_sdk.online import RedisHistory, RedisStreamQueue
from duet_sdk.online._redis import connect
from duet_sdk.online.replay import live_events, preload, replay


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_connection_flags(p, triton=False)
    add_population_flags(p)
    p.add_argument("--rate", type=float, default=50.0, help="events per second (0: as fast as possible)")
    p.add_argument("--events", type=int, default=0, help="stop after this many live events (0: all)")
    p.add_argument("--qualifying", default="conv,click", help="streams whose events trigger an embedding refresh")
    p.add_argument("--live-fraction", type=float, default=0.2, help="share of each user's time span replayed live")
    p.add_argument("--retries", type=int, default=8, help="reconnect attempts per Redis call (backoff 0.05 s .. 2 s)")
    args = p.parse_args(argv)
    apply_credentials(args)
    for bad, message in (
        (args.rate < 0, f"--rate: expected >= 0, got {args.rate}"),
        (not 0 < args.live_fraction < 1, f"--live-fraction: expected in (0, 1), got {args.live_fraction}"),
        (args.retries < 0, f"--retries: expected >= 0, got {args.retries}"),
        (args.users < 1, f"--users: expected >= 1, got {args.users}"),
        (args.events < 0, f"--events: expected >= 0, got {args.events}"),
    ):
        if bad:
            print(f"loadgen: error: {message}", file=sys.stderr)
            return 2
    return report_errors("loadgen", run, args)


def run(args: argparse.Namespace) -> int:
    dataset = population(args)
    table, schema = dataset.table, dataset.schema
    users = list(range(min(args.users, table.num_users)))
    stamps = np.concatenate([table.streams[s].timestamps for s in table.streams])
    split = int(np.quantile(stamps, 1 - args.live_fraction))
    redis = connect(args.redis, "--redis", retries=args.retries)
    history = RedisHistory(redis, {s.name: s.max_len for s in schema.streams})
    queue = RedisStreamQueue(redis, consumer="loadgen")
    preload(table, users, history, split, int(time.time()))
    events = live_events(table, users, split)
    if args.events:
        events = events[: args.events]
    qualifying = tuple(s for s in args.qualifying.split(",") if s)
    print(
        f"loadgen: preloaded {len(users)} users; replaying {len(events)} events at {args.rate or 'max'}/s", flush=True
    )
    stop, stats, last = stop_on_signals(), None, time.monotonic()
    for stats in replay(table, events, history, queue, args.rate, qualifying):
        if stop.is_set():
            break
        if time.monotonic() - last >= 5:
            print(
                f"loadgen: {stats.events} events, {stats.triggers} triggers, {stats.events / stats.seconds:.1f} "
                "events/s",
                flush=True,
            )
            last = time.monotonic()
    if stats:
        print(
            f"loadgen: done: {stats.events} events, {stats.triggers} triggers in {stats.seconds:.1f}s "
            f"({stats.events / max(stats.seconds, 1e-9):.1f} events/s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
