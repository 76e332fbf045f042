"""Two versions of the cpu runner (``runner/model.py``) side by side on one tritonserver, same artifact.

    git show 7e4cc2c:duet_sdk/serving/runner/model.py > /tmp/runner_base.py
    .venv/bin/python -m benchmarks.runner_ab --baseline /tmp/runner_base.py --out runs/runner_ab

The demo-shape release (``deployment.py``) is published; its ranker is served twice from one scratch
repository: ``ranker_v1`` with this checkout's runner and ``rankerbase_v1``, a copy whose ``model.py``
is the baseline. Rounds alternate between the two (a block of sequential gRPC calls on each, the
order flipped every round) so drift on a shared machine hits both alike; per side, Triton's statistics
(request time, compute_infer) and client latency are pooled over the rounds, and the ratios are taken
in this one run. Both answer the same requests; their scores must be equal (checked).
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


def _block(client, model: str, inputs: list, n: int) -> tuple[list[float], dict]:
    before, latencies = server_stats(client), []
    for k in range(n):
        start = time.perf_counter()
        client.infer(model, inputs[k % len(inputs)])
        latencies.append(time.perf_counter() - start)
    return latencies, stats_delta(before, server_stats(client))[model]


def compare(url: str, names: tuple[str, str], inputs: list, rounds: int, block: int) -> dict:
    """Alternating blocks on the two models; per side: client p50/mean, request and compute_infer means."""
    import tritonclient.grpc as grpcclient

    pooled = {n: {"latency": [], "server_sum": 0.0, "infer_sum": 0.0, "count": 0} for n in names}
    with grpcclient.InferenceServerClient(url) as client:
        for name in names:  # warm, and the same answers from both
            answers = [client.infer(name, x).as_numpy("scores") for x in inputs]
            pooled[name]["answers"] = answers
        equal = all(np.array_equal(a, b) for a, b in zip(*(pooled[n].pop("answers") for n in names)))
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                latencies, delta = _block(client, name, inputs, block)
                side = pooled[name]
                side["latency"] += latencies
                side["server_sum"] += delta["success_ms"] * delta["count"]
                side["infer_sum"] += delta["compute_infer_ms"] * delta["count"]
                side["count"] += delta["count"]
    out = {"scores_equal": equal}
    for name, side in pooled.items():
        ms = np.array(side["latency"]) * 1e3
        n = side["count"]
        out[name] = {"client_p50_ms": float(np.percentile(ms, 50)), "client_mean_ms": float(ms.mean()),
                     "server_ms": side["server_sum"] / n, "compute_infer_ms": side["infer_sum"] / n, "requests": n}
    return out


def run(out: Path, baseline: Path, candidates: tuple[int, ...], rounds: int, block: int) -> dict:
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
            result = compare(server.endpoints.grpc_url, names, [infer_inputs(w) for w in wires], rounds, block)
            now, base = result[names[0]], result[names[1]]
            rows.append({"candidates": c, "scores_equal": result["scores_equal"], "current": now, "baseline": base,
                         **{f"ratio_{k}": now[k] / base[k] for k in ("client_p50_ms", "client_mean_ms", "server_ms",
                                                                      "compute_infer_ms")}})
            log.info("%d candidates: compute_infer %.3f vs baseline %.3f ms (x%.3f), client p50 %.3f vs %.3f ms",
                     c, now["compute_infer_ms"], base["compute_infer_ms"], rows[-1]["ratio_compute_infer_ms"],
                     now["client_p50_ms"], base["client_p50_ms"])
    results = {"baseline": str(baseline), "rounds": rounds, "block": block, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "runner_ab.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    (out / "runner_ab.md").write_text(markdown(results), encoding="utf-8")
    return results


def markdown(results: dict) -> str:
    lines = [f"## cpu runner: this checkout vs {results['baseline']} (ranker, concurrency 1, "
             f"{results['rounds']} alternating rounds of {results['block']} calls)", "",
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
    p.add_argument("--rounds", type=int, default=10, help="alternating rounds")
    p.add_argument("--block", type=int, default=100, help="sequential calls per model per round")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = run(args.out, args.baseline, tuple(args.candidates), args.rounds, args.block)
    print(markdown(results))
    return 0 if all(r["scores_equal"] for r in results["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
