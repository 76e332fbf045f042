"""GPU check of the serving models with CUDA and PyTorch only (no TensorRT, ONNX Runtime or Triton needed).

It imports duet_sdk, so duet_sdk's base dependencies must import (numpy, safetensors, scikit-learn).

What it runs, on random-weight encoders and a DUET ranker of a preset's size (or the accepted
checkpoints of ``--runs``), every parity check through ``verify_artifact`` on the profile's cases
against CPU eager PyTorch at the stated tolerances (fp32: 1e-4 embeddings, 1e-5 probabilities;
fp16: 1e-2; SIDE codes exact outside near ties):

- TorchScript traced on CUDA: fused encoders and ranker in fp32, the ranker in fp16;
- the gpu target's split encoders: the prep model (exact int32 rows), then the engine in fp32 and in
  fp16 (prep stays fp32, the engine runs ``.half()``: time features are already bounded);
- the export's CPU-traced TorchScript loaded onto CUDA (what ``pytorch_libtorch`` would serve);
- a TensorRT build + verification of each engine (fp32, fp16) wherever ``tensorrt`` and ``onnx`` import;
- throughput at B in {1, 8, 64} (users/s) for fused fp32, prep + engine fp32/fp16, ranker fp32/fp16.

Without CUDA, the CPU parts run and every CUDA part is listed as skipped with its reason. The result
is JSON (``--out``); the exit status is 1 if any check failed.

    python benchmarks/gpu_check.py --out runs/gpu_check.json            # preset demo, random weights
    python benchmarks/gpu_check.py --runs runs/demo --out runs/gpu_check.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from duet_sdk.export.extract import ServingModel, extract_encoder, extract_ranker
from duet_sdk.export.prep import compose, split_encoder
from duet_sdk.export.verify import Case, VerificationError, profile_cases, sample_inputs, verify_artifact

log = logging.getLogger("gpu_check")
BATCHES = (1, 8, 64)
NO_CUDA = "no CUDA device here (torch.cuda.is_available() is False)"


def random_models(preset: str, max_len: tuple[int, int], max_batch: int) -> dict[str, ServingModel]:
    """Fused serving models of random-weight click/conv encoders, SIDE codecs and a DUET ranker."""
    from duet_sdk.data.synthetic import SyntheticConfig
    from duet_sdk.models.config import HashConfig, RankerConfig, TaskSpec, UserEmbeddingInput
    from duet_sdk.models.ranker import Ranker
    from duet_sdk.models.upstream import UpstreamNet
    from duet_sdk.side import SideCodec, SideConfig
    from duet_sdk.training.presets import upstream_config

    schema = SyntheticConfig(max_click_len=max_len[0], max_conv_len=max_len[1]).schema()
    torch.manual_seed(0)
    models, embeddings, codecs = {}, [], {}
    for kind in ("click", "conv"):
        net = UpstreamNet(upstream_config(kind, schema, preset)).eval()
        codec = SideCodec(SideConfig(levels=4, codebook_size=256), torch.randn(4, 256, net.config.embedding_dim) * 0.3)
        models[f"{kind}_encoder"] = extract_encoder(net, codec, kind, max_batch, opt_batch=min(8, max_batch))
        codecs[kind] = codec
        embeddings.append(UserEmbeddingInput(kind, dim=net.config.embedding_dim, levels=4, codebook_size=256))
    config = RankerConfig(schema=schema, tasks=(TaskSpec("offsite_conversion"), TaskSpec("link_click")),
                          primary_task="offsite_conversion", embeddings=tuple(embeddings), d_feature=16,
                          projection_hidden=(32,), hashing=HashConfig(num_hashes=2, table_size=4096, dim=16),
                          overarch_hidden=(64,))
    ranker = Ranker(config).eval()
    for kind, codec in codecs.items():
        ranker.decoders[kind].codebooks.copy_(codec.codebooks)
    models["ranker"] = extract_ranker(ranker, max_batch, min(8, max_batch), 128, 32)
    return models


def checkpoint_models(runs: Path, max_batch: int) -> dict[str, ServingModel]:
    """Fused serving models of the accepted checkpoints of a duet-train output."""
    from duet_sdk.export.pipeline import build_serving
    from duet_sdk.export.sources import select_all
    from duet_sdk.export.spec import ExportSpec, ShapeSpec

    spec = ExportSpec(checkpoints=runs, shapes=ShapeSpec(opt_batch=min(8, max_batch), max_batch=max_batch))
    return build_serving(select_all(runs, spec.encoders, spec.ranker, False), spec)


def traced(serving: ServingModel, device: str, half: bool, directory: Path) -> torch.jit.ScriptModule:
    """``serving`` traced on ``device`` (``.half()`` floats if ``half``), saved and loaded back."""
    module = copy.deepcopy(serving.module).to(device)
    module = module.half() if half else module
    example = sample_inputs(serving.signature, Case(5, "short", "mixed"), seed=12345)
    args = tuple(_cast(example[n], device, half) for n in serving.signature.input_names)
    with torch.no_grad():
        script = torch.jit.trace(module, args, check_trace=False)
    path = directory / _filename(serving, device, half)
    script.save(str(path))
    return torch.jit.load(str(path), map_location=device)


def _filename(serving: ServingModel, device: str, half: bool) -> str:
    return f"{serving.name}-{serving.role}-{device}-{'fp16' if half else 'fp32'}.pt"


def _cast(tensor: torch.Tensor, device: str, half: bool) -> torch.Tensor:
    tensor = tensor.to(device)
    return tensor.half() if half and tensor.is_floating_point() else tensor


def script_runner(script, signature, device: str, half: bool):
    """Runner: inputs to ``device`` (floats to half), outputs back to CPU (floats to float32)."""

    def run(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            outputs = script(*(_cast(inputs[n], device, half) for n in signature.input_names))
        return {
            n: o.float().cpu() if o.is_floating_point() else o.cpu() for n, o in zip(signature.output_names, outputs)
        }

    return run


def check(results: dict, name: str, reference: ServingModel, runner, precision: str, cases) -> None:
    """Verify ``runner`` against CPU eager ``reference``; record figures or the failure under ``name``."""
    started = time.perf_counter()
    try:
        result = verify_artifact(
            reference, runner, precision, cases, failures_dir=Path(tempfile.gettempdir()), tag=name
        )
    except (VerificationError, RuntimeError) as exc:
        results["checks"][name] = {"status": "failed", "precision": precision, "error": str(exc)[:2000]}
        log.error("%s: FAILED: %s", name, exc)
        return
    results["checks"][name] = {
        "status": "passed",
        "precision": precision,
        "max_abs_diff": result.max_abs_diff,
        "near_ties": result.near_ties,
        "rows": result.rows,
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info(
        "%s: passed (%s, max abs diff %s)", name, precision, {k: f"{v:.2g}" for k, v in result.max_abs_diff.items()}
    )


def skip(results: dict, name: str, reason: str) -> None:
    results["checks"][name] = {"status": "skipped", "reason": reason}
    log.info("%s: skipped (%s)", name, reason)


def throughput(run, inputs: dict, batch: int, device: str, iters: int) -> dict:
    """Users/s and ms per batch of ``run`` on ``inputs`` after 3 warm-up calls (CUDA-synchronised)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        run(inputs)
    sync()
    started = time.perf_counter()
    for _ in range(iters):
        run(inputs)
    sync()
    seconds = (time.perf_counter() - started) / iters
    return {"batch": batch, "ms_per_batch": round(seconds * 1e3, 3), "users_per_s": round(batch / seconds, 1)}


def device_runner(script, signature, device: str, half: bool):
    """Runner that leaves outputs on the device (for timing)."""
    names = signature.input_names

    def run(inputs):
        with torch.no_grad():
            return script(*(inputs[n] for n in names))

    def prepare(raw):
        return {n: _cast(raw[n], device, half) for n in names}

    return run, prepare


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, help="duet-train output (accepted checkpoints); default: random weights")
    p.add_argument("--preset", choices=("demo", "default"), default="demo", help="model size with random weights")
    p.add_argument("--max-len", type=int, nargs=2, default=(32, 8), metavar=("CLICK", "CONV"), help="stream lengths")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--iters", type=int, default=50, help="timed iterations per throughput point")
    p.add_argument("--out", type=Path, help="write the JSON result here")
    p.add_argument(
        "--device",
        help="run the device parts here (default: cuda where available; 'cpu' exercises "
        "them on the CPU, fp16 included, to test this script)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[gpu_check] %(message)s")
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    results: dict = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "checks": {},
        "throughput": {},
    }
    models = (
        checkpoint_models(args.runs, args.max_batch)
        if args.runs
        else random_models(args.preset, tuple(args.max_len), args.max_batch)
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for name, fused in models.items():
            check_model(results, name, fused, device, directory, args.iters)
        if device and "ranker" in models:
            results["throughput"]["ranker"] = ranker_throughput(models["ranker"], directory, device, args.iters)
        elif device is None:
            results["throughput"]["skipped"] = NO_CUDA
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 1 if any(c["status"] == "failed" for c in results["checks"].values()) else 0


def check_model(results: dict, name: str, fused: ServingModel, device: str | None, directory: Path, iters: int) -> None:
    """Every check of one fused model (and, for an encoder, its prep + engine split) on CPU and ``device``."""
    cases = profile_cases(fused.signature)

    def on(serving, dev, half):
        return script_runner(traced(serving, dev, half, directory), serving.signature, dev, half)

    check(results, f"{name}/torchscript-cpu-fp32", fused, on(fused, "cpu", False), "fp32", cases)
    if name == "ranker":
        if device is None:
            skip(results, "ranker/torchscript-cuda", NO_CUDA)
        for precision in ("fp32", "fp16") if device else ():
            check(
                results,
                f"ranker/torchscript-{device}-{precision}",
                fused,
                on(fused, device, precision == "fp16"),
                precision,
                cases,
            )
        return
    prep, engine = split_encoder(fused)
    check(
        results,
        f"{prep.name}/torchscript-cpu-fp32",
        prep,
        on(prep, "cpu", False),
        "fp32",
        profile_cases(prep.signature),
    )
    if device is None:
        for what in (
            "torchscript-cuda-fp32",
            "cpu-traced-on-cuda",
            "prep-torchscript-cuda",
            "engine-cuda-fp32",
            "engine-cuda-fp16",
            "tensorrt",
        ):
            skip(results, f"{name}/{what}", NO_CUDA)
        return
    check(results, f"{name}/torchscript-{device}-fp32", fused, on(fused, device, False), "fp32", cases)
    cpu_traced = torch.jit.load(str(directory / _filename(fused, "cpu", False)), map_location=device)
    check(
        results,
        f"{name}/cpu-traced-on-{device}",
        fused,
        script_runner(cpu_traced, fused.signature, device, False),
        "fp32",
        cases,
    )
    prep_run = on(prep, device, False)
    check(results, f"{prep.name}/torchscript-{device}", prep, prep_run, "fp32", profile_cases(prep.signature))
    engines = {}
    for precision in ("fp32", "fp16"):
        half = precision == "fp16"
        engines[precision] = traced(engine, device, half, directory)
        engine_run = script_runner(engines[precision], engine.signature, device, half)
        check(
            results,
            f"{name}/engine-{device}-{precision}",
            fused,
            compose(prep_run, engine_run, engine.signature),
            precision,
            cases,
        )
    tensorrt_checks(results, name, fused, engine, prep_run, directory, cases)
    results["throughput"][name] = encoder_throughput(fused, prep, engine, engines, directory, device, iters)


def tensorrt_checks(results, name, fused, engine, prep_run, directory, cases) -> None:
    """Build and verify the engine's TensorRT plan (fp32, fp16) wherever tensorrt and onnx import."""
    from duet_sdk.export import _compat

    reason = _compat.tensorrt_unavailable_reason()
    if reason is None and not _compat.HAS_ONNX:
        reason = "the ONNX exporter (onnx, onnxscript) is not installed; TensorRT builds from ONNX"
    if reason is not None:
        skip(results, f"{name}/tensorrt", reason)
        return
    from duet_sdk.export.onnx2trt import build_engine, tensorrt_runner
    from duet_sdk.export.prep import engine_inputs
    from duet_sdk.export.torch2onnx import export_onnx
    from duet_sdk.export.verify import example_inputs

    onnx_path = export_onnx(engine, engine_inputs(engine, example_inputs(fused.signature)), directory / f"{name}.onnx")
    for precision in ("fp32", "fp16"):
        try:
            plan = build_engine(onnx_path, engine.signature, directory / f"{name}-{precision}.plan", precision)
        except Exception as exc:  # a failed build is a finding, reported with the others
            results["checks"][f"{name}/tensorrt-{precision}"] = {"status": "failed", "error": str(exc)[:2000]}
            continue
        check(
            results,
            f"{name}/tensorrt-{precision}",
            fused,
            compose(prep_run, tensorrt_runner(plan, engine.signature), engine.signature),
            precision,
            cases,
        )


def encoder_throughput(fused, prep, engine, engines, directory, device, iters) -> list[dict]:
    """Users/s of fused fp32 and prep + engine fp32/fp16 on the device at each batch size."""
    fused_script = torch.jit.load(str(directory / _filename(fused, device, False)), map_location=device)
    prep_script = torch.jit.load(str(directory / _filename(prep, device, False)), map_location=device)
    rows = []
    for batch in BATCHES:
        raw = sample_inputs(fused.signature, Case(batch, "max", "mixed"), seed=batch)
        run, prepare = device_runner(fused_script, fused.signature, device, False)
        row = {"fused_fp32": throughput(run, prepare(raw), batch, device, iters)}
        prep_run, prep_inputs = device_runner(prep_script, prep.signature, device, False)
        for precision, script in engines.items():
            engine_run, _ = device_runner(script, engine.signature, device, precision == "fp16")
            half = precision == "fp16"

            def chain(inputs, prep_run=prep_run, engine_run=engine_run, half=half):
                prepared = dict(zip(prep.signature.output_names, prep_run(inputs)))
                prepared["static_dense"] = inputs["static_dense_float"]
                return engine_run(
                    {
                        n: prepared[n].half() if half and prepared[n].is_floating_point() else prepared[n]
                        for n in engine.signature.input_names
                    }
                )

            inputs = prep_inputs(raw) | {"static_dense_float": raw["static_dense"].to(device)}
            row[f"prep+engine_{precision}"] = throughput(chain, inputs, batch, device, iters)
        rows.append(row)
    return rows


def ranker_throughput(ranker, directory, device, iters) -> list[dict]:
    """Users/s of the ranker (opt candidates per user) in fp32 and fp16 at each batch size."""
    rows = []
    for batch in BATCHES:
        raw = sample_inputs(ranker.signature, Case(batch, "opt", "mixed"), seed=batch)
        row = {}
        for precision in ("fp32", "fp16"):
            script = torch.jit.load(
                str(directory / _filename(ranker, device, precision == "fp16")), map_location=device
            )
            run, prepare = device_runner(script, ranker.signature, device, precision == "fp16")
            row[precision] = throughput(run, prepare(raw), batch, device, iters)
        rows.append(row)
    return rows


if __name__ == "__main__":
    sys.exit(main())
