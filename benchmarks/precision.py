"""int8 against fp32 on the cpu target, through the served path, and what the model's own FLOP levers buy.

    PYTHONPATH=. .venv/bin/python -m benchmarks.precision --out runs/precision [--runs RUNS] [--quick] [--threads 1]

1. Checkpoints: ``--runs`` (a duet-train output with accepted click and conv encoders and a duet ranker,
   trained on the default synthetic data, seed 0); without it they are trained here first (``duet-train
   click``, ``conv``, ``ranker --variants duet`` into ``<out>/train``, about 10 minutes on 2 cores).
2. ``duet-export`` of both encoders and the ranker as ONNX at ``precision = "fp32"`` and ``"int8"``,
   each published into its own repository and served by its own real tritonserver, both running.
3. NE: every validation row of the ranker (the user's history strictly before the row's request time,
   the row's candidate) scored by ``duet_fresh`` on each server in requests of 64 users; NE per task
   against the labels; relative NE cost = (NE_int8 - NE_fp32) / NE_fp32.
4. Served throughput: ``duet_fresh`` at B users per request (16 candidates each), concurrency 1, windows
   alternating between the two servers (so a busy machine slows both alike); users/s and int8/fp32.
5. In process: ONNX Runtime on the same trained encoder artifacts at B users of full-length history.
6. The default preset at production lengths (256 click, 64 conv events; random weights, speed only) and
   its FLOP levers on ClickAUN (pyramidal trimming, MLA latent size): counted FLOPs per user and ONNX
   Runtime users/s in fp32 and int8 (``benchmarks.encoders.measure_encoder``), then an ONNX Runtime
   profile of the int8 ClickAUN at B = 64: the share of time per operator type.

Writes ``precision.json`` and ``precision.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from benchmarks.encoders import PRODUCTION, build, full_inputs, measure_encoder, time_call
from duet_sdk.export.onnx2int8 import quantize_int8
from duet_sdk.export.signature import ModelSignature, TensorSpec
from duet_sdk.export.torch2onnx import export_onnx, onnxruntime_runner
from duet_sdk.export.verify import Case, example_inputs, sample_inputs
from duet_sdk.metrics import normalized_entropy

log = logging.getLogger("benchmarks.precision")
BATCHES = (1, 8, 64)
LEVERS = {
    "baseline (MLA latent 64, no trimming)": {},
    "pyramid 256/128/64/32": {"pyramid": (256, 128, 64, 32)},
    "MLA latent 32": {"latent_dim": 32},
    "MLA latent 16": {"latent_dim": 16},
}


def train(out: Path, threads: int) -> Path:
    """Train the demo checkpoints into ``out`` with duet-train (1 thread per step, as the demo)."""
    for argv in (["click"], ["conv"], ["ranker", "--variants", "duet"]):
        log.info("duet-train %s", " ".join(argv))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "duet_sdk.training.cli",
                *argv,
                "--out",
                str(out),
                "--threads",
                str(threads),
                "--no-progress",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


def export_and_publish(runs: Path, work: Path, precision: str) -> tuple[Path, Path, dict]:
    """(export dir, repository, manifest) of an ONNX export of ``runs`` at ``precision``."""
    from duet_sdk.export.pipeline import export_all
    from duet_sdk.export.spec import ExportSpec
    from duet_sdk.serving.repository import publish

    spec = ExportSpec(checkpoints=runs, formats=("onnx",), precision=precision)
    export, repo = work / f"export-{precision}", work / f"repository-{precision}"
    manifest = export_all(spec, export)
    publish(export, repo, "cpu")
    return export, repo, manifest


def validation_requests(dataset) -> tuple[list, np.ndarray, np.ndarray, tuple[str, ...]]:
    """One FreshRequest per ranker validation row, with its labels (E, K) and label mask (E, K)."""
    from duet_sdk.interface import Candidates, FreshRequest
    from duet_sdk.online.replay import user_history

    rows = dataset.ranker_val
    requests = [
        FreshRequest(
            user_history(dataset.table, int(u), int(t)),
            Candidates([[int(x) for x in rows.item_sparse[i]]], [[float(x) for x in rows.item_dense[i]]]),
        )
        for i, (u, t) in enumerate(zip(rows.user_index, rows.request_time, strict=True))
    ]
    return requests, rows.labels, rows.label_mask, rows.tasks


def served_ne(client, requests, labels, mask, tasks) -> dict[str, float]:
    """NE per task of ``duet_fresh`` scores of every request (64 users per call)."""
    scores = []
    for start in range(0, len(requests), 64):
        scores += [r.scores.scores[0] for r in client.score_fresh(requests[start : start + 64])]
    scores = np.asarray(scores)  # (E, K) in the interface's task order
    order = [client.interface.tasks.index(t) for t in tasks]
    return {t: normalized_entropy(labels[:, k], scores[:, order[k]], mask[:, k]) for k, t in enumerate(tasks)}


def served_throughput(clients: dict, requests, batches, min_seconds: float, repeats: int = 5) -> list[dict]:
    """users/s of ``duet_fresh`` per client at B users per call, windows alternating between clients."""
    rows = []
    for batch in batches:
        calls = requests[:batch]
        times: dict[str, list[float]] = {name: [] for name in clients}
        for client in clients.values():
            client.score_fresh(calls)  # warm-up
        for _ in range(repeats):
            for name, client in clients.items():
                done, start = 0, time.perf_counter()
                while done == 0 or time.perf_counter() - start < min_seconds / repeats:
                    client.score_fresh(calls)
                    done += 1
                times[name].append((time.perf_counter() - start) / done)
        for name, values in times.items():
            seconds = statistics.median(values)
            rows.append(
                {"precision": name, "batch": batch, "ms_per_call": seconds * 1e3, "users_per_s": batch / seconds}
            )
    return rows


def inprocess_throughput(manifests: dict, exports: dict, batches, threads: int, min_seconds: float) -> list[dict]:
    """users/s of ONNX Runtime on each trained encoder artifact at B users of full-length history."""
    rows = []
    for precision, manifest in manifests.items():
        for record in manifest["artifacts"]:
            if not record["model"].endswith("_encoder"):
                continue
            inputs = tuple(
                TensorSpec(i["name"], i["dtype"], tuple(i["shape"]), (i.get("range") or [0, None])[1])
                for i in record["inputs"]
            )
            dims = {k: (v["min"], v["opt"], v["max"]) for k, v in record["dims"].items()}
            signature = ModelSignature(record["model"], inputs, (), dims)
            run = onnxruntime_runner(exports[precision] / record["path"], threads)
            for batch in batches:
                inputs = sample_inputs(signature, Case(batch, "max", "full"), seed=batch)
                seconds = time_call(lambda run=run, inputs=inputs: run(inputs), min_seconds)
                rows.append(
                    {"precision": precision, "model": record["model"], "batch": batch, "users_per_s": batch / seconds}
                )
    return rows


def op_profile(onnx_path: Path, inputs: dict, threads: int, calls: int = 5) -> dict[str, float]:
    """Share of ONNX Runtime node time per operator type over ``calls`` runs (its built-in profiler)."""
    times = op_times(onnx_path, inputs, threads, calls)
    whole = sum(times.values()) or 1.0
    return {op: round(100 * t / whole, 1) for op, t in times.items()}


def op_times(onnx_path: Path, inputs: dict, threads: int, calls: int = 5) -> dict[str, float]:
    """ONNX Runtime's node time per operator type in microseconds per call, largest first (its built-in
    profiler over ``calls`` runs; ``inputs``: torch tensors by input name)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.enable_profiling = threads, True
    options.profile_file_prefix = str(onnx_path.parent / "ort-profile")
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
    for _ in range(calls):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + event["dur"] / calls
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def production(batches, threads: int, min_seconds: float, workdir: Path, quick: bool) -> tuple[list[dict], dict]:
    """fp32 vs int8 ONNX Runtime rows of the default preset at production lengths and its FLOP levers,
    and the operator profile of the int8 ClickAUN at the largest batch."""
    from benchmarks.bench import _attention  # the MLA config the full bench uses for the latent lever

    rows = []
    plans = [("conv", {})] + [("click", v) for v in (list(LEVERS.values())[:2] if quick else LEVERS.values())]
    for kind, lever in plans:
        overrides = {"attention": _attention(lever["latent_dim"])} if "latent_dim" in lever else dict(lever)
        label = next(k for k, v in LEVERS.items() if v == lever)
        log.info("production %s: %s", kind, label)
        for row in measure_encoder(
            kind, PRODUCTION, batches, threads, min_seconds, 1.0, workdir, runtimes=("ort", "ort_int8"), **overrides
        ):
            rows.append(
                {k: v for k, v in row.items() if k not in ("pct_peak", "attention", "pyramid")} | {"lever": label}
            )
    serving = build("click", PRODUCTION)
    directory = Path(tempfile.mkdtemp(prefix="profile-", dir=workdir))
    int8 = quantize_int8(
        export_onnx(serving, example_inputs(serving.signature), directory / "model.onnx"), directory / "int8.onnx"
    )
    profile = op_profile(int8, full_inputs(serving, batches[-1]), threads)
    return rows, profile


def ratios(rows: list[dict], key: tuple[str, ...], by: str, num: str, den: str) -> list[dict]:
    """int8/fp32 users/s per ``key`` group."""
    groups: dict[tuple, dict[str, float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in key), {})[row[by]] = row["users_per_s"]
    both = {k: v for k, v in groups.items() if num in v and den in v}
    return [dict(zip(key, k, strict=True)) | {"ratio": v[num] / v[den]} for k, v in both.items()]


def to_markdown(results: dict) -> str:
    lines = [
        "# int8 vs fp32 (cpu target) and FLOP levers",
        "",
        f"machine: {results['machine']}; threads {results['threads']}",
        "",
        "## NE on validation data through duet_fresh",
        "",
        "| task | NE fp32 | NE int8 | relative NE cost |",
        "| --- | ---: | ---: | ---: |",
    ]
    for task, ne in results["ne"]["fp32"].items():
        int8 = results["ne"]["int8"][task]
        lines.append(f"| {task} | {ne:.5f} | {int8:.5f} | {100 * (int8 - ne) / ne:+.3f} % |")
    lines += [
        "",
        f"rows: {results['ne']['rows']}",
        "",
        "## Served duet_fresh (16 candidates per user, concurrency 1)",
        "",
        "| B | fp32 users/s | int8 users/s | int8/fp32 |",
        "| ---: | ---: | ---: | ---: |",
    ]
    served = {(r["precision"], r["batch"]): r["users_per_s"] for r in results["served"]}
    for b in results["batches"]:
        fp32, int8 = served[("fp32", b)], served[("int8", b)]
        lines.append(f"| {b} | {fp32:.1f} | {int8:.1f} | {int8 / fp32:.2f} |")
    lines += [
        "",
        "## In-process ONNX Runtime on the trained (demo) encoder artifacts",
        "",
        "| model | B | int8/fp32 |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {r['model']} | {r['batch']} | {r['ratio']:.2f} |" for r in results["inprocess_ratio"]]
    lines += [
        "",
        "## Default preset, production lengths: FLOP levers, fp32 and int8 ONNX Runtime",
        "",
        "| encoder | lever | GFLOP/user | B | fp32 users/s | int8 users/s | int8/fp32 | int8 max abs diff |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    prod = {}
    for r in results["production"]:
        prod.setdefault((r["encoder"], r["lever"], r["batch"]), {})[r["runtime"]] = r
    for (enc, lever, b), v in prod.items():
        f, q = v["ort"], v["ort_int8"]
        lines.append(
            f"| {enc} | {lever} | {f['flops_per_user'] / 1e9:.3f} | {b} | {f['users_per_s']:.1f} | "
            f"{q['users_per_s']:.1f} | {q['users_per_s'] / f['users_per_s']:.2f} | {q['max_abs_embedding']:.2g} |"
        )
    lines += [
        "",
        f"## ONNX Runtime profile, int8 ClickAUN (default preset) at B = {results['batches'][-1]}: % of node time",
        "",
        "| op | % |",
        "| --- | ---: |",
    ] + [f"| {op} | {pct} |" for op, pct in list(results["int8_profile"].items())[:10]]
    return "\n".join(lines) + "\n"


def run(out: Path, runs: Path | None, quick: bool, threads: int) -> dict:
    from benchmarks import machine
    from duet_sdk.client import DuetClient
    from duet_sdk.data.synthetic import SyntheticConfig
    from duet_sdk.interface import FreshRequest
    from duet_sdk.online.replay import ranker_requests
    from duet_sdk.serving.releases import read_index, startup_models
    from duet_sdk.serving.server import TritonServer
    from duet_sdk.training.datasets import synthetic_data

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="precision-", dir=out))
    runs = runs or train(out / "train", threads)
    min_seconds = 1.0 if quick else 3.0
    exports, manifests, repos = {}, {}, {}
    for precision in ("fp32", "int8"):
        log.info("export + publish %s", precision)
        exports[precision], repos[precision], manifests[precision] = export_and_publish(runs, work, precision)
    dataset = synthetic_data(SyntheticConfig(seed=0)).dataset  # duet-train's default data: the same validation rows
    requests, labels, mask, tasks = validation_requests(dataset)
    ne, served = {}, []
    with ExitStack() as stack:
        clients = {}
        for precision, repo in repos.items():
            server = stack.enter_context(TritonServer(repo, models=startup_models(read_index(repo))))
            clients[precision] = stack.enter_context(DuetClient(server.endpoints.grpc_url, timeout_s=120))
            clients[precision].connect()
        for precision, client in clients.items():
            log.info("NE through duet_fresh (%s): %d rows", precision, len(requests))
            ne[precision] = served_ne(client, requests, labels, mask, tasks)
        speed = [FreshRequest(h, c) for h, c in ranker_requests(dataset, max(BATCHES), 16)]
        log.info("served throughput")
        served = served_throughput(clients, speed, BATCHES, min_seconds)
    partial = {"ne": {**ne, "rows": len(requests)}, "served": served}
    # kept should a later step fail
    (out / "precision.partial.json").write_text(json.dumps(partial, indent=2), encoding="utf-8")
    log.info("in-process ONNX Runtime on the trained artifacts")
    inprocess = inprocess_throughput(manifests, exports, BATCHES, threads, min_seconds)
    prod, profile = production(BATCHES, threads, min_seconds, work, quick)
    results = {
        "machine": machine.describe(),
        "threads": threads,
        "quick": quick,
        "batches": list(BATCHES),
        "runs": str(runs),
        "ne": {**ne, "rows": len(requests)},
        "relative_ne_cost_pct": {t: 100 * (ne["int8"][t] - ne["fp32"][t]) / ne["fp32"][t] for t in tasks},
        "verification": {
            p: {a["model"]: {"max_abs_diff": a["max_abs_diff"], "tolerance": a["tolerance"]} for a in m["artifacts"]}
            for p, m in manifests.items()
        },
        "served": served,
        "served_ratio": ratios(served, ("batch",), "precision", "int8", "fp32"),
        "inprocess": inprocess,
        "inprocess_ratio": ratios(inprocess, ("model", "batch"), "precision", "int8", "fp32"),
        "production": prod,
        "int8_profile": profile,
    }
    (out / "precision.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    (out / "precision.md").write_text(to_markdown(results), encoding="utf-8")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("runs/precision"), help="where precision.json and precision.md go")
    p.add_argument(
        "--runs",
        type=Path,
        help="a duet-train output (click, conv, duet ranker) on the default synthetic data; "
        "default: train one under OUT/train",
    )
    p.add_argument("--quick", action="store_true", help="shorter windows, two FLOP-lever settings")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for ONNX Runtime and training")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)  # the exporters log every graph rewrite at INFO
    results = run(args.out, args.runs, args.quick, args.threads)
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
