"""Event-triggered inference (ETI) worker: triggers -> latest histories -> ``embed`` -> stored SIDE codes.

One ``run_once`` step:
  1. reclaim triggers pending longer than ``reclaim_idle_s`` (a dead or hung worker's),
  2. read new triggers, waiting up to ``max_wait_s`` to fill ``max_batch``,
  3. throttle new triggers per user: the first in a window is admitted, the rest are acked and counted
     as ``throttled`` (the admitted embedding reads the latest history); reclaimed triggers bypass the
     throttle, since their window was opened by an embedding that never got stored,
  4. one group per user (further triggers of a user in the batch are ``coalesced`` into it),
  5. read histories at ``request_time = int(now)``; users without a profile are acked (``missing_profile``),
  6. ``embed`` and ``put_many`` StoredCodes(produced_at=now), in chunks of at most ``max_batch`` users,
  7. ack a chunk's triggers only after its write. Where history, embed or write raises, nothing of the
     chunk is acked (its triggers stay pending for reclaim), the windows it opened are released so that
     new triggers of those users are admitted, ``failed_batches`` is counted and the error propagates.

The store ignores writes older than what it holds, so redelivered work never replaces newer codes.

Example::

    worker = EtiWorker(queue, InMemoryThrottle(5.0), history, store, embed, EtiConfig(max_batch=64))
    threading.Thread(target=worker.run, args=(stop,)).start()
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

from duet_sdk.interface import Embedding, UserHistory
from duet_sdk.errors import DataError
from duet_sdk.online.history import HistoryStore
from duet_sdk.online.queue import Trigger, TriggerQueue
from duet_sdk.online.store import FeatureStore
from duet_sdk.online.throttle import Throttle
from duet_sdk.online.types import StoredCodes
from duet_sdk.validation import require_int, require_number

log = logging.getLogger(__name__)

Embed = Callable[[list[UserHistory]], list[Embedding]]


@dataclass(frozen=True)
class EtiConfig:
    """Tunables of an EtiWorker.

    Args:
        max_batch: most triggers read per step and most users per ``embed`` call.
        max_wait_s: longest wait for a batch to fill.
        reclaim_idle_s: pending this long, a trigger is taken over; keep it above the slowest embed + write,
            or live workers' triggers get processed twice (harmless, wasted).
        reclaim_every_s: how often to look for such triggers (0: every step).
        error_backoff_s: pause of ``run`` after a failed step.
    """

    max_batch: int = 64
    max_wait_s: float = 0.05
    reclaim_idle_s: float = 30.0
    reclaim_every_s: float = 1.0
    error_backoff_s: float = 0.5

    def __post_init__(self) -> None:
        require_int("max_batch", self.max_batch, 1)
        for name in ("max_wait_s", "reclaim_idle_s", "reclaim_every_s", "error_backoff_s"):
            require_number(name, getattr(self, name), 0.0, "a non-negative number of seconds")


@dataclass
class Summary:
    """Count, mean and max of a series, and percentiles over its last ``keep`` values."""

    keep: int = 10_000
    count: int = 0
    total: float = 0.0
    max: float = 0.0
    recent: deque = field(default_factory=deque)

    def add(self, x: float) -> None:
        self.max = x if self.count == 0 else max(self.max, x)
        self.count += 1
        self.total += x
        self.recent.append(x)
        if len(self.recent) > self.keep:
            self.recent.popleft()

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank ``q``-th percentile (0..100) of the recent values; 0.0 when empty."""
        values = sorted(self.recent)
        return values[min(len(values) - 1, int(q / 100 * len(values)))] if values else 0.0


@dataclass
class EtiMetrics:
    """Counters of an EtiWorker since it started.

    Each of the ``triggers`` read (``reclaimed`` among them) is acked as ``throttled``, acked as
    ``missing_profile``, acked with its user's stored codes (``coalesced`` counts those that shared
    another trigger's embedding in the batch), or left pending by one of the ``failed_batches``.
    ``embedded``: users embedded, of which ``written`` were stored (the rest were older than the stored
    codes). ``batch_sizes``: users per embed call -> calls. ``staleness_s``: per trigger acked with
    stored codes, produced_at - event_ts.
    """

    triggers: int = 0
    reclaimed: int = 0
    throttled: int = 0
    coalesced: int = 0
    missing_profile: int = 0
    embedded: int = 0
    written: int = 0
    failed_batches: int = 0
    batch_sizes: Counter = field(default_factory=Counter)
    staleness_s: Summary = field(default_factory=Summary)

    def to_dict(self) -> dict:
        """JSON-able: the counters, ``batch_sizes`` by size, staleness count/mean/p50/p95/max."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("batch_sizes", "staleness_s")}
        s = self.staleness_s
        return out | {"batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                      "staleness_s": {"count": s.count, "mean": round(s.mean, 3), "p50": s.percentile(50),
                                      "p95": s.percentile(95), "max": s.max}}


class EtiWorker:
    """Keeps users' stored SIDE codes fresh as their events arrive (see the module docstring).

    Args:
        queue: triggers, read as this worker's consumer.
        throttle: per-user windows, shared by the workers when it is a RedisThrottle.
        history: profiles and events to embed.
        store: where codes go.
        embed: histories -> one Embedding per history (any order, matched by ``user_id``).
        config: batch and reclaim tunables.
        clock: Unix seconds, for ``request_time``, ``produced_at`` and the throttle.
    """

    def __init__(self, queue: TriggerQueue, throttle: Throttle, history: HistoryStore, store: FeatureStore,
                 embed: Embed, config: EtiConfig = EtiConfig(), clock: Callable[[], float] = time.time) -> None:
        self.queue, self.throttle, self.history, self.store = queue, throttle, history, store
        self.embed, self.config, self.clock = embed, config, clock
        self._metrics = EtiMetrics()
        self._lock = threading.Lock()  # guards _metrics against readers of ``metrics``
        self._last_reclaim = float("-inf")

    @property
    def metrics(self) -> EtiMetrics:
        """A snapshot of the counters."""
        with self._lock:
            return copy.deepcopy(self._metrics)

    def run(self, stop: threading.Event) -> None:
        """``run_once`` until ``stop`` is set; a failed step is logged and retried after a pause."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("ETI step failed; its triggers stay pending for reclaim")
                stop.wait(self.config.error_backoff_s)

    def run_once(self) -> int:
        """One step; returns how many users got codes written. Raises what history, embed or store raised."""
        reclaimed = self._reclaim()
        fresh = self._read(self.config.max_batch - len(reclaimed), wait=not reclaimed)
        now = self.clock()
        with self._lock:
            self._metrics.triggers += len(reclaimed) + len(fresh)
            self._metrics.reclaimed += len(reclaimed)
        groups, opened = self._admit(reclaimed, fresh, now)
        users = list(groups)
        written = 0
        for start in range(0, len(users), self.config.max_batch):
            chunk = users[start:start + self.config.max_batch]
            written += self._process(chunk, groups, opened, now)
        return written

    def _reclaim(self) -> list[Trigger]:
        c, now = self.config, time.monotonic()
        if now - self._last_reclaim < c.reclaim_every_s:
            return []
        self._last_reclaim = now
        return self.queue.reclaim(round(c.reclaim_idle_s * 1000), c.max_batch)

    def _read(self, room: int, wait: bool) -> list[Trigger]:
        """Up to ``room`` new triggers, reading until full or ``max_wait_s`` passed (no wait: one try)."""
        deadline = time.monotonic() + (self.config.max_wait_s if wait else 0.0)
        out: list[Trigger] = []
        while len(out) < room:
            block_ms = max(0, round((deadline - time.monotonic()) * 1000))
            got = self.queue.read(room - len(out), block_ms)
            if not got:
                break
            out += got
        return out

    def _admit(self, reclaimed: list[Trigger], fresh: list[Trigger], now: float):
        """Per user, the triggers to embed for (reclaimed first); acks the throttled ones.
        Returns (user -> triggers, users whose window this step opened)."""
        groups: dict[str, list[Trigger]] = {}
        opened: set[str] = set()
        throttled: list[str] = []
        coalesced = 0
        for redelivered, triggers in ((True, reclaimed), (False, fresh)):
            for t in triggers:
                if t.user_id in groups:
                    groups[t.user_id].append(t)
                    coalesced += 1
                elif self.throttle.admit(t.user_id, now):
                    groups[t.user_id] = [t]
                    opened.add(t.user_id)
                elif redelivered:
                    groups[t.user_id] = [t]
                else:
                    throttled.append(t.entry_id)
        self.queue.ack(throttled)
        with self._lock:
            self._metrics.throttled += len(throttled)
            self._metrics.coalesced += coalesced
        return groups, opened

    def _process(self, users: list[str], groups: dict[str, list[Trigger]], opened: set[str], now: float) -> int:
        """Embed and store ``users`` (at most max_batch), then ack their triggers; returns codes written."""
        try:
            found = self.history.histories(users, request_time=int(now))
            have = {h.user_id for h in found}
            missing = [t.entry_id for u in users if u not in have for t in groups[u]]
            self.queue.ack(missing)
            with self._lock:
                self._metrics.missing_profile += len(missing)
            records = self._embed(found, now) if found else []
            written = self.store.put_many(records) if records else 0
        except Exception:
            with self._lock:
                self._metrics.failed_batches += 1
            self._release([u for u in users if u in opened])
            raise
        self.queue.ack([t.entry_id for u in have for t in groups[u]])
        with self._lock:
            m = self._metrics
            m.embedded += len(records)
            m.written += written
            if found:
                m.batch_sizes[len(found)] += 1
            for u in have:
                for t in groups[u]:
                    m.staleness_s.add(now - t.event_ts)
        return written

    def _embed(self, histories: list[UserHistory], now: float) -> list[StoredCodes]:
        embeddings = self.embed(histories)
        asked = sorted(h.user_id for h in histories)
        got = sorted(e.user_id for e in embeddings)
        if got != asked:
            raise DataError(f"embed returned embeddings of users {got}, expected one per history {asked}")
        return [StoredCodes(e.user_id, e.codes, e.model_version, produced_at=now) for e in embeddings]

    def _release(self, users: Sequence[str]) -> None:
        for u in users:
            try:
                self.throttle.release(u)
            except Exception:  # the batch's own error is the one to report
                log.exception("could not release the throttle window of user %r", u)
