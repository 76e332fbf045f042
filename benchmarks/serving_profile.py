"""Where Triton's per-request time goes, and what bounds throughput under load, measured in one run.

- ``breakdown``: at concurrency 1, ``n`` sequential gRPC calls (tritonclient ``infer``, inputs built once)
  to a model or ensemble, with Triton's own per-model statistics read before and after
  (``get_inference_statistics``: success, queue, compute_input, compute_infer, compute_output; count and
  ns, so the figures are means over exactly those calls). The cpu runner's own work comes from inside
  the served runner over the same calls (its ``Profile``, on when tritonserver was started with
  ``DUET_RUNNER_PROFILE`` naming a directory): ``execute`` whole, its checks (read, ``check_values``,
  ``trim``) and the runtime's run (ONNX Runtime). Derived: runner Python = execute - ORT; backend IPC = compute_infer
  - execute (the Python backend moving requests and responses between tritonserver and its stub through
  shared memory, and waking it); ensemble = the ensemble's request time - its step's; remainder = client
  mean - server request mean (gRPC both ways, tritonserver's frontend, the client library).
- ``load``: at concurrency C (the perf_analyzer way, ``duet_sdk.tune.measure``), CPU seconds per answered
  request of the client process, tritonserver and its Python stubs (``/proc``), and how busy the whole
  machine's cores were (other processes included), for one config or several (``variants``: ranker
  settings applied by model control, as ``duet-tune`` does).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from duet_sdk import interface as api
from duet_sdk.tune.measure import MeasureConfig, measure_concurrency
from duet_sdk.tune.requests import ensemble_requests, infer_inputs, model_requests

log = logging.getLogger(__name__)
PROFILE_ENV = "DUET_RUNNER_PROFILE"  # as runner/model.py reads it
PROFILE_FIELDS = ("executions", "requests", "execute_ns", "checks_ns", "run_ns")  # runner/model.py's Profile
KINDS = ("success", "queue", "compute_input", "compute_infer", "compute_output")
COUNTS = ("inference_count", "execution_count")  # requests' rows, and executions (batches) of the model
TARGETS = (("ranker", 128), ("duet_downstream", 16), ("duet_downstream", 128))
VARIANTS = {  # the ranker's settings compared under load: changes to the release's own
    "release": {},
    "2 instances": {"instances": 2},
    "2 threads": {"threads": 2},
    "queue delay 500 us": {"max_queue_delay_us": 500},
}


def runner_counters(directory: Path, model: str) -> dict[str, int]:
    """The runner's ``Profile`` counters of ``model`` (a served name, e.g. ``ranker_v1``), summed over its
    instances' files under ``directory`` (a reloaded model's earlier files keep their final totals)."""
    total = np.zeros(len(PROFILE_FIELDS), dtype=np.int64)
    for path in Path(directory).glob(f"{model}.*.prof"):
        counters = np.fromfile(path, dtype=np.int64)
        if len(counters) == len(PROFILE_FIELDS):
            total += counters
    return dict(zip(PROFILE_FIELDS, (int(x) for x in total)))


def server_stats(client) -> dict[str, dict[str, tuple[int, int]]]:
    """Every model's cumulative (count, ns) per statistic kind."""
    stats = client.get_inference_statistics(as_json=True).get("model_stats", [])
    return {m["name"]: {k: (int(v.get("count", 0)), int(v.get("ns", 0)))
                        for k, v in m.get("inference_stats", {}).items() if k in KINDS}
            | {k: (int(m.get(k, 0)), 0) for k in COUNTS} for m in stats}


def stats_delta(before: dict, after: dict) -> dict[str, dict[str, float]]:
    """Per model with requests in between: ``count``, rows and executions, and the mean ms of each kind."""
    out = {}
    for model, kinds in after.items():
        count = kinds["success"][0] - before.get(model, {}).get("success", (0, 0))[0]
        if count <= 0:
            continue
        was = before.get(model, {})
        out[model] = {"count": count} | {k: kinds[k][0] - was.get(k, (0, 0))[0] for k in COUNTS} | {
            f"{k}_ms": (ns - was.get(k, (0, 0))[1]) / count / 1e6 for k, (_, ns) in kinds.items() if k in KINDS}
    return out


def _client_codec_ms(client, model: str, inputs: list, n: int = 200) -> float:
    """Mean ms the client library spends building + serialising a request and parsing its answer."""
    from tritonclient.grpc import InferResult, service_pb2
    from tritonclient.grpc._utils import _get_inference_request

    answer = client.infer(model, inputs).get_response().SerializeToString()
    start = time.perf_counter()
    for _ in range(n):
        _get_inference_request(model, inputs, "", "", None, 0, False, False, 0, None, None).SerializeToString()
        result = InferResult(service_pb2.ModelInferResponse.FromString(answer))
        for output in result.get_response().outputs:
            result.as_numpy(output.name)
    return 1e3 * (time.perf_counter() - start) / n


def _wires(interface, name: str, repo: Path, version: int, candidates: int) -> list[dict]:
    if name in api.ENSEMBLES:
        return ensemble_requests(interface, name, 1, candidates, n=8)
    directory = repo / api.release_model(name, version) / str(version)
    signature = json.loads((directory / "signature.json").read_text(encoding="utf-8"))
    return model_requests([s["name"] for s in signature["inputs"]], interface, 1, candidates, n=8)


def breakdown_one(url: str, profile_dir: Path, repo: Path, version: int, interface, name: str, candidates: int,
                  n: int) -> dict:
    """One target's breakdown at concurrency 1 (see the module doc); figures in ms, means unless named p50."""
    import tritonclient.grpc as grpcclient

    wires = _wires(interface, name, repo, version, candidates)
    inputs = [infer_inputs(w) for w in wires]
    model, step = api.release_model(name, version), api.release_model("ranker", version)  # every target runs it
    with grpcclient.InferenceServerClient(url) as client:
        for request in inputs * 3:
            client.infer(model, request)
        before, runner0, latencies = server_stats(client), runner_counters(profile_dir, step), []
        for k in range(n):
            start = time.perf_counter()
            client.infer(model, inputs[k % len(inputs)])
            latencies.append(time.perf_counter() - start)
        delta, runner1 = stats_delta(before, server_stats(client)), runner_counters(profile_dir, step)
        codec = _client_codec_ms(client, model, inputs[0])
    top, inner = delta[model], delta[step]
    runner = {k: (runner1[k] - runner0[k]) / max(1, runner1["requests"] - runner0["requests"]) / 1e6
              for k in ("execute_ns", "checks_ns", "run_ns")}
    ms = np.array(latencies) * 1e3
    row = {"name": name, "candidates": candidates, "requests": n, "client_p50_ms": float(np.percentile(ms, 50)),
           "client_mean_ms": float(ms.mean()), "server_ms": top["success_ms"], "queue_ms": inner["queue_ms"],
           "compute_input_ms": inner["compute_input_ms"], "compute_infer_ms": inner["compute_infer_ms"],
           "compute_output_ms": inner["compute_output_ms"], "runner_execute_ms": runner["execute_ns"],
           "ort_run_ms": runner["run_ns"], "runner_checks_ms": runner["checks_ns"],
           "runner_python_ms": runner["execute_ns"] - runner["run_ns"],
           "backend_ipc_ms": inner["compute_infer_ms"] - runner["execute_ns"],
           "ensemble_ms": top["success_ms"] - inner["success_ms"] if model != step else 0.0,
           "client_codec_ms": codec, "remainder_ms": float(ms.mean()) - top["success_ms"],
           "counted": {m: d["count"] for m, d in delta.items()},
           "runner_counted": runner1["requests"] - runner0["requests"]}
    row["overhead_mean_ms"] = row["client_mean_ms"] - row["ort_run_ms"]
    log.info("breakdown %s@%d: client mean %.2f ms, server %.2f, compute_infer %.2f (ORT %.2f), remainder %.2f",
             name, candidates, row["client_mean_ms"], row["server_ms"], row["compute_infer_ms"], row["ort_run_ms"],
             row["remainder_ms"])
    return row


def breakdown(url: str, profile_dir: Path, repo: Path, version: int, interface, n: int) -> list[dict]:
    return [breakdown_one(url, profile_dir, repo, version, interface, name, c, n) for name, c in TARGETS]


def _cpu_s(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _snapshot(server_pid: int) -> dict:
    stubs = _children(server_pid)
    return {"client": time.process_time(), "tritonserver": _cpu_s(server_pid),
            "stubs": {p: _cpu_s(p) for p in stubs}, "machine": _machine_busy(), "wall": time.perf_counter()}


def load(url: str, server_pid: int, name: str, version: int, requests: list, concurrency: int,
         measure: MeasureConfig) -> dict:
    """``concurrency`` in flight on ``name``: requests/s, latency and CPU ms per answered request by process."""
    import tritonclient.grpc as grpcclient

    model = api.release_model(name, version)
    with grpcclient.InferenceServerClient(url) as client:
        stats0, cpu0 = server_stats(client), _snapshot(server_pid)
        m = measure_concurrency(url, model, requests, concurrency, measure)
        cpu1, stats1 = _snapshot(server_pid), server_stats(client)
    delta = stats_delta(stats0, stats1)
    answered, ranker = delta[model]["count"], delta[api.release_model("ranker", version)]
    cores = os.cpu_count() or 1
    busy = (cpu1["machine"][0] - cpu0["machine"][0]) / max(1, cpu1["machine"][1] - cpu0["machine"][1]) * cores
    per = {"client": cpu1["client"] - cpu0["client"], "tritonserver": cpu1["tritonserver"] - cpu0["tritonserver"],
           "stubs": sum(s - cpu0["stubs"].get(p, s) for p, s in cpu1["stubs"].items())}
    wall = cpu1["wall"] - cpu0["wall"]
    return {"name": name, "concurrency": concurrency, "rps": m.rps, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
            "stable": m.stable, "errors": m.errors, "answered": answered,
            "batch": ranker["count"] / max(1, ranker["execution_count"]),  # requests per ranker execution
            **{f"cpu_ms_per_request_{k}": 1e3 * v / answered for k, v in per.items()},
            "ours_cores": sum(per.values()) / wall, "machine_busy_cores": busy, "cores": cores}


def variants(server, entry: dict, interface, measure: MeasureConfig, loads: tuple[tuple[int, int], ...],
             rounds: int) -> list[dict]:
    """Each ranker setting of ``VARIANTS`` at each (concurrency, candidates) of ``loads``, in ``rounds``
    rounds with the order of the variants reversed every other round (drift on a shared machine hits
    them alike); one row per variant and load pools its rounds (mean requests/s and CPU, median of the
    p50s and p99s). The release's own settings are restored after."""
    from duet_sdk.tune.objective import Objective
    from duet_sdk.tune.search import PipelineTuner, Request
    from duet_sdk.tune.settings import SearchSpace

    tuner = PipelineTuner(server, entry, Objective("throughput", concurrency=1, slo_p99_ms=1e9), SearchSpace(),
                          measure, Request(), deadline=float("inf"))
    original = dict(tuner.loaded)
    version, seen = entry["version"], {}
    requests = {c: [infer_inputs(w) for w in ensemble_requests(interface, api.DOWNSTREAM, 1, c, n=16)]
                for c in {c for _, c in loads}}
    order = list(VARIANTS.items())
    try:
        for r in range(rounds):
            for label, changes in order if r % 2 == 0 else order[::-1]:
                served = tuner.apply({"ranker": dataclasses.replace(original["ranker"], **changes)})["ranker"]
                for concurrency, candidates in loads:
                    row = load(server.endpoints.grpc_url, server.pid, api.DOWNSTREAM, version, requests[candidates],
                               concurrency, measure)
                    seen.setdefault((label, concurrency, candidates), []).append(row | {"settings": served.describe()})
                    log.info("variant %s c=%d @%d: %.1f req/s p50 %.2f ms, CPU/request client %.2f server %.2f "
                             "stubs %.2f ms", label, concurrency, candidates, row["rps"], row["p50_ms"],
                             row["cpu_ms_per_request_client"], row["cpu_ms_per_request_tritonserver"],
                             row["cpu_ms_per_request_stubs"])
    finally:
        tuner.apply(original)
    return [_pooled(label, concurrency, candidates, runs) for (label, concurrency, candidates), runs in seen.items()]


def _pooled(label: str, concurrency: int, candidates: int, runs: list[dict]) -> dict:
    mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0] if k.startswith("cpu_ms") or k in (
        "rps", "batch", "ours_cores", "machine_busy_cores")}
    return {"variant": label, "settings": runs[0]["settings"], "concurrency": concurrency, "candidates": candidates,
            "rounds": len(runs), "cores": runs[0]["cores"], "rps_rounds": [round(r["rps"], 1) for r in runs],
            **{k: float(np.median([r[k] for r in runs])) for k in ("p50_ms", "p99_ms")},
            "stable": all(r["stable"] for r in runs), "errors": sum(r["errors"] for r in runs), **mean}


def profile(server, profile_dir: Path, repo: Path, entry: dict, interface, measure: MeasureConfig,
            quick: bool) -> dict:
    """The breakdown at concurrency 1 and the variants under load (see the module doc); ``server`` was started
    with ``DUET_RUNNER_PROFILE`` naming ``profile_dir``."""
    n = 300 if quick else 1000
    url = server.endpoints.grpc_url
    rows = breakdown(url, profile_dir, repo, entry["version"], interface, n)
    local = {r["candidates"]: 1e3 / r["ort_run_ms"] for r in rows if r["name"] == api.DOWNSTREAM}
    loads = [r | {"inprocess_rps": local[r["candidates"]], "vs_inprocess": r["rps"] / local[r["candidates"]]}
             for r in variants(server, entry, interface, measure, ((1, 128), (16, 16)), 2 if quick else 3)]
    return {"requests": n, "breakdown": rows, "variants": loads}
