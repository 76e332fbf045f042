"""Deterministic fake ``embed`` of the ETI tests, and a worker process for the kill test.

Run as ``python eti_proc.py REDIS_URL MARKER_DIR``: one ETI step whose embed writes
``MARKER_DIR/embedding`` and then blocks until ``MARKER_DIR/release`` exists.
"""

import sys
import time
import zlib
from pathlib import Path

from duet_sdk.interface import Embedding, UserHistory

STREAMS = {"click": 8, "conv": 4}


def fake_codes(user_id: str) -> dict[str, tuple[int, ...]]:
    """Codes that depend only on the user id."""
    crc = zlib.crc32(user_id.encode())
    return {"click": (crc % 256, (crc >> 8) % 256), "conv": ((crc >> 16) % 256,)}


def fake_embed(histories: list[UserHistory], version: str = "v1") -> list[Embedding]:
    return [Embedding(h.user_id, fake_codes(h.user_id), {}, version) for h in histories]


def blocking_embed(marker_dir: Path):
    """An embed that announces itself, then waits for the release file (the test kills it first)."""
    def embed(histories: list[UserHistory]) -> list[Embedding]:
        tmp = marker_dir / "embedding.tmp"  # written, then renamed: the test never reads it half-written
        tmp.write_text(",".join(sorted(h.user_id for h in histories)))
        tmp.rename(marker_dir / "embedding")
        while not (marker_dir / "release").exists():
            time.sleep(0.01)
        return fake_embed(histories)
    return embed


def main(url: str, marker_dir: str) -> None:
    from duet_sdk.online import EtiConfig, EtiWorker, RedisHistory, RedisStore, RedisStreamQueue, RedisThrottle
    worker = EtiWorker(RedisStreamQueue(url, consumer="doomed"), RedisThrottle(url, window_s=60.0),
                       RedisHistory(url, STREAMS), RedisStore(url), blocking_embed(Path(marker_dir)),
                       EtiConfig(max_batch=16, max_wait_s=0.2))
    worker.run_once()


if __name__ == "__main__":
    main(*sys.argv[1:])
