"""duet-tune against a real tritonserver on a tiny search space: it chooses only configs it measured, the
best of them for the objective, and writes a new release that really serves (scores checked against
in-process PyTorch). Timings are never asserted: which config wins depends on the machine."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from release_load import serve

from duet_sdk.atomic_io import atomic_write_json
from duet_sdk.client import DuetClient, FreshRequest
from duet_sdk.serving import releases
from duet_sdk.serving.config import read_config
from duet_sdk.serving.reference import InProcessDuet
from duet_sdk.tune.cli import main
from duet_sdk.tune.measure import MeasureConfig, Measurement, _stable
from duet_sdk.tune.objective import Objective, pareto_front
from duet_sdk.tune.requests import sample_users
from duet_sdk.tune.search import Point
from duet_sdk.tune.settings import ModelSettings, SearchSpace, apply_settings, read_settings

FAST = ["--warmup-s", "0.3", "--window-s", "0.4", "--max-windows", "4"]
PROBABILITY_TOL = 1e-5  # fp32 ONNX Runtime vs eager, as the export manifest states


def _m(rps: float, p99: float, errors: int = 0, stable: bool = True) -> Measurement:
    return Measurement("m", "concurrency", 1, rps, p99 / 2, p99 * 0.9, p99, p99 / 2, 100, errors, stable, 3)


def _point(rps: float, p99: float, **kw) -> Point:
    return Point("duet_downstream", {"ranker": ModelSettings()}, _m(rps, p99, **kw))


def test_throughput_objective_picks_the_fastest_within_the_slo_and_latency_the_lowest_p99_that_keeps_up():
    points = [_point(100, 5), _point(300, 30), _point(200, 9), _point(400, 8, errors=1)]
    assert Objective("throughput", concurrency=4, slo_p99_ms=10).best(points) is points[2]
    assert Objective("throughput", concurrency=4, slo_p99_ms=1).best(points) is None
    rate = [_point(50, 5), _point(40, 2), _point(49, 3)]  # 40 of 50 requests/s answered: it did not keep up
    assert Objective("latency", rate=50).best(rate) is rate[2]
    assert [p.measurement.rps for p in pareto_front(points)] == [100, 200, 300]


def test_objective_and_measure_config_reject_missing_or_bad_values_by_name():
    with pytest.raises(ValueError, match="--slo-p99-ms"):
        Objective("throughput", concurrency=4)
    with pytest.raises(ValueError, match="--rate"):
        Objective("latency", rate=-1)
    with pytest.raises(ValueError, match="max_windows"):
        MeasureConfig(max_windows=2, stable_windows=3)


def test_windows_are_stable_only_when_both_rate_and_latency_agree_within_ten_percent():
    assert _stable([100, 105, 96], [1.0, 1.05, 0.95], 0.10)
    assert not _stable([100, 130, 96], [1.0, 1.0, 1.0], 0.10)
    assert not _stable([100, 100, 100], [1.0, 1.5, 1.0], 0.10)


def test_settings_round_trip_through_the_published_config(cpu_repository):
    config = read_config(cpu_repository / "ranker_v1" / "config.pbtxt")
    wanted = ModelSettings(500, (4,), 2, 2, 1)
    assert read_settings(apply_settings(config, wanted)) == wanted
    with pytest.raises(ValueError, match="preferred_batch_sizes"):
        apply_settings(config, ModelSettings(preferred_batch_sizes=(config.max_batch_size + 1,)))
    assert SearchSpace(preferred_batch_sizes=((), (4,), (64,))).values("preferred_batch_sizes", 16) == ((), (4,))


def test_cli_rejects_an_incomplete_objective_before_starting_anything(cpu_repository, tmp_path, capsys):
    assert main(["--model-repository", str(cpu_repository), "--objective", "throughput", "--concurrency", "2",
                 "--out", str(tmp_path)]) == 2
    assert "--slo-p99-ms" in capsys.readouterr().err


@pytest.mark.slow
def test_tune_chooses_the_best_measured_config_and_publishes_a_release_that_serves(
    repository_copy, tiny_runs, tmp_path
):
    before = releases.read_index(repository_copy)
    v1_config = (repository_copy / "ranker_v1" / "config.pbtxt").read_text()
    rc = main(
        [
            "--model-repository",
            str(repository_copy),
            "--objective",
            "throughput",
            "--slo-p99-ms",
            "10000",
            "--concurrency",
            "2",
            "--pipelines",
            "duet_downstream",
            "--queue-delays-us",
            "0,1000",
            "--preferred-batch-sizes",
            "4",
            "--instances",
            "1,2",
            "--threads",
            "1",
            "--budget-s",
            "60",
            "--out",
            str(tmp_path),
            *FAST,
        ]
    )
    assert rc == 0
    summary = json.loads((tmp_path / "tune.json").read_text())
    down = summary["pipelines"]["duet_downstream"]
    measured = [p["settings"]["ranker"] for p in down["points"]]
    # the space holds 2 queue delays x 2 instance counts; how many of them fit depends on the machine's speed
    assert 2 <= len(measured) <= 4 and len({json.dumps(s, sort_keys=True) for s in measured}) == len(measured)
    assert all(p["measurement"]["errors"] == 0 for p in down["points"])  # so every point meets the generous SLO
    rank = [(p["measurement"]["stable"], p["measurement"]["rps"]) for p in down["points"]]
    assert down["chosen"] == rank.index(max(rank))  # stable before unstable, then the most requests/s
    chosen = down["points"][down["chosen"]]["settings"]["ranker"]

    after = releases.read_index(repository_copy)
    assert summary["published"] == 2 and after["target"] == 2 and after["current"] == before["current"] == 1
    written = read_settings(read_config(repository_copy / "ranker_v2" / "config.pbtxt"))
    assert written == ModelSettings(**chosen | {"preferred_batch_sizes": tuple(chosen["preferred_batch_sizes"])})
    assert (repository_copy / "ranker_v1" / "config.pbtxt").read_text() == v1_config  # never mutated in place

    after_index = dict(after, current=2, loaded=[2])  # serve the tuned release and score through it
    atomic_write_json(repository_copy / releases.INDEX, after_index)
    for ensemble in ("duet_upstream", "duet_downstream", "duet_fresh"):
        releases.point_alias(repository_copy, ensemble, 2)
    with serve(repository_copy) as server, DuetClient(server.endpoints.grpc_url, timeout_s=30) as client:
        interface = client.connect()
        assert interface.version == "2"
        reference = InProcessDuet(tiny_runs, interface)
        users = sample_users(interface, 3, candidates=5, seed=7)
        results = client.score_fresh([FreshRequest(h, c) for h, c in users])
        for result, (history, candidates) in zip(results, users):
            want, _ = reference.score_fresh(history, candidates)
            assert result.scores.model_version == "2"
            assert float(np.abs(np.array(result.scores.scores) - want).max()) <= PROBABILITY_TOL


@pytest.mark.slow
def test_tune_publishes_nothing_when_no_measured_config_meets_the_slo(repository_copy, tmp_path):
    rc = main(
        [
            "--model-repository",
            str(repository_copy),
            "--objective",
            "throughput",
            "--slo-p99-ms",
            "0.001",
            "--concurrency",
            "1",
            "--pipelines",
            "duet_downstream",
            "--queue-delays-us",
            "0",
            "--preferred-batch-sizes",
            "4",
            "--instances",
            "1",
            "--threads",
            "1",
            "--budget-s",
            "10",
            "--out",
            str(tmp_path),
            *FAST,
        ]
    )
    assert rc == 3
    summary = json.loads((tmp_path / "tune.json").read_text())
    assert summary["published"] is None and summary["pipelines"]["duet_downstream"]["chosen"] is None
    assert math.isfinite(summary["pipelines"]["duet_downstream"]["points"][0]["measurement"]["p99_ms"])
    assert [e["version"] for e in releases.read_index(repository_copy)["releases"]] == [1]


@pytest.mark.slow
def test_rate_and_concurrency_loads_get_real_answers_in_fixed_windows(triton, client):
    from duet_sdk.tune.measure import measure_concurrency, measure_rate
    from duet_sdk.tune.requests import ensemble_requests, infer_inputs

    requests = [infer_inputs(w) for w in ensemble_requests(client.interface, "duet_downstream", 1, 4, n=4)]
    config = MeasureConfig(warmup_s=0.2, window_s=0.3, max_windows=4)
    for m in (measure_rate(triton.endpoints.grpc_url, "duet_downstream_v1", requests, 40.0, config),
              measure_concurrency(triton.endpoints.grpc_url, "duet_downstream_v1", requests, 2, config)):
        assert m.errors == 0 and m.requests > 0 and 3 <= m.windows <= 4 and len(m.window_rps) == m.windows
        assert m.p50_ms <= m.p90_ms <= m.p99_ms and (m.stable or m.windows == 4)  # stops early only when stable
    bad = [infer_inputs({**ensemble_requests(client.interface, "duet_downstream", 1, 4, n=1)[0],
                         "click_codes": np.full((1, 3), 10**6, dtype=np.int64)})]
    failed = measure_concurrency(triton.endpoints.grpc_url, "duet_downstream_v1", bad, 1, config)
    assert failed.errors > 0 and failed.requests == 0 and "click_codes" in failed.first_error
