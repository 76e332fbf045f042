"""Event-triggered inference (ETI) worker: triggers -> latest histories -> ``embed`` -> stored SIDE codes.

One ``run_once`` step:
  1. reclaim triggers pending longer than ``reclaim_idle_s`` (a dead or hung worker's); those delivered
     more than ``max_deliveries`` times are moved to the dead-letter stream instead (poison),
  2. read new triggers, waiting up to ``max_wait_s`` to fill ``max_batch``,
  3. throttle new triggers per user: the first in a window is admitted; the rest are deferred to a
     trailing embedding at the end of the window (``Throttle.defer``), then acked and counted as
     ``throttled``; reclaimed triggers bypass the throttle, since their window was opened by an
     embedding that never got stored,
  4. add the users whose deferred (trailing) embedding is due (each opens a new window),
  5. one group per user (further triggers of a user in the batch are ``coalesced`` into it),
  6. read histories at ``request_time = int(now)``; users without a profile are acked (``missing_profile``),
  7. ``embed`` and ``put_many`` StoredCodes(produced_at=now), in chunks of at most ``max_batch`` users,
  8. ack a chunk's triggers only after its write.

Each of these is one call for the whole step or chunk (``Throttle.admit_many``, ``defer_many``,
``release_many``; one ``histories``, ``put_many`` and ``ack`` per chunk), so with the Redis backends a
step costs about ten round trips whatever its number of users.

Failures: where a chunk fails for a reason of its own users (bad input, a profile holding NaN or 1e39,
a corrupt record: anything but a transient error), each of its users is retried alone, so good users
are stored and acked and a user that fails alone is isolated: its triggers go to the dead-letter stream
(``poison_users``, ``dead_lettered``). A transient error (Redis or Triton unavailable, a deadline)
leaves the chunk pending for reclaim, releases the windows it opened, puts its trailing users back,
counts ``failed_batches`` and propagates.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from duet_sdk.client.errors import TRANSIENT
from duet_sdk.errors import DataError, StoreError
from duet_sdk.interface import Embedding, UserHistory
from duet_sdk.online.eti_metrics import EtiMetrics
from duet_sdk.online.history import HistoryStore
from duet_sdk.online.queue import Trigger, TriggerQueue
from duet_sdk.online.store import FeatureStore
from duet_sdk.online.throttle import Deferred, Throttle
from duet_sdk.online.types import StoredCodes
from duet_sdk.validation import require_int, require_number

log = logging.getLogger(__name__)

Embed = Callable[[list[UserHistory]], list[Embedding]]
# Errors that say nothing about the users of a batch: leave it pending and retry the whole step later.
TRANSIENT_ERRORS = (*TRANSIENT, StoreError, ConnectionError, TimeoutError)


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
        max_deliveries: a reclaimed trigger delivered more often than this goes to the dead-letter stream.
    """

    max_batch: int = 64
    max_wait_s: float = 0.05
    reclaim_idle_s: float = 30.0
    reclaim_every_s: float = 1.0
    error_backoff_s: float = 0.5
    max_deliveries: int = 5

    def __post_init__(self) -> None:
        require_int("max_batch", self.max_batch, 1)
        require_int("max_deliveries", self.max_deliveries, 1)
        for name in ("max_wait_s", "reclaim_idle_s", "reclaim_every_s", "error_backoff_s"):
            require_number(name, getattr(self, name), 0.0, "a non-negative number of seconds")


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
        """A snapshot of the counters (with the queue's Redis recoveries)."""
        with self._lock:
            m = copy.deepcopy(self._metrics)
        m.redis_recoveries, m.lost_window_s = self.queue.recoveries, round(self.queue.lost_window_s, 3)
        return m

    def run(self, stop: threading.Event) -> None:
        """``run_once`` until ``stop`` is set; a failed step is logged and retried after a pause."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - the worker outlives a failed step
                log.error("ETI step failed; its triggers stay pending for reclaim: %s: %s", type(exc).__name__, exc)
                stop.wait(self.config.error_backoff_s)

    def run_once(self) -> int:
        """One step; returns how many users got codes written. Raises a transient error of history,
        embed or store (the step's triggers stay pending)."""
        reclaimed = self._drop_poison(self._reclaim())
        fresh = self._read(self.config.max_batch - len(reclaimed), wait=not reclaimed)
        now = self.clock()
        with self._lock:
            self._metrics.triggers += len(reclaimed) + len(fresh)
            self._metrics.reclaimed += len(reclaimed)
        groups, opened = self._admit(reclaimed, fresh, now)
        trailing = self._trailing(groups, opened, now)
        users = list(groups)
        written = 0
        for start in range(0, len(users), self.config.max_batch):
            chunk = users[start:start + self.config.max_batch]
            try:
                written += self._process(chunk, groups, opened, trailing, now)
            except Exception:  # the chunks not reached keep their triggers pending and their deferrals
                rest = users[start + self.config.max_batch:]
                self._release([u for u in rest if u in opened])
                self.throttle.redefer([trailing[u] for u in rest if u in trailing], now)
                raise
        return written

    def _reclaim(self) -> list[Trigger]:
        c, now = self.config, time.monotonic()
        if now - self._last_reclaim < c.reclaim_every_s:
            return []
        self._last_reclaim = now
        return self.queue.reclaim(round(c.reclaim_idle_s * 1000), c.max_batch)

    def _drop_poison(self, reclaimed: list[Trigger]) -> list[Trigger]:
        """Dead-letter reclaimed triggers delivered more than ``max_deliveries`` times; returns the rest."""
        limit = self.config.max_deliveries
        poison = [t for t in reclaimed if t.deliveries > limit]
        if poison:
            self.queue.dead_letter(poison, f"delivered more than {limit} times")
            log.warning("dead-lettered %d triggers delivered more than %d times (users %s)", len(poison), limit,
                        sorted({t.user_id for t in poison})[:10])
            with self._lock:
                self._metrics.dead_lettered += len(poison)
        return [t for t in reclaimed if t.deliveries <= limit]

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
        """Per user, the triggers to embed for (reclaimed first); defers then acks the throttled ones.
        Returns (user -> triggers, users whose window this step opened). One throttle call for the
        step's users, one for its deferrals."""
        opened = self.throttle.admit_many(list(dict.fromkeys(t.user_id for t in (*reclaimed, *fresh))), now)
        groups: dict[str, list[Trigger]] = {}
        throttled: list[Trigger] = []
        coalesced = 0
        for redelivered, triggers in ((True, reclaimed), (False, fresh)):
            for t in triggers:
                if t.user_id in groups:
                    groups[t.user_id].append(t)
                    coalesced += 1
                elif t.user_id in opened or redelivered:
                    groups[t.user_id] = [t]
                else:
                    throttled.append(t)
        # recorded before the ack: a crash in between re-delivers, never drops
        self.throttle.defer_many([Deferred(t.user_id, t.event_ts, 1) for t in throttled], now)
        self.queue.ack([t.entry_id for t in throttled])
        with self._lock:
            self._metrics.throttled += len(throttled)
            self._metrics.coalesced += coalesced
        return groups, opened

    def _trailing(self, groups: dict[str, list[Trigger]], opened: set[str], now: float) -> dict[str, Deferred]:
        """Users whose throttle window ended with deferred triggers, added to ``groups`` (no triggers of
        their own; a user already in the step shares its embedding). Each opens a new window."""
        trailing = {d.user_id: d for d in self.throttle.due(now, self.config.max_batch)}
        new = [u for u in trailing if u not in groups]
        groups.update((u, []) for u in new)
        opened |= self.throttle.admit_many(new, now)
        return trailing

    def _process(self, users: list[str], groups: dict[str, list[Trigger]], opened: set[str],
                 trailing: dict[str, Deferred], now: float) -> int:
        """Embed and store ``users`` (at most max_batch), then ack their triggers; returns codes written.
        A non-transient failure isolates the failing users (module docstring)."""
        try:
            found = self.history.histories(users, request_time=int(now))
            have = {h.user_id for h in found}
            records = self._embed(found, now) if found else []
            written = self.store.put_many(records) if records else 0
        except TRANSIENT_ERRORS:
            with self._lock:
                self._metrics.failed_batches += 1
            self._release([u for u in users if u in opened])
            self.throttle.redefer([trailing[u] for u in users if u in trailing], now)
            raise
        except Exception as exc:  # noqa: BLE001 - caused by the batch's own users: isolate them
            if len(users) > 1:
                return sum(self._process([u], groups, opened, trailing, now) for u in users)
            self._isolate(users[0], groups[users[0]], exc)
            return 0
        missing = [t.entry_id for u in users if u not in have for t in groups[u]]
        self.queue.ack(missing + [t.entry_id for u in have for t in groups[u]])
        with self._lock:
            m = self._metrics
            m.missing_profile += len(missing)
            m.embedded += len(records)
            m.written += written
            m.trailing += sum(1 for u in have if u in trailing)
            if found:
                m.batch_sizes[len(found)] += 1
            for u in have:
                for t in groups[u]:
                    m.staleness_s.add(now - t.event_ts)
                if u in trailing:
                    m.staleness_s.add(now - trailing[u].first_ts, trailing[u].count)
        return written

    def _isolate(self, user: str, triggers: list[Trigger], exc: Exception) -> None:
        """``user`` failed alone: dead-letter its triggers (its window stays open: no hot retry loop)."""
        reason = f"{type(exc).__name__}: {exc}"
        self.queue.dead_letter(triggers, reason)
        log.warning("user %r isolated from its batch, %d triggers dead-lettered: %s", user, len(triggers), reason[:300])
        with self._lock:
            self._metrics.poison_users += 1
            self._metrics.dead_lettered += len(triggers)

    def _embed(self, histories: list[UserHistory], now: float) -> list[StoredCodes]:
        embeddings = self.embed(histories)
        asked = sorted(h.user_id for h in histories)
        got = sorted(e.user_id for e in embeddings)
        if got != asked:
            raise DataError(f"embed returned embeddings of users {got}, expected one per history {asked}")
        return [StoredCodes(e.user_id, e.codes, e.model_version, produced_at=now) for e in embeddings]

    def _release(self, users: Sequence[str]) -> None:
        try:
            self.throttle.release_many(users)
        except Exception:  # noqa: BLE001 - the batch's own error is the one to report
            log.exception("could not release the throttle windows of users %s", list(users)[:10])
