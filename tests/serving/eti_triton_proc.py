"""An ETI worker process for the kill test: ``python eti_triton_proc.py REDIS_URL GRPC_URL MARKER_DIR NOW``.

Its embed calls the real duet_upstream, writes ``MARKER_DIR/embedded``, then hangs, so the test kills
it after Triton answered but before the codes were written and the triggers acknowledged.
"""

import sys
import threading
from pathlib import Path

from duet_sdk.client import DuetClient
from duet_sdk.online import EtiConfig, EtiWorker, RedisHistory, RedisStore, RedisStreamQueue, RedisThrottle


def main(redis_url: str, grpc_url: str, marker_dir: str, now: str) -> None:
    with DuetClient(grpc_url, timeout_s=30) as client:
        interface = client.connect()

        def embed_then_hang(histories):
            embeddings = client.embed(histories)
            (Path(marker_dir) / "embedded").write_text(str(len(embeddings)))
            threading.Event().wait()
            return embeddings

        history = RedisHistory(redis_url, {s: info.max_len for s, info in interface.streams.items()})
        worker = EtiWorker(RedisStreamQueue(redis_url, consumer="doomed"), RedisThrottle(redis_url, window_s=60.0),
                           history, RedisStore(redis_url), embed_then_hang, EtiConfig(max_batch=16, max_wait_s=0.2),
                           clock=lambda: int(now))
        worker.run_once()


if __name__ == "__main__":
    main(*sys.argv[1:])
