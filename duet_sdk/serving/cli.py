"""``duet-serve``: run tritonserver on a DUET model repository; ``duet-publish``: publish an export.

``duet-serve --model-repository DIR [--grpc-port P] [--http-port P] [--metrics-port P] [--host H]
[--watch S] [--keep-loaded K] [--admin-key-file F]`` binds loopback unless ``--host`` says otherwise, loads
the releases ``repository.json`` lists as loaded (the current one first), prints the endpoints once every
model is ready, swaps to the target release if it is another (a new publish, a rollback: at start and,
with ``--watch``, whenever it changes), and stops cleanly on SIGINT/SIGTERM. Model control is restricted
to the operator key (``--admin-key-file`` or ``DUET_TRITON_ADMIN_KEY[_FILE]``; default a random
per-start key only duet-serve holds). Exit status: 0 after a clean stop; 1 when tritonserver died or did
not stop cleanly (a signal, a non-zero status, or killed after its exit timeout); 2 on bad input or a
failed start.

``duet-publish --export DIR --model-repository DIR`` publishes a new release (the target);
``duet-publish --model-repository DIR --rollback V`` makes release V (still on disk) the target again.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from pathlib import Path

from duet_sdk.cli_common import command_parser, configure_logging
from duet_sdk.errors import DuetError
from duet_sdk.interface import ENSEMBLES
from duet_sdk.serving import releases
from duet_sdk.serving.config import ServingPolicy
from duet_sdk.serving.repository import publish, request_rollback
from duet_sdk.serving.server import ADMIN_KEY_FILE_ENV, LOOPBACK, TritonServer, operator_key
from duet_sdk.serving.swap import SwapError, swap_release


def follow_target(server: TritonServer, keep_loaded: int) -> None:
    """Swap to the index's target release if it is not current; a failed swap is reported (the old release
    keeps serving every model and the target is marked failed)."""
    index = releases.read_index(server.repository)
    target, current = index["target"], index["current"]
    if target is None or target == current:
        return
    print(f"duet-serve: release {target} is the target; swapping from release {current} ...", flush=True)
    try:
        report = swap_release(server, target, keep_loaded)
    except (SwapError, DuetError) as exc:
        print(f"duet-serve: error: {exc}", file=sys.stderr, flush=True)
        print(f"duet-serve: still serving release {current} on every model", flush=True)
        return
    print(f"duet-serve: now serving release {report.current} (swap took {report.duration_s:.2f}s; "
          f"loaded releases {releases.read_index(server.repository)['loaded']})", flush=True)


def watch(server: TritonServer, stop: threading.Event, interval_s: float, keep_loaded: int) -> None:
    """Follow the target release while the server runs."""
    while not stop.wait(interval_s):
        try:
            follow_target(server, keep_loaded)
        except DuetError as exc:  # an unreadable index: keep serving, say so
            print(f"duet-serve: error: {exc}", file=sys.stderr, flush=True)


def serve_args_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with duet-serve's flags (named, with what was expected), or None."""
    if not (args.model_repository / releases.INDEX).exists():
        return (f"--model-repository: expected a published repository (with {releases.INDEX}), "
                f"got {args.model_repository}")
    if args.keep_loaded < 1:
        return f"--keep-loaded: expected >= 1, got {args.keep_loaded}"
    ports = {"--grpc-port": args.grpc_port, "--http-port": args.http_port, "--metrics-port": args.metrics_port}
    for flag, port in ports.items():
        if not 0 <= port <= 65535:
            return f"{flag}: expected a port in 1..65535 (0: a free one), got {port}"
    taken = [p for p in ports.values() if p]
    if len(set(taken)) != len(taken):
        return f"--grpc-port, --http-port, --metrics-port: expected different ports, got {list(ports.values())}"
    if not args.watch >= 0 or args.watch == float("inf"):
        return f"--watch: expected seconds >= 0 (0: off), got {args.watch}"
    try:
        socket.getaddrinfo(args.host, None)
    except (socket.gaierror, UnicodeError):
        return f"--host: expected an address or host name this machine can bind, got {args.host!r}"
    return None


def serve_main(argv: list[str] | None = None) -> int:
    p = command_parser("duet-serve", __doc__.splitlines()[0])
    p.add_argument("--model-repository", type=Path, required=True)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--host", default=LOOPBACK, help="address to bind (default loopback)")
    p.add_argument("--watch", type=float, default=0.0, metavar="SECONDS",
                   help="poll repository.json and swap to each new target release (0: off)")
    p.add_argument("--keep-loaded", type=int, default=ServingPolicy().serve_versions, metavar="K",
                   help="releases kept loaded: the current one and K-1 before it (default %(default)s)")
    p.add_argument("--log", type=Path, help="tritonserver log file")
    p.add_argument("--admin-key-file", type=Path, help="file holding the operator key for model control "
                   f"(else ${ADMIN_KEY_FILE_ENV} or DUET_TRITON_ADMIN_KEY; default: a random per-start key)")
    args = p.parse_args(argv)
    configure_logging(args)
    problem = serve_args_problem(args)
    if problem:
        print(f"duet-serve: error: {problem}", file=sys.stderr)
        return 2
    try:
        index = releases.read_index(args.model_repository)
    except DuetError as exc:
        print(f"duet-serve: error: {exc}", file=sys.stderr)
        return 2
    if index["current"] is None:
        print(f"duet-serve: error: --model-repository: expected a published repository (a current release in "
              f"{releases.INDEX}), got {args.model_repository}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = TritonServer(args.model_repository, models=releases.startup_models(index), host=args.host,
                              grpc_port=args.grpc_port, http_port=args.http_port,
                              metrics_port=args.metrics_port, log=args.log,
                              admin_key=operator_key(key_file=args.admin_key_file))
        server.start()
    except DuetError as exc:
        print(f"duet-serve: error: {exc}", file=sys.stderr)
        return 2
    print(f"duet-serve: ready, release {index['current']} (loaded {index['loaded']}): {server.endpoints.describe()}",
          flush=True)
    print(f"duet-serve: ensembles {', '.join(ENSEMBLES)} (current release) and <ensemble>_v<release>; log {server.log}",
          flush=True)
    follow_target(server, args.keep_loaded)
    if args.watch > 0:
        threading.Thread(target=watch, args=(server, stop, args.watch, args.keep_loaded), daemon=True).start()
    try:
        while not stop.wait(0.5):
            if not server.running:
                print(f"duet-serve: error: tritonserver exited:\n{server.log_tail()}", file=sys.stderr)
                return 1
    finally:
        print("duet-serve: stopping ...", flush=True)
        status = server.stop()
    return stop_status(status)


def stop_status(status: int | None) -> int:
    """duet-serve's exit status for tritonserver's: 0 for a clean exit, else 1 with the reason."""
    if status == 0:
        print("duet-serve: stopped (tritonserver status 0)", flush=True)
        return 0
    reason = (f"killed by signal {-status}" if status is not None and status < 0 else f"exited with status {status}")
    print(f"duet-serve: error: tritonserver did not stop cleanly: {reason}", file=sys.stderr, flush=True)
    return 1


def publish_main(argv: list[str] | None = None) -> int:
    p = command_parser("duet-publish", "Publish a duet-export output as a new "
                                "release of a Triton model repository (atomic; gated, digest-checked artifacts only), "
                                "or roll back to an earlier release.")
    p.add_argument("--export", type=Path, help="duet-export --out directory (manifest.json)")
    p.add_argument("--model-repository", type=Path, required=True)
    p.add_argument("--rollback", type=int, metavar="V", help="make release V (still on disk) the target again")
    p.add_argument("--no-activate", action="store_true", help="publish without making the release the target")
    p.add_argument("--target", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--formats", help="comma-separated artifact formats in order of preference "
                   "(default: onnx,torchscript for cpu; tensorrt,onnx,torchscript for gpu)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp16",
                   help="gpu ONNX Runtime TensorRT accelerator, where the manifest does not record the verified one")
    p.add_argument("--force", action="store_true", help="gpu: publish TensorRT plans built with another TensorRT, "
                   "CUDA or GPU than this host's (recorded as a warning)")
    defaults = ServingPolicy()
    p.add_argument("--instances", type=int, default=defaults.instances)
    p.add_argument("--threads", type=int, default=defaults.threads)
    p.add_argument("--max-queue-delay-us", type=int, default=defaults.max_queue_delay_us)
    p.add_argument("--keep-versions", type=int, default=defaults.keep_versions, help="releases kept on disk")
    args = p.parse_args(argv)
    configure_logging(args)
    if (args.export is None) == (args.rollback is None):
        print("duet-publish: error: expected exactly one of --export DIR or --rollback V", file=sys.stderr)
        return 2
    try:
        if args.rollback is not None:
            request_rollback(args.model_repository, args.rollback)
            print(f"duet-publish: release {args.rollback} is the target; a running duet-serve --watch swaps back to it")
            return 0
        policy = ServingPolicy(
            max_queue_delay_us=args.max_queue_delay_us,
            instances=args.instances,
            threads=args.threads,
            keep_versions=args.keep_versions,
        )
        formats = tuple(f for f in args.formats.split(",") if f) if args.formats else None
        published = publish(
            args.export,
            args.model_repository,
            args.target,
            policy,
            args.precision,
            formats,
            activate=not args.no_activate,
            force=args.force,
        )
    except DuetError as exc:
        print(f"duet-publish: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"duet-publish: release {published.version} of {', '.join(published.models)} + {', '.join(ENSEMBLES)} "
        f"in {published.repository}"
    )
    return 0
