"""Two versions of the cpu runner (``runner/model.py``) side by side on one tritonserver, same artifact.

    git show 7e4cc2c:duet_sdk/serving/runner/model.py > /tmp/runner_base.py
    .venv/bin/python -m benchmarks.runner_ab --baseline /tmp/runner_base.py --out runs/runner_ab --calls 2000

The demo-shape release (``deployment.py``) is published; its ranker is served twice from one scratch
repository: ``ranker_v1`` with this checkout's runner and ``rankerbase_v1``, a copy whose ``model.py``
is the baseline. Sequential gRPC calls alternate between the two call by call (the order flipped every
pair), so drift on a shared machine hits both alike; per side, Triton's statistics (request time,
compute_infer means) and client latency, and their ratios, all from this one run.
Both answer the same requests; their scores must be equal (checked).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.deployment import build_export
from benchmarks.serving_profile import server_stats, stats_delta
from duet_sdk import interface as api
from duet_sdk.serving.config import read_config, write_config
from duet_sdk.serving.repository import publish
from duet_sdk.serving.server import TritonServer
from duet_sdk.tune.requests import infer_inputs, model_requests

log = logging.getLogger("benchmarks.runner_ab")


def scratch(repo: Path, version: int, baseline: Path, into: Path) -> tuple[str, str]:
    """``into`` holding the release's ranker and a baseline copy of it; returns (current, baseline) names."""
    current, base = api.release_model("ranker", version), f"rankerbase_v{version}"
    shutil.copytree(repo / current, into / current)
    shutil.copytree(repo / current, into / base)
    shutil.copyfile(baseline, into / base / str(version) / "model.py")
    config = read_config(into / base / "config.pbtxt")
    config.name = base
    write_config(into / base, config)
    return current, base


def compare(url: str, names: tuple[str, str], inputs: list, calls: int) -> dict:
    """``calls`` sequential calls per model, alternating call by call (the order flipped every pair), so
    both see the same machine; per model: client p50/mean, Triton's request and compute_infer means."""
    import tritonclient.grpc as grpcclient

    latencies = {n: [] for n in names}
    with grpcclient.InferenceServerClient(url) as client:
        answers = {n: [client.infer(n, x).as_numpy("scores") for x in inputs] for n in names}  # warm, and compare
        equal = all(np.array_equal(a, b) for a, b in zip(*answers.values()))
        before = server_stats(client)
        for k in range(calls):
            for name in names if k % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                client.infer(name, inputs[k % len(inputs)])
                latencies[name].append(time.perf_counter() - start)
        delta = stats_delta(before, server_stats(client))
    out = {"scores_equal": equal}
    for name in names:
        ms = np.array(latencies[name]) * 1e3
        out[name] = {"client_p50_ms": float(np.percentile(ms, 50)), "client_mean_ms": float(ms.mean()),
                     "server_ms": delta[name]["success_ms"], "compute_infer_ms": delta[name]["compute_infer_ms"],
                     "requests": delta[name]["count"]}
    return out


def run(out: Path, baseline: Path, candidates: tuple[int, ...], calls: int) -> dict:
    export = build_export(out / "deploy")
    repo = Path(tempfile.mkdtemp(prefix="runner-ab-")) / "repository"
    version = publish(export, repo, "cpu").version
    interface = api.ServingInterface.from_json(
        read_config(repo / api.release_model(api.DOWNSTREAM, version) / "config.pbtxt")
        .parameters["duet_interface"].string_value)
    serving = Path(tempfile.mkdtemp(prefix="runner-ab-serve-"))
    names = scratch(repo, version, baseline, serving)
    signature = json.loads((repo / names[0] / str(version) / "signature.json").read_text(encoding="utf-8"))
    rows = []
    with TritonServer(serving, models=names) as server:
        for c in candidates:
            wires = model_requests([s["name"] for s in signature["inputs"]], interface, 1, c, n=8)
            result = compare(server.endpoints.grpc_url, names, [infer_inputs(w) for w in wires], calls)
            now, base = result[names[0]], result[names[1]]
            rows.append({"candidates": c, "scores_equal": result["scores_equal"], "current": now, "baseline": base,
                         **{f"ratio_{k}": now[k] / base[k] for k in ("client_p50_ms", "client_mean_ms", "server_ms",
                                                                      "compute_infer_ms")}})
            log.info("%d candidates: compute_infer %.3f vs baseline %.3f ms (x%.3f), client p50 %.3f vs %.3f ms",
                     c, now["compute_infer_ms"], base["compute_infer_ms"], rows[-1]["ratio_compute_infer_ms"],
                     now["client_p50_ms"], base["client_p50_ms"])
    results = {"baseline": str(baseline), "calls": calls, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "runner_ab.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    (out / "runner_ab.md").write_text(markdown(results), encoding="utf-8")
    return results


def markdown(results: dict) -> str:
    lines = [f"## cpu runner: this checkout vs {results['baseline']} (ranker, concurrency 1, "
             f"{results['calls']} calls each, alternating call by call)", "",
             "| candidates | scores equal | compute_infer ms now / base | ratio | server request ms now / base | ratio "
             "| client p50 ms now / base | ratio |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["rows"]:
        now, base = r["current"], r["baseline"]
        lines.append(f"| {r['candidates']} | {'yes' if r['scores_equal'] else 'NO'} | "
                     f"{now['compute_infer_ms']:.3f} / {base['compute_infer_ms']:.3f} | "
                     f"{r['ratio_compute_infer_ms']:.3f} | "
                     f"{now['server_ms']:.3f} / {base['server_ms']:.3f} | {r['ratio_server_ms']:.3f} | "
                     f"{now['client_p50_ms']:.3f} / {base['client_p50_ms']:.3f} | {r['ratio_client_p50_ms']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="the runner model.py to compare against")
    p.add_argument("--out", type=Path, default=Path("runs/runner_ab"), help="where runner_ab.json/.md go")
    p.add_argument("--candidates", type=int, nargs="+", default=[16, 128], help="candidates per request")
    p.add_argument("--calls", type=int, default=2000, help="sequential calls per model")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = run(args.out, args.baseline, tuple(args.candidates), args.calls)
    print(markdown(results))
    return 0 if all(r["scores_equal"] for r in results["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
