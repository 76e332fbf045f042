"""What bounds the fp32 ONNX Runtime encoders below the GEMM peak: an operator profile at production lengths.

    PYTHONPATH=. .venv/bin/python -m benchmarks.encoder_profile --out runs/encoder_profile [--threads 2]

For ClickAUN and ConvAUN of the default preset (256 click, 64 conv events; random weights: speed only),
exported to fp32 ONNX, at B users: the fp32 GEMM peak (measured in the same run), the whole call's
GFLOP/s (counted matrix-product FLOPs, ``benchmarks.encoders.flops_per_user``) as % of peak, ONNX
Runtime's share of node time per operator type, and the rate the counted FLOPs would reach if only the
matrix-product nodes (MatMul, Gemm, FusedMatMul) took time: what the kernels themselves achieve, apart
from the element-wise, normalisation and reshaping work around them. Writes ``encoder_profile.json``
and ``encoder_profile.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from benchmarks.encoders import PRODUCTION, build, flops_per_user, full_inputs, time_call
from benchmarks.machine import gemm_peak
from benchmarks.precision import op_profile
from duet_sdk.export.torch2onnx import export_onnx, onnxruntime_runner
from duet_sdk.export.verify import example_inputs

log = logging.getLogger("benchmarks.encoder_profile")
MATRIX_OPS = ("MatMul", "Gemm", "FusedMatMul", "MatMulNBits")


def profile_encoder(kind: str, batch: int, threads: int, workdir: Path) -> dict:
    """One encoder at ``batch`` users: GFLOP/s of the whole call and the operator shares of its time."""
    serving = build(kind, PRODUCTION)
    directory = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=workdir))
    path = export_onnx(serving, example_inputs(serving.signature), directory / "model.onnx")
    inputs = full_inputs(serving, batch)
    run = onnxruntime_runner(path, threads=threads)
    seconds = time_call(lambda: run(inputs), min_seconds=3.0)
    flops = flops_per_user(serving) * batch
    shares = op_profile(path, inputs, threads)
    matrix = sum(pct for op, pct in shares.items() if op in MATRIX_OPS) / 100
    return {
        "encoder": kind,
        "batch": batch,
        "gflop_per_call": flops / 1e9,
        "ms_per_call": seconds * 1e3,
        "gflops": flops / seconds / 1e9,
        "matrix_time_share": matrix,
        "matrix_gflops": flops / (seconds * matrix) / 1e9 if matrix else None,
        "op_shares": shares,
    }


def to_markdown(results: dict) -> str:
    peak = results["peak_gflops"]
    lines = [
        f"fp32 GEMM peak {peak:.1f} GFLOP/s ({results['threads']} threads; before {results['peak_before']:.1f}, "
        f"after {results['peak_after']:.1f}).",
        "",
        "| encoder | B | ms/call | GFLOP/s | % of peak | matrix-product share of node time | "
        "matrix products alone: % of peak | largest other operators (% of node time) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results["rows"]:
        others = [f"{op} {pct}" for op, pct in r["op_shares"].items() if op not in MATRIX_OPS][:6]
        lines.append(
            f"| {r['encoder']} | {r['batch']} | {r['ms_per_call']:.1f} | {r['gflops']:.1f} | "
            f"{100 * r['gflops'] / peak:.1f} | {100 * r['matrix_time_share']:.1f} % | "
            f"{100 * r['matrix_gflops'] / peak:.1f} | {', '.join(others)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("runs/encoder_profile"))
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and ONNX Runtime")
    p.add_argument("--batches", type=int, nargs="+", default=[8, 64])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    before = gemm_peak(args.threads)["gflops"]
    with tempfile.TemporaryDirectory(dir=args.out) as work:
        rows = [profile_encoder(k, b, args.threads, Path(work)) for k in ("click", "conv") for b in args.batches]
    after = gemm_peak(args.threads)["gflops"]
    results = {
        "threads": args.threads,
        "peak_before": before,
        "peak_after": after,
        "peak_gflops": max(before, after),
        "rows": rows,
    }
    (args.out / "encoder_profile.json").write_text(json.dumps(results, indent=2))
    (args.out / "encoder_profile.md").write_text(to_markdown(results))
    log.warning("wrote %s", args.out / "encoder_profile.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
