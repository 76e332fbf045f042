"""Online feature store of users' SIDE codes: ``user_id -> StoredCodes``, newest ``produced_at`` wins.

Backends: ``SqliteStore`` (embedded default) and ``RedisStore``; ``open_store(url)`` picks one.
A put whose ``produced_at`` is older than the stored record's is ignored, atomically, so at-least-once
redelivery of an old result never replaces a newer one (equal times overwrite: the same result again).

Example::

    with open_store("sqlite:///codes.db") as store:
        store.put(StoredCodes("u1", {"click": (3, 17)}, "v1", produced_at=time.time()))
        store.get_many(["u1", "u2"])  # {"u1": StoredCodes(...)}; misses are left out
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from duet_sdk.errors import ConfigError, DataError, StoreError
from duet_sdk.online._redis import connect, redis_errors, text
from duet_sdk.online.types import StoredCodes


def check_record(record: StoredCodes) -> StoredCodes:
    """``record`` if its fields are well formed, else DataError naming the user and the field."""
    if not isinstance(record, StoredCodes):
        raise DataError(f"expected StoredCodes, got {type(record).__name__}")
    who = f"StoredCodes(user_id={record.user_id!r})"
    if not isinstance(record.user_id, str) or not record.user_id:
        raise DataError(f"{who}.user_id: expected a non-empty str")
    if not isinstance(record.model_version, str):
        raise DataError(f"{who}.model_version: expected a str, got {record.model_version!r}")
    at = record.produced_at
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        raise DataError(f"{who}.produced_at: expected finite Unix seconds, got {at!r}")
    if not isinstance(record.codes, dict) or not record.codes:
        raise DataError(f"{who}.codes: expected a non-empty dict name -> tuple of codes, got {record.codes!r}")
    for name, codes in record.codes.items():
        if not isinstance(name, str) or not isinstance(codes, (tuple, list)) or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in codes):
            raise DataError(f"{who}.codes[{name!r}]: expected a tuple of non-negative ints, got {codes!r}")
    return record


def encode_codes(codes: dict[str, Sequence[int]]) -> str:
    return json.dumps({name: list(c) for name, c in codes.items()}, sort_keys=True)


def decode_codes(raw: str) -> dict[str, tuple[int, ...]]:
    return {name: tuple(c) for name, c in json.loads(raw).items()}


class FeatureStore(ABC):
    """``user_id -> StoredCodes``; a context manager that closes the backend."""

    @abstractmethod
    def get_many(self, user_ids: Sequence[str]) -> dict[str, StoredCodes]:
        """The stored records of ``user_ids`` that exist (misses are left out)."""

    @abstractmethod
    def put_many(self, records: Sequence[StoredCodes]) -> int:
        """Upsert ``records`` (validated first: DataError, nothing written); returns how many were written,
        those older than the stored record being skipped."""

    @abstractmethod
    def scan(self, cursor: str = "", count: int = 100) -> tuple[list[StoredCodes], str | None]:
        """About ``count`` records from ``cursor`` ("" to start) and the cursor to resume from (None at the
        end). Every record stored for the whole scan is returned at least once."""

    def version_counts(self) -> dict[str, int]:
        """How many users hold codes of each release (a full scan)."""
        counts: dict[str, int] = {}
        cursor: str | None = ""
        while cursor is not None:
            records, cursor = self.scan(cursor, 500)
            for r in records:
                counts[r.model_version] = counts.get(r.model_version, 0) + 1
        return counts

    def get(self, user_id: str) -> StoredCodes | None:
        return self.get_many([user_id]).get(user_id)

    def put(self, record: StoredCodes) -> bool:
        """True where written, False where the stored record is newer."""
        return self.put_many([record]) == 1

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _unique_latest(records: Iterable[StoredCodes]) -> list[StoredCodes]:
    """Validated records, one per user: the newest of each user's (later wins on equal times)."""
    latest: dict[str, StoredCodes] = {}
    for r in map(check_record, records):
        if r.user_id not in latest or r.produced_at >= latest[r.user_id].produced_at:
            latest[r.user_id] = r
    return list(latest.values())


class SqliteStore(FeatureStore):
    """SQLite file (WAL mode), table ``codes(user_id PRIMARY KEY, codes JSON, model_version, produced_at)``.

    One connection shared under a lock, so a store may be used from several threads; several
    processes may open the same file (WAL, 5 s busy timeout). ``":memory:"`` works within one store.
    """

    _UPSERT = ("INSERT INTO codes (user_id, codes, model_version, produced_at) VALUES (?, ?, ?, ?) "
               "ON CONFLICT(user_id) DO UPDATE SET codes = excluded.codes, "
               "model_version = excluded.model_version, produced_at = excluded.produced_at "
               "WHERE excluded.produced_at >= codes.produced_at")

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("CREATE TABLE IF NOT EXISTS codes (user_id TEXT PRIMARY KEY, codes TEXT NOT NULL, "
                               "model_version TEXT NOT NULL, produced_at REAL NOT NULL)")
        except sqlite3.Error as exc:
            raise StoreError(f"SqliteStore({self.path!r}): {exc}") from exc

    def get_many(self, user_ids: Sequence[str]) -> dict[str, StoredCodes]:
        ids = list(dict.fromkeys(user_ids))
        found: dict[str, StoredCodes] = {}
        with self._lock:
            for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._execute(f"SELECT user_id, codes, model_version, produced_at FROM codes "
                                     f"WHERE user_id IN ({marks})", chunk).fetchall()
                for user_id, codes, version, at in rows:
                    found[user_id] = StoredCodes(user_id, decode_codes(codes), version, at)
        return found

    def put_many(self, records: Sequence[StoredCodes]) -> int:
        rows = [(r.user_id, encode_codes(r.codes), r.model_version, float(r.produced_at))
                for r in _unique_latest(records)]
        if not rows:
            return 0
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                written = sum(self._conn.execute(self._UPSERT, row).rowcount for row in rows)
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"SqliteStore({self.path!r}).put_many: {exc}") from exc
                raise
        return written

    def scan(self, cursor: str = "", count: int = 100) -> tuple[list[StoredCodes], str | None]:
        """Users in ``user_id`` order after ``cursor`` (the last user returned)."""
        with self._lock:
            rows = self._execute("SELECT user_id, codes, model_version, produced_at FROM codes WHERE user_id > ? "
                                 "ORDER BY user_id LIMIT ?", (cursor, count)).fetchall()
        records = [StoredCodes(u, decode_codes(c), v, at) for u, c, v, at in rows]
        return records, (records[-1].user_id if len(records) == count else None)

    def version_counts(self) -> dict[str, int]:
        with self._lock:
            query = "SELECT model_version, COUNT(*) FROM codes GROUP BY model_version"
            return dict(self._execute(query, ()).fetchall())

    def _execute(self, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"SqliteStore({self.path!r}): {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# KEYS[1] the user's hash; ARGV codes JSON, model_version, produced_at, TTL ms (0: none). 1 written, 0 older.
_PUT_IF_NEWER = """
local stored = redis.call('HGET', KEYS[1], 'produced_at')
if stored and tonumber(stored) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'codes', ARGV[1], 'model_version', ARGV[2], 'produced_at', ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
"""


class RedisStore(FeatureStore):
    """One hash per user at ``prefix + user_id``: fields ``codes`` (JSON), ``model_version``, ``produced_at``.

    Args:
        client_or_url: ``redis://...`` or a ``redis.Redis``.
        prefix: key prefix.
        ttl_s: expire a user's codes this long after their last write; None keeps them.

    Batches are one pipeline (one round trip); the newer-wins check runs in a Lua script, atomic per user.
    """

    def __init__(self, client_or_url: Any, prefix: str = "duet:codes:", ttl_s: float | None = None) -> None:
        if ttl_s is not None and not (isinstance(ttl_s, (int, float)) and ttl_s > 0):
            raise ConfigError("ttl_s", "a positive number of seconds or None", ttl_s)
        self._owns_client = isinstance(client_or_url, str)
        self._redis = connect(client_or_url, "store")
        self.prefix, self._ttl_ms = prefix, 0 if ttl_s is None else max(1, round(ttl_s * 1000))

    @redis_errors
    def get_many(self, user_ids: Sequence[str]) -> dict[str, StoredCodes]:
        ids = list(dict.fromkeys(user_ids))
        pipe = self._redis.pipeline(transaction=False)
        for user_id in ids:
            pipe.hmget(self.prefix + user_id, "codes", "model_version", "produced_at")
        found: dict[str, StoredCodes] = {}
        for user_id, (codes, version, at) in zip(ids, pipe.execute()):
            if codes is not None:
                found[user_id] = StoredCodes(user_id, decode_codes(text(codes)), text(version), float(text(at)))
        return found

    @redis_errors
    def scan(self, cursor: str = "", count: int = 100) -> tuple[list[StoredCodes], str | None]:
        """Redis ``SCAN`` over ``prefix*`` (cursor: SCAN's, as a string)."""
        position, keys = self._redis.scan(int(cursor or 0), match=self.prefix + "*", count=count)
        users = [text(k)[len(self.prefix) :] for k in keys]
        found = self.get_many(users)
        return [found[u] for u in users if u in found], (str(position) if int(position) else None)

    @redis_errors
    def put_many(self, records: Sequence[StoredCodes]) -> int:
        latest = _unique_latest(records)
        if not latest:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for r in latest:  # EVAL, not EVALSHA: a pipeline of scripts would first ask SCRIPT EXISTS
            pipe.eval(_PUT_IF_NEWER, 1, self.prefix + r.user_id,
                      encode_codes(r.codes), r.model_version, repr(float(r.produced_at)), self._ttl_ms)
        return sum(int(w) for w in pipe.execute())

    def close(self) -> None:
        if self._owns_client:
            self._redis.close()


def open_store(url: str | Path, **options: Any) -> FeatureStore:
    """``sqlite:///PATH`` or a plain path -> SqliteStore; ``redis://``, ``rediss://``, ``unix://`` -> RedisStore
    (``options``: its ``prefix``, ``ttl_s``). ConfigError naming ``store`` otherwise."""
    accepted = "sqlite:///PATH, a file path, or a redis://, rediss:// or unix:// URL"
    if isinstance(url, Path):
        url = str(url)
    if not isinstance(url, str) or not url:
        raise ConfigError("store", accepted, url)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url, **options)
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        path = url[len("sqlite:///") :]
    elif "://" not in url and not url.startswith("sqlite:"):
        path = url
    else:
        raise ConfigError("store", accepted, url)
    if options:
        raise ConfigError("store options", "none for SqliteStore", options)
    return SqliteStore(path)
