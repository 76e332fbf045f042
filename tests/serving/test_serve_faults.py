"""Faults around a real tritonserver: model control needs the operator key, a graceful stop under load
(after requests whose parallel ensemble steps failed) gives clients only retryable errors and exits 0
quickly, and duet-serve exits non-zero when tritonserver dies."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from request_samples import random_users
from tritonclient.utils import InferenceServerException

from duet_sdk.client import DuetClient, InvalidRequest, Releases
from duet_sdk.client.calls import embed_calls
from duet_sdk.client.errors import TRANSIENT
from duet_sdk.interface import FreshRequest, release_model
from duet_sdk.serving.server import ADMIN_KEY_ENV, TritonServer, free_port

pytestmark = pytest.mark.slow


def test_model_control_needs_the_operator_key_and_clients_still_see_releases(triton):
    ranker = release_model("ranker", 1)
    with grpcclient.InferenceServerClient(triton.endpoints.grpc_url) as anyone:
        for call in (lambda: anyone.unload_model(ranker), lambda: anyone.load_model(ranker),
                     anyone.get_model_repository_index):
            with pytest.raises(InferenceServerException, match="restricted|duet-admin-key"):
                call()
        assert anyone.is_model_ready(ranker, "1")  # inference-side APIs stay open
    with DuetClient(triton.endpoints.grpc_url, timeout_s=30) as client:  # no key: metadata and readiness only
        assert client.releases() == Releases(current=1, loaded=(1,))
    with triton.client() as operator:
        assert {m.name for m in operator.get_model_repository_index().models} >= {ranker, "duet_fresh"}
    assert triton._admin_key not in triton.log.read_text(errors="replace")


def _bad_upstream_call(interface):
    call = embed_calls([random_users(interface, 1, seed=11)[0][0]], interface)[0]
    inputs = dict(call.inputs)
    inputs["static_dense"] = np.full_like(inputs["static_dense"], np.nan)  # both parallel encoders refuse it
    tensors = []
    for name, array in inputs.items():
        t = grpcclient.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
        t.set_data_from_numpy(array)
        tensors.append(t)
    return tensors


def test_graceful_stop_under_load_gives_clients_only_retryable_errors(cpu_repository, tmp_path):
    server = TritonServer(cpu_repository, exit_timeout_s=30, log=tmp_path / "triton.log").start()
    url = server.endpoints.grpc_url
    with DuetClient(url, timeout_s=30) as c:
        interface = c.connect()
    with grpcclient.InferenceServerClient(url) as raw:  # failed parallel steps must not stay in flight
        for _ in range(5):
            with pytest.raises(InferenceServerException) as info:
                raw.infer("duet_upstream", _bad_upstream_call(interface))
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    stop, errors, done = threading.Event(), [], [0]

    def load(seed):
        with DuetClient(url, timeout_s=10, retries=0) as client:
            users = [FreshRequest(h, cand) for h, cand in random_users(interface, 3, seed=seed)]
            while not stop.is_set():
                try:
                    client.score_fresh(users)
                    done[0] += 1
                except Exception as exc:  # noqa: BLE001 - every error is judged below
                    errors.append(exc)
                    if isinstance(exc, TRANSIENT):
                        time.sleep(0.05)
    threads = [threading.Thread(target=load, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    started = time.monotonic()
    status = server.stop()
    elapsed = time.monotonic() - started
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert done[0] > 0
    assert status == 0, f"tritonserver exited with {status}"
    assert elapsed < 20, f"stop took {elapsed:.1f}s: requests were left in flight (exit timeout 30 s)"
    wrong = [e for e in errors if not isinstance(e, TRANSIENT)]
    assert wrong == [], f"clients saw non-retryable errors during a graceful stop: {wrong[:3]}"
    assert errors, "the clients never saw the server go away"


def _tritonserver_child(pid: int, timeout_s: float = 10.0) -> int:
    """The tritonserver process that ``pid`` started (threads may come and go while /proc is read)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
                found = [c for c in children if "tritonserver" in Path(f"/proc/{c}/cmdline").read_text()]
            except OSError:
                continue
            if found:
                return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no tritonserver child of {pid}")


def test_duet_serve_exits_non_zero_when_tritonserver_dies(repository_copy):
    cmd = [sys.executable, "-c", "from duet_sdk.serving.cli import serve_main; raise SystemExit(serve_main())",
           "--model-repository", str(repository_copy), "--grpc-port", str(free_port()), "--http-port", str(free_port()),
           "--metrics-port", str(free_port())]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=os.environ | {"OMP_NUM_THREADS": "1", ADMIN_KEY_ENV: "operator-key-123"})
    try:
        for line in process.stdout:
            if "duet-serve: ready" in line:
                break
        os.kill(_tritonserver_child(process.pid), signal.SIGSEGV)
        code = process.wait(60)
        err = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 1, err
    assert "tritonserver" in err and "operator-key-123" not in err


def test_a_bad_request_through_the_client_is_an_invalid_request(client):
    history = random_users(client.interface, 1, seed=12)[0][0]
    bad = history.__class__(history.user_id, history.request_time, history.static_sparse,
                            [1e39] * len(history.static_dense), history.streams)
    with pytest.raises(InvalidRequest, match="static_dense"):
        client.embed([bad])
