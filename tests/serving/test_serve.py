"""`duet-serve` runs a real tritonserver: a release published while it serves is swapped in with no
failed request, `duet-publish --rollback` swaps back, SIGTERM stops it cleanly; the TorchScript runtime
of the runner serves too."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from request_samples import random_users

from duet_sdk.client import DuetClient
from duet_sdk.interface import ENSEMBLES, FreshRequest, release_model
from duet_sdk.serving.cli import publish_main
from duet_sdk.serving.reference import InProcessDuet
from duet_sdk.serving.repository import publish
from duet_sdk.serving.server import TritonServer, TritonServerError, free_port

pytestmark = pytest.mark.slow


def _lines(process: subprocess.Popen) -> "queue.Queue[str]":
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    return lines


def _wait_for(lines: "queue.Queue[str]", text: str, timeout_s: float) -> list[str]:
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=0.5))
        except queue.Empty:
            continue
        if text in seen[-1]:
            return seen
    raise AssertionError(f"{text!r} not printed within {timeout_s}s; got {seen}")


def test_release_published_while_serving_is_swapped_in_and_rolled_back_without_a_failed_request(repository_copy,
                                                                                                tiny_export):
    grpc = free_port()
    cmd = [sys.executable, "-c", "from duet_sdk.serving.cli import serve_main; raise SystemExit(serve_main())",
           "--model-repository", str(repository_copy), "--grpc-port", str(grpc), "--http-port", str(free_port()),
           "--metrics-port", str(free_port()), "--watch", "0.5"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    try:
        lines = _lines(process)
        ready = _wait_for(lines, "duet-serve: ready", 120)[-1]
        assert f"127.0.0.1:{grpc}" in ready and "release 1" in ready

        stop, done, failures = threading.Event(), [0], []

        def keep_scoring():
            with DuetClient(f"127.0.0.1:{grpc}", timeout_s=30, retries=0) as client:
                users = [FreshRequest(h, c) for h, c in random_users(client.interface, 3, seed=7)]
                while not stop.is_set():
                    try:
                        client.score_fresh(users)
                        done[0] += 1
                    except Exception as exc:  # every failure counts against the swap
                        failures.append(exc)

        worker = threading.Thread(target=keep_scoring)
        worker.start()
        time.sleep(1.0)
        before = done[0]
        assert publish(tiny_export, repository_copy, "cpu").version == 2
        _wait_for(lines, "now serving release 2", 120)
        swapped = done[0]
        time.sleep(1.0)

        import tritonclient.grpc as grpcclient
        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}") as c:
            for model in ("click_encoder", "conv_encoder", "ranker", *ENSEMBLES):
                assert c.is_model_ready(release_model(model, 2), "2") and c.is_model_ready(release_model(model, 1), "1")
            for alias in ENSEMBLES:
                assert c.is_model_ready(alias, "2") and not c.is_model_ready(alias, "1"), alias
            assert c.get_inference_statistics(release_model("ranker", 2), "2").model_stats[0].inference_count > 0
        assert publish_main(["--model-repository", str(repository_copy), "--rollback", "1"]) == 0
        _wait_for(lines, "now serving release 1", 120)
        rolled = done[0]
        time.sleep(0.5)
        stop.set()
        worker.join(60)
        assert failures == []
        assert before > 0 and swapped > before and rolled > swapped and done[0] > rolled  # before, during, after
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    assert code == 0


def test_duet_serve_refuses_a_directory_that_is_not_a_published_repository(tmp_path):
    from duet_sdk.serving.cli import serve_main

    assert serve_main(["--model-repository", str(tmp_path)]) == 2


def test_torchscript_runtime_of_the_runner_matches_pytorch(tiny_export, tiny_runs, tmp_path):
    repo = tmp_path / "repo"
    publish(tiny_export, repo, "cpu", formats=("torchscript",))
    with TritonServer(repo) as server, DuetClient(server.endpoints.grpc_url, timeout_s=60) as client:
        reference = InProcessDuet(tiny_runs, client.connect())
        users = random_users(client.interface, 5, seed=8)
        for (history, candidates), got in zip(users, client.score_fresh([FreshRequest(h, c) for h, c in users])):
            want_scores, want_codes = reference.score_fresh(history, candidates)
            assert got.codes == {n: tuple(c.tolist()) for n, c in want_codes.items()}
            np.testing.assert_allclose(np.array(got.scores.scores), want_scores, atol=1e-5)


def test_a_repository_that_fails_to_load_raises_with_the_server_log(tiny_export, tmp_path):
    repo = tmp_path / "repo"
    publish(tiny_export, repo, "cpu")
    (repo / release_model("ranker", 1) / "1" / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(TritonServerError, match="ranker"):
        TritonServer(repo, startup_timeout_s=60).start()



@pytest.mark.parametrize("flags, message", [
    (["--grpc-port", "70000"], "--grpc-port: expected a port in 1..65535"),
    (["--http-port", "-1"], "--http-port: expected a port"),
    (["--grpc-port", "9001", "--http-port", "9001"], "expected different ports"),
    (["--watch", "-1"], "--watch: expected seconds >= 0"),
    (["--keep-loaded", "0"], "--keep-loaded: expected >= 1"),
    (["--host", "999.1.1.1"], "--host: expected an address"),
])
def test_duet_serve_names_a_bad_flag_before_starting_anything(cpu_repository, capsys, flags, message):
    from duet_sdk.serving.cli import serve_main

    assert serve_main(["--model-repository", str(cpu_repository), *flags]) == 2
    assert message in capsys.readouterr().err


def test_duet_serve_reports_an_unreadable_admin_key_file_without_a_traceback(
    cpu_repository, capsys, monkeypatch, tmp_path
):
    from duet_sdk.serving.cli import serve_main

    monkeypatch.delenv("DUET_TRITON_ADMIN_KEY", raising=False)
    assert serve_main(["--model-repository", str(cpu_repository), "--admin-key-file", str(tmp_path / "missing")]) == 2
    assert "--admin-key-file: expected a readable file" in capsys.readouterr().err
