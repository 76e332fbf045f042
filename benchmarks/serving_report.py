"""Markdown tables and the concurrency plot of ``benchmarks.pipelines`` results."""

from __future__ import annotations

from pathlib import Path


def to_markdown(serving: dict) -> str:
    lines = ["", f"## Serving (tritonserver, release published with {serving['policy']})", "",
             "### Triton overhead at concurrency 1 (one user) vs in-process ONNX Runtime on the same artifact", "",
             ("| model / ensemble | candidates | Triton p50 ms | in-process p50 ms | overhead p50 ms | ratio p50 | "
              "Triton p99 ms | in-process p99 ms | overhead p99 ms |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in serving["overhead"]:
        t, i = r["triton"], r["inprocess"]
        lines.append(f"| {r['name']} | {r['candidates'] or '-'} | {t['p50_ms']:.2f} | {i['p50_ms']:.2f} | "
                     f"{r['overhead_p50_ms']:+.2f} | {r['ratio_p50']:.2f}x | {t['p99_ms']:.2f} | {i['p99_ms']:.2f} | "
                     f"{r['overhead_p99_ms']:+.2f} |")
    local = {r["name"]: r["inprocess"]["rps"] for r in serving["overhead"] if r["candidates"] in (None, 16)}
    lines += [
        "",
        (
            f"### Concurrency sweep (one user, {serving['sweep'][0]['candidates']} candidates per request; "
            "perf_analyzer-style windows)"
        ),
        "",
        "| ensemble | concurrency | req/s | vs in-process req/s | p50 ms | p90 ms | p99 ms | stable | windows "
        "| errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in serving["sweep"]:
        lines.append(
            f"| {r['name']} | {int(r['load'])} | {r['rps']:.1f} | {r['rps'] / local[r['name']]:.2f} | "
            f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {'yes' if r['stable'] else 'no'} | "
            f"{r['windows']} | {r['errors']} |"
        )
    lines += [
        "",
        "### Event-triggered inference end to end vs raw duet_upstream",
        "",
        "| batch | users | stored | ETI users/s into the store | raw duet_upstream users/s | ratio |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in serving["eti"]:
        lines.append(
            f"| {r['batch']} | {r['users']} | {r['stored']} | {r['eti_users_per_s']:.1f} | "
            f"{r['raw_users_per_s']:.1f} | {100 * r['ratio']:.0f} % |"
        )
    return "\n".join(lines) + "\n" + (profile_markdown(serving["profile"]) if "profile" in serving else "")


def profile_markdown(profile: dict) -> str:
    """The per-request breakdown at concurrency 1 and the ranker variants under load (``serving_profile.py``)."""
    lines = ["", f"### Where the time goes at concurrency 1 (means over {profile['requests']} sequential gRPC calls; "
             "Triton's statistics and the runner's own Profile inside the served stub)", "",
             ("| target | cand. | client p50 | client mean | server request | queue | compute_input | compute_infer "
              "| of which ORT run | runner Python | (its checks) | backend IPC | compute_output | ensemble "
              "| remainder: gRPC + frontend + client | (client codec) | overhead vs ORT |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: |"]
    keys = ("client_p50_ms", "client_mean_ms", "server_ms", "queue_ms", "compute_input_ms", "compute_infer_ms",
            "ort_run_ms", "runner_python_ms", "runner_checks_ms", "backend_ipc_ms", "compute_output_ms", "ensemble_ms",
            "remainder_ms", "client_codec_ms", "overhead_mean_ms")
    for r in profile["breakdown"]:
        lines.append(f"| {r['name']} | {r['candidates']} | " + " | ".join(f"{r[k]:.2f}" for k in keys) + " |")
    lines += ["", "All in ms. runner Python = the runner's execute minus ORT's run; backend IPC = compute_infer minus "
              "execute (tritonserver <-> Python stub through shared memory); remainder = client mean minus server "
              "request; overhead = client mean minus ORT's run.", "",
              "### duet_downstream under load per ranker config: CPU per answered request (rounds pooled)", "",
              ("| ranker config | settings | concurrency | cand. | req/s | (per round) | vs in-process | p50 ms "
               "| p99 ms | batch | CPU ms/req client | tritonserver | stubs | our cores | machine busy cores |"),
              "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in profile["variants"]:
        lines.append(
            f"| {r['variant']} | {r['settings']} | {r['concurrency']} | {r['candidates']} | {r['rps']:.1f} | "
            f"{', '.join(map(str, r['rps_rounds']))} | "
            f"{r['vs_inprocess']:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['batch']:.1f} | "
            f"{r['cpu_ms_per_request_client']:.2f} | {r['cpu_ms_per_request_tritonserver']:.2f} | "
            f"{r['cpu_ms_per_request_stubs']:.2f} | {r['ours_cores']:.2f} | {r['machine_busy_cores']:.2f} of "
            f"{r['cores']} |")
    return "\n".join(lines) + "\n"


def sweep_plot(rows: list[dict], path: Path) -> Path:
    """p99 latency against requests/s per ensemble, one point per concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name in dict.fromkeys(r["name"] for r in rows):
        pts = [r for r in rows if r["name"] == name]
        ax.plot([r["rps"] for r in pts], [r["p99_ms"] for r in pts], marker="o", label=name)
        for r in pts:
            ax.annotate(str(int(r["load"])), (r["rps"], r["p99_ms"]), fontsize=7)
    ax.set_xlabel("requests/s")
    ax.set_ylabel("p99 ms")
    ax.set_yscale("log")
    ax.set_title("concurrency sweep (labels: concurrency)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
