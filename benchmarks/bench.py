"""``make bench``: the machine's limit and what the SDK achieves against it, measured in one run.

    .venv/bin/python -m benchmarks.bench --out runs/bench            # full
    .venv/bin/python -m benchmarks.bench --out runs/bench --quick    # a few minutes

Writes ``bench.json`` (every row), ``bench.md`` (tables), ``encoders.png`` (% of the GEMM peak per
runtime and batch) and ``serving.png`` (p99 vs requests/s per ensemble) under ``--out``. The serving part
(``pipelines.py``: Triton overhead, concurrency sweep, event-triggered inference;
``serving_profile.py``: where the overhead goes and what bounds concurrency 16) publishes a demo-shape
deployment it exports itself (cached under ``--out``/deploy) and serves it on a real tritonserver and
redis-server; ``--skip-serving`` leaves it out. The GEMM peak is measured before and after the encoder runs, and the
higher of the two is the limit every percentage is taken against, so a busy machine shows up as a
low ratio rather than a flattering one.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from benchmarks import machine
from benchmarks.encoders import DEMO, PRODUCTION, measure_encoder
from benchmarks.report import encoder_plot, to_markdown
from benchmarks.serving_report import sweep_plot
from benchmarks.serving_report import to_markdown as serving_markdown
from benchmarks.side_codec import measure_side

log = logging.getLogger("benchmarks.bench")


def serving(out: Path, quick: bool) -> dict:
    """Publish the demo-shape deployment, serve it, and measure overhead, the sweep and ETI (``pipelines.py``),
    then break the overhead down (``serving_profile.py``)."""
    from benchmarks import pipelines, serving_profile
    from benchmarks.deployment import build_export
    from duet_sdk.client import DuetClient
    from duet_sdk.serving.config import ServingPolicy
    from duet_sdk.serving.releases import read_index, startup_models, usable
    from duet_sdk.serving.repository import publish
    from duet_sdk.serving.server import TritonServer
    from duet_sdk.tune.measure import MeasureConfig

    export = build_export(out / "deploy")
    policy = ServingPolicy()
    repo = Path(tempfile.mkdtemp(prefix="bench-repo-")) / "repository"
    version = publish(export, repo, "cpu", policy).version
    measure = (MeasureConfig(warmup_s=0.5, window_s=1.0, max_windows=6) if quick
               else MeasureConfig(warmup_s=1.0, window_s=2.0, max_windows=10))
    profile_dir = Path(tempfile.mkdtemp(prefix="bench-runner-profile-"))
    with TritonServer(repo, models=startup_models(read_index(repo)),  # the runners keep their step times there
                      environment={serving_profile.PROFILE_ENV: str(profile_dir)}) as server:
        url = server.endpoints.grpc_url
        with DuetClient(url, timeout_s=60) as client:
            interface = client.connect()
        log.info("serving: overhead at concurrency 1")
        overhead = pipelines.overhead(url, repo, version, interface, measure, seconds=1.5 if quick else 4.0)
        log.info("serving: concurrency sweep")
        sweep = pipelines.sweep(url, version, interface, (1, 4, 16) if quick else (1, 2, 4, 8, 16, 32), measure)
        log.info("serving: event-triggered inference")
        eti = pipelines.eti(url, interface, (16,) if quick else (1, 16, 64), users=256 if quick else 1024)
        log.info("serving: where the per-request time goes, and what bounds concurrency 16")
        profile = serving_profile.profile(server, profile_dir, repo, usable(read_index(repo), version), interface,
                                          measure, quick)
    described = (f"dynamic batching, queue delay {policy.max_queue_delay_us} us, {policy.instances} instance, "
                 f"{policy.threads} thread per model")
    return {"policy": described, "overhead": overhead, "sweep": sweep, "eti": eti, "profile": profile,
            "measure": {"warmup_s": measure.warmup_s, "window_s": measure.window_s, "max_windows": measure.max_windows,
                        "stable_windows": measure.stable_windows, "stability": measure.stability}}


def run(out: Path, quick: bool, threads: int, with_serving: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    min_seconds = 0.5 if quick else 2.0
    before = machine.gemm_peak(threads)
    log.info("fp32 GEMM peak %.1f GFLOP/s (n=%d, %d threads)", before["gflops"], before["n"], threads)
    plans = [("click", DEMO, {}), ("conv", DEMO, {})]
    if not quick:  # production shapes (their exports took most of a quick run's 18 min), and the FLOP levers
        plans += [("click", PRODUCTION, {}), ("conv", PRODUCTION, {}),
                  ("click", PRODUCTION, {"pyramid": (256, 128, 64, 32)}),
                  ("click", PRODUCTION, {"attention": _attention(latent_dim=32)})]
    batches = (1, 8) if quick else (1, 8, 64)
    encoders = []
    for kind, shape, overrides in plans:
        log.info("encoder %s at %s %s", kind, shape.name, overrides or "")
        encoders += measure_encoder(kind, shape, batches, threads, min_seconds, before["gflops"], workdir, **overrides)
    after = machine.gemm_peak(threads)
    peak = max(before["gflops"], after["gflops"])
    for row in encoders:
        row["pct_peak"] = 100 * row["gflops"] / peak
    log.info("SIDE codec")
    side = measure_side(threads=threads, min_seconds=min_seconds)
    results = {"machine": machine.describe(), "threads": threads, "quick": quick,
               "gemm_peak": {"before": before, "after": after, "gflops": peak}, "encoders": encoders, "side": side}
    if with_serving:
        results["serving"] = serving(out, quick)
        sweep_plot(results["serving"]["sweep"], out / "serving.png")
    (out / "bench.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    (out / "bench.md").write_text(markdown(results), encoding="utf-8")
    encoder_plot(encoders, out / "encoders.png")
    return results


def markdown(results: dict) -> str:
    return to_markdown(results) + (serving_markdown(results["serving"]) if "serving" in results else "")


def _attention(latent_dim: int):
    from duet_sdk.models.config import AttentionConfig

    return AttentionConfig(num_heads=4, kind="mla", latent_dim=latent_dim)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench"), help="where bench.json, bench.md and plots go")
    p.add_argument("--quick", action="store_true", help="fewer shapes, batches and shorter windows (a few minutes)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and ONNX Runtime")
    p.add_argument("--skip-serving", action="store_true", help="leave out tritonserver overhead, sweep and ETI")
    p.add_argument("--only-serving", action="store_true", help="only the serving part (no GEMM, encoders, SIDE)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("root").setLevel(logging.ERROR)  # onnxruntime.quantization's pre-processing hint
    if args.only_serving:
        args.out.mkdir(parents=True, exist_ok=True)
        results = {"quick": args.quick, "serving": serving(args.out, args.quick)}
        sweep_plot(results["serving"]["sweep"], args.out / "serving.png")
        text = serving_markdown(results["serving"])
        (args.out / "serving.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
        (args.out / "serving.md").write_text(text, encoding="utf-8")
        print(text)
        return 0
    results = run(args.out, args.quick, args.threads, not args.skip_serving)
    print(markdown(results))
    print(f"written: {args.out / 'bench.json'}, {args.out / 'bench.md'}, {args.out / 'encoders.png'}"
          + (f", {args.out / 'serving.png'}" if "serving" in results else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
