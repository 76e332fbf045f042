"""benchmarks/serving_profile.py on a real tritonserver: Triton's statistics and the runner's own step
times count exactly the calls the breakdown made, and the runner keeps no profile unless asked."""

import os
from pathlib import Path

import numpy as np
import pytest
from release_load import serve

from benchmarks import serving_profile
from duet_sdk import interface as api
from duet_sdk.serving.releases import read_index


@pytest.fixture(scope="module")
def profiled(cpu_repository, tmp_path_factory):
    """A second tritonserver on the tiny repository, its runners keeping step times in a directory."""
    directory = tmp_path_factory.mktemp("runner-profile")
    with serve(cpu_repository, environment={serving_profile.PROFILE_ENV: str(directory)}) as server:
        yield server, directory


def test_breakdown_counts_exactly_its_calls_on_the_ensemble_its_ranker_and_inside_the_runner(
    profiled, client, cpu_repository
):
    server, directory = profiled
    version = read_index(cpu_repository)["current"]
    row = serving_profile.breakdown_one(server.endpoints.grpc_url, directory, cpu_repository, version,
                                        client.interface, api.DOWNSTREAM, 3, n=12)
    assert row["counted"] == {api.release_model(api.DOWNSTREAM, version): 12, api.release_model("ranker", version): 12}
    assert row["runner_counted"] == 12
    # nesting, not speed: the runtime runs inside execute, execute inside Triton's compute_infer
    assert 0 < row["ort_run_ms"] <= row["runner_execute_ms"] <= row["compute_infer_ms"] <= row["server_ms"]
    assert row["runner_checks_ms"] > 0 and row["client_codec_ms"] > 0


def test_runner_counters_sum_the_instances_of_one_model_only(tmp_path):
    for name, pid, values in (("ranker_v1", 11, [2, 3, 30, 5, 20]), ("ranker_v1", 12, [1, 1, 10, 2, 6]),
                              ("ranker_v10", 13, [9, 9, 90, 9, 9])):
        np.array(values, dtype=np.int64).tofile(tmp_path / f"{name}.{pid}.prof")
    assert serving_profile.runner_counters(tmp_path, "ranker_v1") == {
        "executions": 3, "requests": 4, "execute_ns": 40, "checks_ns": 7, "run_ns": 26}
    assert serving_profile.runner_counters(tmp_path, "missing_v1")["requests"] == 0


def test_the_session_server_keeps_no_runner_profile(triton):
    assert serving_profile.PROFILE_ENV not in os.environ  # the runner's Profile is off unless asked for
    assert not list(Path(triton.repository).rglob("*.prof"))


def test_the_report_has_a_row_per_target_and_per_variant_load():
    from benchmarks.serving_report import profile_markdown

    keys = ("client_p50_ms", "client_mean_ms", "server_ms", "queue_ms", "compute_input_ms", "compute_infer_ms",
            "ort_run_ms", "runner_python_ms", "runner_checks_ms", "backend_ipc_ms", "compute_output_ms",
            "ensemble_ms", "remainder_ms", "client_codec_ms", "overhead_mean_ms")
    breakdown = [dict.fromkeys(keys, 0.25) | {"name": n, "candidates": c} for n, c in serving_profile.TARGETS]
    variant = {"variant": "release", "settings": "delay 0us", "concurrency": 16, "candidates": 16, "rps": 500.0,
               "rps_rounds": [490.0, 510.0], "vs_inprocess": 0.5, "p50_ms": 20.0, "p99_ms": 40.0, "batch": 3.5,
               "cpu_ms_per_request_client": 0.3, "cpu_ms_per_request_tritonserver": 0.4,
               "cpu_ms_per_request_stubs": 0.6, "ours_cores": 1.2, "machine_busy_cores": 2.0, "cores": 2}
    text = profile_markdown({"requests": 300, "breakdown": breakdown, "variants": [variant]})
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 2 + len(serving_profile.TARGETS) + 1  # two headers
    assert "| duet_downstream | 128 | 0.25 |" in text and "| 490.0, 510.0 |" in text
