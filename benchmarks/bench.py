"""``make bench``: the machine's limit and what the SDK achieves against it, measured in one run.

    .venv/bin/python -m benchmarks.bench --out runs/bench            # full
    .venv/bin/python -m benchmarks.bench --out runs/bench --quick    # a few minutes

Writes ``bench.json`` (every row), ``bench.md`` (tables) and ``encoders.png`` (% of the GEMM peak per
runtime and batch) under ``--out``. The GEMM peak is measured before and after the encoder runs, and the
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
from benchmarks.side_codec import measure_side

log = logging.getLogger("benchmarks.bench")


def run(out: Path, quick: bool, threads: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    min_seconds = 0.5 if quick else 2.0
    before = machine.gemm_peak(threads)
    log.info("fp32 GEMM peak %.1f GFLOP/s (n=%d, %d threads)", before["gflops"], before["n"], threads)
    plans = [("click", DEMO, {}), ("conv", DEMO, {}), ("click", PRODUCTION, {}), ("conv", PRODUCTION, {})]
    if not quick:  # the model's own FLOP levers, on the production ClickAUN
        plans += [("click", PRODUCTION, {"pyramid": (256, 128, 64, 32)}),
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
    (out / "bench.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    (out / "bench.md").write_text(to_markdown(results), encoding="utf-8")
    encoder_plot(encoders, out / "encoders.png")
    return results


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
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("root").setLevel(logging.ERROR)  # onnxruntime.quantization's pre-processing hint
    results = run(args.out, args.quick, args.threads)
    print(to_markdown(results))
    print(f"written: {args.out / 'bench.json'}, {args.out / 'bench.md'}, {args.out / 'encoders.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
