"""The programs in clients/ run against a real tritonserver and redis-server: loadgen.py replays events
and triggers, eti_worker.py turns them into stored codes, score.py serves from the store."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
pytestmark = pytest.mark.slow


def _run(program: str, *args: str, timeout: float = 120) -> str:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(CLIENTS / program), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert done.returncode == 0, f"{program} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_loadgen_worker_and_scorer_programs_work_together(triton, redis_url):
    population = ["--users", "50", "--seed", "3"]
    out = _run("loadgen.py", "--redis", redis_url, *population, "--rate", "0", "--events", "300")
    assert "done: 300 events" in out
    triggers = int(out.split(" triggers in")[0].rsplit(" ", 1)[1])
    assert triggers > 0

    worker = _run("eti_worker.py", "--triton", triton.endpoints.grpc_url, "--redis", redis_url, "--duration", "6",
                  "--window-s", "60", "--metrics-every", "100")
    metrics = worker.strip().splitlines()[-1]
    assert f'"triggers": {triggers}' in metrics and '"failed_batches": 0' in metrics
    embedded = redis.Redis.from_url(redis_url).keys("duet:codes:*")
    assert embedded

    scores = _run("score.py", "--triton", triton.endpoints.grpc_url, "--redis", redis_url, *population,
                  "--requests", "8", "--candidates", "4")
    lines = scores.strip().splitlines()
    assert len(lines) == 9 and lines[-1].startswith("paths: ")
    assert any(" stored " in line for line in lines[:-1])
    assert all((" stored " in line) or (" fresh " in line) for line in lines[:-1])
