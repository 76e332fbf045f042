"""clients/loadgen.py across Redis faults: a restart mid-replay is ridden out by retries with backoff;
a Redis that stays away ends the program with a one-line error and exit status 1, not a traceback."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from duet_sdk.online import RedisServer

LOADGEN = Path(__file__).resolve().parents[2] / "clients" / "loadgen.py"
pytestmark = pytest.mark.slow


def _start(url: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(LOADGEN), "--redis", url, "--users", "20", "--seed", "1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})


def _wait_for_replay(process: subprocess.Popen) -> int:
    """Waits for the replay to start; returns how many events it replays."""
    for line in process.stdout:
        if "replaying" in line:
            return int(line.split("replaying ")[1].split()[0])
    raise AssertionError(f"loadgen never started replaying: {process.stderr.read()}")


def test_loadgen_rides_out_a_redis_restart():
    with RedisServer() as server:
        process = _start(server.url, "--rate", "60", "--events", "240")
        events = _wait_for_replay(process)
        assert events > 100
        time.sleep(1.0)
        server.restart()
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert f"done: {events} events" in out and "Traceback" not in err


def test_loadgen_stops_with_an_error_when_redis_stays_away():
    server = RedisServer().start()
    process = _start(server.url, "--rate", "60", "--events", "600", "--retries", "2")
    _wait_for_replay(process)
    server.stop()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert err.startswith("loadgen: error: ") and "Traceback" not in err
