"""Shared flags and wiring of the client programs: where Triton, Redis and the feature store are, and
the synthetic population that loadgen.py replays and score.py asks about.

Redis credentials never go on the command line: give the URL without a password and set
``DUET_REDIS_PASSWORD`` or ``DUET_REDIS_PASSWORD_FILE`` (or ``--redis-password-file``). URLs are
printed redacted."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from duet_sdk.cli_common import report_errors  # noqa: F401 - the client programs import it from here
from duet_sdk.online import RedisHistory, open_store
from duet_sdk.online._redis import PASSWORD_FILE_ENV


def add_connection_flags(parser: argparse.ArgumentParser, triton: bool = True) -> None:
    if triton:
        parser.add_argument("--triton", default="127.0.0.1:8001", help="Triton gRPC endpoint (duet-serve)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0",
                        help="Redis URL without password: trigger queue, histories, throttle")
    parser.add_argument("--redis-password-file", help="file holding the Redis password "
                        "(else $DUET_REDIS_PASSWORD or $DUET_REDIS_PASSWORD_FILE)")
    parser.add_argument("--store", help="feature store URL: redis://... or sqlite:///path (default: --redis)")


def apply_credentials(args: argparse.Namespace) -> None:
    """Route ``--redis-password-file`` to the environment the Redis backends read it from."""
    if getattr(args, "redis_password_file", None):
        os.environ[PASSWORD_FILE_ENV] = args.redis_password_file


def add_metrics_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (0: off)")


def serve_metrics(port: int, collector) -> None:
    """Expose ``collector`` (prometheus_client) on loopback ``port``; nothing when ``port`` is 0."""
    if not port:
        return
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(collector)
    start_http_server(port, addr="127.0.0.1", registry=registry)


def add_population_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=200, help="synthetic users to simulate")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed (same in loadgen.py and score.py)")


def population(args: argparse.Namespace):
    """The synthetic dataset loadgen.py replays (its users and events are the online traffic). Imported
    here, not at the top: the generator needs the [train] extra, which the ETI worker does not."""
    from duet_sdk.data.synthetic import SyntheticConfig
    from duet_sdk.training.datasets import synthetic_data

    return synthetic_data(SyntheticConfig(num_users=max(args.users, 50), seed=args.seed)).dataset


def stores(args: argparse.Namespace, max_len: dict[str, int]):
    """(history store, feature store) of ``args``."""
    return RedisHistory(args.redis, max_len), open_store(args.store or args.redis)


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


