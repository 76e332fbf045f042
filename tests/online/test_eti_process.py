"""A real worker process killed (SIGKILL) after reading, before acking, loses no trigger after restart."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eti_proc import STREAMS, fake_codes, fake_embed

from duet_sdk.online import EtiConfig, EtiWorker, RedisHistory, RedisStore, RedisStreamQueue, RedisThrottle

HERE = Path(__file__).parent


def wait_for(path: Path, process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"worker exited early ({process.returncode}): {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"worker did not reach embed in {timeout_s}s")
        time.sleep(0.02)


@pytest.mark.slow
def test_worker_killed_mid_batch_loses_no_trigger_after_restart(redis_url, tmp_path):
    history = RedisHistory(redis_url, STREAMS)
    users = [f"user-{i}" for i in range(5)]
    for u in users:
        history.set_profile(u, [1], [0.0])
    producer = RedisStreamQueue(redis_url, consumer="producer")
    for u in users:
        producer.publish(u, "click", 1_000)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    doomed = subprocess.Popen([sys.executable, str(HERE / "eti_proc.py"), redis_url, str(tmp_path)],
                              env=env, stderr=subprocess.PIPE, text=True)
    wait_for(tmp_path / "embedding", doomed)  # it has read, admitted and is inside embed
    doomed.send_signal(signal.SIGKILL)
    assert doomed.wait(timeout=10) == -signal.SIGKILL
    assert (tmp_path / "embedding").read_text() == ",".join(users)
    assert producer.pending() == 5  # read, never acked
    store = RedisStore(redis_url)
    assert store.get_many(users) == {}

    # The restarted worker: same throttle (the dead one's windows are still open for 60 s).
    restarted = EtiWorker(RedisStreamQueue(redis_url, consumer="restarted"), RedisThrottle(redis_url, 60.0),
                          history, store, fake_embed, EtiConfig(max_batch=16, max_wait_s=0.02, reclaim_idle_s=0.1))
    time.sleep(0.15)
    assert restarted.run_once() == 5
    assert {u: r.codes for u, r in store.get_many(users).items()} == {u: fake_codes(u) for u in users}
    assert restarted.metrics.reclaimed == 5 and producer.pending() == 0
