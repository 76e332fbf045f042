"""The export run: select checkpoints, extract serving modules, convert, verify, publish, manifest.

Each artifact is written into a temporary directory inside ``out`` and renamed to
``out/artifacts/<model>/<format>/`` only after it passed verification, so no half-written or
unverified artifact is ever visible.

The gpu target splits each encoder into ``<name>_prep`` (ONNX only) and the engine ``<name>_encoder``
(``duet_sdk.export.prep``); an engine artifact is verified on raw inputs through the exported prep
ONNX against the fused eager encoder. ONNX engines are also verified under ONNX Runtime's TensorRT
accelerator where it is available (``fallback`` in the manifest), TensorRT plans record the
toolchain they were built with.

``precision = "int8"`` (cpu target, ONNX only) exports fp32 ONNX aside, quantizes its weight MatMuls
into the artifact (``duet_sdk.export.onnx2int8``) and verifies it against eager PyTorch at the int8
tolerances of ``duet_sdk.export.signature``; the manifest records how it was quantized.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from duet_sdk._extras import missing_extra

try:
    import torch
except ModuleNotFoundError as exc:  # the [train] extra is not installed
    raise missing_extra(exc, __name__) from exc

from duet_sdk.errors import CheckpointError, ConfigError
from duet_sdk.export import _compat
from duet_sdk.export.extract import ServingModel, extract_encoder, extract_ranker
from duet_sdk.export.manifest import ArtifactRecord, manifest_target, read_manifest, sha256_file, write_manifest
from duet_sdk.export.prep import compose, engine_inputs, split_for_target
from duet_sdk.export.sources import Selection, Source, select_all
from duet_sdk.export.spec import ExportSpec
from duet_sdk.export.toolchain import current_toolchain
from duet_sdk.export.verify import Case, Runner, example_inputs, sample_inputs, verify_artifact

log = logging.getLogger(__name__)
FILENAMES = {"torchscript": "model.pt", "onnx": "model.onnx", "tensorrt": "model.plan"}
Progress = Callable[[str], None]


def log_progress(message: str) -> None:
    """Progress as INFO log records (shown by ``duet export`` unless -q / --no-progress)."""
    log.info("%s", message)


def quiet_progress(message: str) -> None:
    pass


def build_serving(selection: Selection, spec: ExportSpec) -> dict[str, ServingModel]:
    """Extract every selected model (no conversion)."""
    from duet_sdk.models.loading import load_ranker, load_upstream
    from duet_sdk.side import load_side_codec

    shapes = spec.shapes
    models: dict[str, ServingModel] = {}
    for model, sources in selection.sources.items():
        if model == "ranker":
            ranker = load_ranker(sources[0].checkpoint)
            for codec_source in sources[1:]:
                name = codec_source.model.removeprefix("side-")
                books = load_side_codec(codec_source.checkpoint).codebooks
                if name in ranker.decoders and not torch.equal(ranker.decoders[name].codebooks, books):
                    raise CheckpointError(f"{sources[0].checkpoint.path}: decoder codebooks of {name!r} differ "
                                          f"from codec {codec_source.checkpoint.path}")
            models[model] = extract_ranker(
                ranker, shapes.max_batch, shapes.opt_batch, shapes.max_candidates, shapes.opt_candidates
            )
        else:
            encoder, codec = sources
            name = model.removesuffix("_encoder")
            net = load_upstream(encoder.checkpoint)
            models[model] = extract_encoder(
                net, load_side_codec(codec.checkpoint), name, shapes.max_batch, shapes.opt_batch
            )
    return models


def _publish(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp`` with renames (the old one, if any, is moved away first)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=final.parent))
        os.rename(final, old / final.name)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _runner(fmt: str, path: Path, serving: ServingModel):
    if fmt == "torchscript":
        from duet_sdk.export.torch2torchscript import torchscript_runner

        return torchscript_runner(path, serving.signature)
    if fmt == "onnx":
        from duet_sdk.export.torch2onnx import onnxruntime_runner

        return onnxruntime_runner(path)
    from duet_sdk.export.onnx2trt import tensorrt_runner

    return tensorrt_runner(path, serving.signature)


def _inputs(serving: ServingModel, case: Case | None = None, seed: int = 99) -> dict:
    """Inputs of ``serving`` (an engine's come from raw inputs through its eager prep); no case: the
    export example."""
    raw_signature = serving.reference.signature if serving.role == "engine" else serving.signature
    raw = example_inputs(raw_signature) if case is None else sample_inputs(raw_signature, case, seed=seed)
    return engine_inputs(serving, raw) if serving.role == "engine" else raw


def convert(serving: ServingModel, fmt: str, directory: Path, spec: ExportSpec, onnx_path: Path | None = None) -> Path:
    """Write the ``fmt`` artifact of ``serving`` into ``directory``; returns the model file."""
    path = directory / FILENAMES[fmt]
    example = _inputs(serving)
    if fmt == "torchscript":
        from duet_sdk.export.torch2torchscript import check_standalone, export_torchscript

        export_torchscript(serving, example, path)
        check_standalone(path, serving, _inputs(serving, Case(2, "short", "mixed")))
    elif fmt == "onnx" and spec.precision == "int8":  # fp32 export aside, quantized into place, fp32 removed
        from duet_sdk.export.onnx2int8 import quantize_int8
        from duet_sdk.export.torch2onnx import export_onnx
        fp32 = directory / ".fp32"
        fp32.mkdir()
        quantize_int8(export_onnx(serving, example, fp32 / FILENAMES["onnx"], spec.opset), path)
        shutil.rmtree(fp32)
    elif fmt == "onnx":
        from duet_sdk.export.torch2onnx import export_onnx

        export_onnx(serving, example, path, spec.opset)
    else:
        from duet_sdk.export.onnx2trt import build_engine

        if onnx_path is None:
            from duet_sdk.export.torch2onnx import export_onnx

            onnx_path = export_onnx(serving, example, directory / ".model.onnx", spec.opset)
        build_engine(onnx_path, serving.signature, path, spec.precision, spec.workspace_mib << 20)
        for extra in directory.glob(".model.onnx*"):
            extra.unlink()
    return path


def _quantization(path: Path) -> dict:
    """How an int8 artifact was quantized, and what its graph holds (Gather tables stay fp32)."""
    from duet_sdk.export.onnx2int8 import SETTINGS, graph_summary

    return SETTINGS | graph_summary(path)


def _prep_runner(serving: ServingModel, out: Path) -> Runner:
    """ONNX Runtime on the prep model already exported into ``out`` (prep models come first)."""
    from duet_sdk.export.torch2onnx import onnxruntime_runner

    path = out / "artifacts" / serving.prep.name / "onnx" / FILENAMES["onnx"]
    if not path.is_file():
        raise ConfigError(f"{serving.name} prep model", f"the ONNX artifact {path} exported before the engine", None)
    return onnxruntime_runner(path)


def _verify(serving: ServingModel, runner: Runner, out: Path, precision: str, cases, tag: str):
    """Verify a fused or prep artifact against its eager module; an engine on raw inputs through the
    exported prep ONNX against the fused eager encoder."""
    if serving.role == "engine":
        runner, serving = compose(_prep_runner(serving, out), runner, serving.signature), serving.reference
    return verify_artifact(serving, runner, precision, cases, failures_dir=out / "failures", tag=tag)


def verify_fallback(serving: ServingModel, path: Path, out: Path, spec: ExportSpec, cases) -> dict:
    """An ONNX artifact (engine or ranker) under ONNX Runtime's TensorRT accelerator at its precision,
    or why it is unverified."""
    from duet_sdk.export import ort_tensorrt

    precision = ort_tensorrt.accelerator_precision(spec.precision)
    record = {"runtime": "onnxruntime+tensorrt", "precision": precision}
    reason = ort_tensorrt.unavailable_reason()
    if reason is not None:
        return record | {"verified": False, "reason": reason}
    result = _verify(
        serving,
        ort_tensorrt.onnxruntime_tensorrt_runner(path, precision),
        out,
        precision,
        cases,
        f"{serving.name}-onnx-tensorrt",
    )
    return record | {
        "verified": True,
        "max_abs_diff": result.max_abs_diff,
        "near_ties": result.near_ties,
        "verified_rows": result.rows,
    }


def export_model_format(
    serving: ServingModel,
    fmt: str,
    out: Path,
    spec: ExportSpec,
    sources: list[Source],
    progress: Progress = quiet_progress,
    cases: tuple[Case, ...] | None = None,
    onnx_path: Path | None = None,
) -> ArtifactRecord:
    """Convert, verify and publish one artifact; returns its manifest record. TensorRT is built from
    ``onnx_path`` (the ONNX artifact exported in the same run) or from a fresh ONNX export."""
    out = Path(out)
    final = out / "artifacts" / serving.name / fmt
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{serving.name}-{fmt}-", dir=out))
    fallback = None
    try:
        started = time.perf_counter()
        path = convert(serving, fmt, tmp, spec, onnx_path)
        converted = time.perf_counter()
        precision = spec.precision if fmt == "tensorrt" or (fmt == "onnx" and spec.precision == "int8") else "fp32"
        result = _verify(serving, _runner(fmt, path, serving), out, precision, cases, f"{serving.name}-{fmt}")
        if spec.target == "gpu" and fmt == "onnx" and serving.role != "prep":  # served with the TensorRT accelerator
            fallback = verify_fallback(serving, path, out, spec, cases)
        verified = time.perf_counter()
        files = sorted(p.name for p in tmp.iterdir())
        digests = {name: sha256_file(tmp / name) for name in files}
        size = sum(p.stat().st_size for p in tmp.iterdir())
        quantization = _quantization(path) if precision == "int8" else None
        _publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    record = ArtifactRecord(
        model=serving.name,
        format=fmt,
        path=str((final / FILENAMES[fmt]).relative_to(out)),
        signature=serving.signature,
        precision=precision,
        max_abs_diff=result.max_abs_diff,
        max_rel_diff=result.max_rel_diff,
        near_ties=result.near_ties,
        bytes=size,
        files=files,
        sha256=digests,
        verified_rows=result.rows,
        source_checkpoints=[s.to_dict() for s in sources],
        warnings=[s.warning for s in sources if s.warning],
        timings_s={"convert": round(converted - started, 2), "verify": round(verified - converted, 2)},
        role=serving.role,
        prep=serving.prep.name if serving.prep else None,
        raw_inputs=serving.reference.signature.to_dict()["inputs"] if serving.reference else None,
        toolchain=current_toolchain().to_dict() if fmt == "tensorrt" else None, fallback=fallback,
        quantization=quantization,
    )
    worst_abs, _ = result.overall()
    ties = sum(result.near_ties.values())
    progress(
        f"{serving.name} {fmt}: converted in {converted - started:.1f}s, verified {result.rows} rows in "
        f"{verified - converted:.1f}s, max abs diff {worst_abs:.2g}, near ties {ties}, {size / 2**20:.2f} MiB"
    )
    return record


def export_all(
    spec: ExportSpec,
    out: Path,
    force: bool = False,
    explicit: dict[str, Path] | None = None,
    progress: Progress = quiet_progress,
    cases: tuple[Case, ...] | None = None,
) -> dict:
    """Export every model of ``spec`` in every format into ``out``; returns the manifest written."""
    if "tensorrt" in spec.formats:
        _compat.require_tensorrt()  # fail before any work, naming the extra
    if "onnx" in spec.formats or "tensorrt" in spec.formats or spec.target == "gpu":  # gpu: prep models are ONNX
        _compat.require_onnx()
    out = Path(out)
    previous = manifest_target(read_manifest(out))
    if previous not in (None, spec.target):
        raise ConfigError("out", f"a new directory or one of a {spec.target} export", f"{out} (a {previous} export)")
    out.mkdir(parents=True, exist_ok=True)
    selection = select_all(spec.checkpoints, spec.encoders, spec.ranker, force, explicit)
    for warning in selection.warnings:
        progress(f"WARNING {warning}")
    models = split_for_target(build_serving(selection, spec), spec.target)
    records = []
    order = [f for f in ("onnx", "torchscript", "tensorrt") if f in spec.formats]  # TensorRT reuses the ONNX
    formats = {name: ["onnx"] if serving.role == "prep" else order for name, serving in models.items()}
    total, done = sum(len(f) for f in formats.values()), 0
    for name, serving in models.items():
        progress(f"{name}: extracted; {serving.report.summary()}")
        for fmt in formats[name]:
            done += 1
            progress(f"[{done}/{total}] {name} {fmt} ...")
            onnx_path = next((out / r.path for r in records if r.model == name and r.format == "onnx"), None)
            sources = selection.sources[name.removesuffix("_prep") + "_encoder" if serving.role == "prep" else name]
            records.append(export_model_format(serving, fmt, out, spec, sources, progress, cases, onnx_path))
    extraction = {name: serving.report.to_dict() for name, serving in models.items()}
    manifest = write_manifest(out, records, extraction, selection.warnings, spec.target, current_toolchain().to_dict())
    progress(f"wrote {out / 'manifest.json'} ({len(records)} artifacts)")
    return manifest
