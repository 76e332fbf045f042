"""``duet-serve``: run tritonserver on a DUET model repository; ``duet-publish``: publish an export.

``duet-serve --model-repository DIR [--grpc-port P] [--http-port P] [--metrics-port P] [--host H]
[--watch S]`` binds loopback unless ``--host`` says otherwise, prints the endpoints once every model is
ready, swaps to each newly published version without downtime when ``--watch`` is set, and stops
cleanly on SIGINT/SIGTERM. Exit status: 0 after a clean stop; 2 on bad input or a failed start.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from duet_sdk.errors import DuetError
from duet_sdk.serving.config import ServingPolicy
from duet_sdk.serving.interface import ENSEMBLES
from duet_sdk.serving.repository import REPOSITORY_FILE, publish
from duet_sdk.serving.server import LOOPBACK, TritonServer


def latest_publish(repo: Path) -> dict | None:
    """The newest entry of ``repo/repository.json`` (None before the first publish)."""
    path = Path(repo) / REPOSITORY_FILE
    if not path.exists():
        return None
    versions = json.loads(path.read_text(encoding="utf-8"))["versions"]
    return versions[-1] if versions else None


def swap_order(entry: dict) -> list[str]:
    """Models of a publish in load order: components before the ensembles that use them."""
    return [*entry["models"], *entry["ensembles"]]


def watch(server: TritonServer, stop: threading.Event, interval_s: float) -> None:
    """Swap the server to every version published while it runs. A version that fails to load is
    reported and skipped; Triton keeps serving the version it had."""
    entry = latest_publish(server.repository)
    seen = serving = entry["version"] if entry else 0
    while not stop.wait(interval_s):
        entry = latest_publish(server.repository)
        if not entry or entry["version"] <= seen:
            continue
        seen = entry["version"]
        print(f"duet-serve: version {seen} published; swapping ...", flush=True)
        try:
            server.swap(swap_order(entry), seen)
        except DuetError as exc:
            print(f"duet-serve: error: swap to version {seen} failed, still serving version {serving}: {exc}",
                  file=sys.stderr, flush=True)
            continue
        serving = seen
        print(f"duet-serve: now serving version {serving}", flush=True)


def serve_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="duet-serve", description=__doc__.splitlines()[0])
    p.add_argument("--model-repository", type=Path, required=True)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--host", default=LOOPBACK, help="address to bind (default loopback)")
    p.add_argument("--watch", type=float, default=0.0, metavar="SECONDS",
                   help="poll repository.json and swap to each new version (0: off)")
    p.add_argument("--log", type=Path, help="tritonserver log file")
    args = p.parse_args(argv)
    if not (args.model_repository / REPOSITORY_FILE).exists():
        print(f"duet-serve: error: --model-repository: expected a published repository (with {REPOSITORY_FILE}), "
              f"got {args.model_repository}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = TritonServer(args.model_repository, host=args.host, grpc_port=args.grpc_port, http_port=args.http_port,
                          metrics_port=args.metrics_port, log=args.log)
    try:
        server.start()
    except DuetError as exc:
        print(f"duet-serve: error: {exc}", file=sys.stderr)
        return 2
    entry = latest_publish(args.model_repository)
    print(f"duet-serve: ready, version {entry['version'] if entry else '?'}: {server.endpoints.describe()}", flush=True)
    print(f"duet-serve: ensembles {', '.join(ENSEMBLES)}; log {server.log}", flush=True)
    if args.watch > 0:
        threading.Thread(target=watch, args=(server, stop, args.watch), daemon=True).start()
    try:
        while not stop.wait(0.5):
            if not server.running:
                print(f"duet-serve: error: tritonserver exited:\n{server.log_tail()}", file=sys.stderr)
                return 2
    finally:
        print("duet-serve: stopping ...", flush=True)
        status = server.stop()
    print(f"duet-serve: stopped (tritonserver status {status})", flush=True)
    return 0


def publish_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="duet-publish", description="Publish a duet-export output as a new "
                                "version of a Triton model repository (atomic; gated checkpoints only).")
    p.add_argument("--export", type=Path, required=True, help="duet-export --out directory (manifest.json)")
    p.add_argument("--model-repository", type=Path, required=True)
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
    p.add_argument("--keep-versions", type=int, default=defaults.keep_versions)
    args = p.parse_args(argv)
    try:
        policy = ServingPolicy(max_queue_delay_us=args.max_queue_delay_us, instances=args.instances, threads=args.threads,
                               keep_versions=args.keep_versions)
        formats = tuple(f for f in args.formats.split(",") if f) if args.formats else None
        published = publish(args.export, args.model_repository, args.target, policy, args.precision, formats, args.force)
    except DuetError as exc:
        print(f"duet-publish: error: {exc}", file=sys.stderr)
        return 2
    print(f"duet-publish: version {published.version} of {', '.join(published.models)} + {', '.join(ENSEMBLES)} "
          f"in {published.repository}")
    return 0
