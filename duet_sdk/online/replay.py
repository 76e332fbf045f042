"""Event data as online traffic: users' histories and candidates from an ``EventDataset``, and a replay
of its events into a ``HistoryStore`` plus trigger queue at a given rate.

User IDs are ``str(table.user_ids[u])``. Replayed events are re-timed: a preloaded history keeps its
spacing but is shifted to end ``now``; a live event is stamped with the wall-clock time it is sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from duet_sdk.data.events import EventDataset, EventTable
from duet_sdk.interface import Candidates, Event, UserHistory
from duet_sdk.online.history import HistoryStore
from duet_sdk.online.queue import TriggerQueue


def user_id(table: EventTable, u: int) -> str:
    return str(int(table.user_ids[u]))


def stream_events(table: EventTable, stream: str, u: int, before: int | None = None) -> list[Event]:
    """User ``u``'s events of ``stream`` oldest first, those strictly before ``before`` if given."""
    events = table.streams[stream]
    lo, hi = int(events.offsets[u]), int(events.offsets[u + 1])
    ts, ids = events.timestamps[lo:hi], events.ids[lo:hi]
    keep = slice(None) if before is None else ts < before
    return [Event(int(t), tuple(int(x) for x in row)) for t, row in zip(ts[keep], ids[keep])]


def user_history(table: EventTable, u: int, request_time: int) -> UserHistory:
    """User ``u`` at ``request_time``: static features and every stream's events strictly before it."""
    return UserHistory(user_id(table, u), int(request_time), [int(x) for x in table.static_sparse[u]],
                       [float(x) for x in table.static_dense[u]],
                       {s: stream_events(table, s, u, request_time) for s in table.streams})


def ranker_requests(dataset: EventDataset, count: int, max_candidates: int) -> list[tuple[UserHistory, Candidates]]:
    """Ranking requests of ``count`` validation users: each user's history at its first validation
    request time and, as candidates, the items of its validation rows (at most ``max_candidates``)."""
    rows = dataset.ranker_val
    requests = []
    for u in np.unique(rows.user_index)[:count]:
        mine = np.flatnonzero(rows.user_index == u)[:max_candidates]
        candidates = Candidates([[int(x) for x in rows.item_sparse[i]] for i in mine],
                                [[float(x) for x in rows.item_dense[i]] for i in mine])
        requests.append((user_history(dataset.table, int(u), int(rows.request_time[mine].min())), candidates))
    return requests


def store_histories(history: HistoryStore, users: Iterable[UserHistory]) -> None:
    """Each user's profile and events into ``history`` (online storage, as ETI reads it)."""
    for user in users:
        history.set_profile(user.user_id, user.static_sparse, user.static_dense)
        for stream, events in user.streams.items():
            if events:
                history.append(user.user_id, stream, events)


def preload(table: EventTable, users: Sequence[int], history: HistoryStore, split: int, now: int) -> None:
    """Profiles and the events before ``split`` of ``users``, shifted by ``now - split``."""
    shift = now - split
    shifted = (replace(u, streams={s: [Event(e.ts + shift, e.ids) for e in events] for s, events in u.streams.items()})
               for u in (user_history(table, u, split) for u in users))
    store_histories(history, shifted)


@dataclass(frozen=True)
class LiveEvent:
    user: int
    stream: str
    ts: int
    ids: tuple[int, ...]


def live_events(table: EventTable, users: Sequence[int], split: int) -> list[LiveEvent]:
    """Events of ``users`` at or after ``split``, in time order (the traffic to replay)."""
    out = []
    for u in users:
        for stream in table.streams:
            events = table.streams[stream]
            lo, hi = int(events.offsets[u]), int(events.offsets[u + 1])
            for t, row in zip(events.timestamps[lo:hi], events.ids[lo:hi]):
                if t >= split:
                    out.append(LiveEvent(u, stream, int(t), tuple(int(x) for x in row)))
    return sorted(out, key=lambda e: (e.ts, e.user, e.stream))


@dataclass
class ReplayStats:
    events: int = 0
    triggers: int = 0
    seconds: float = 0.0


def replay(table: EventTable, events: Sequence[LiveEvent], history: HistoryStore, queue: TriggerQueue,
           rate: float, qualifying: Sequence[str], clock: Callable[[], float] = time.time,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[ReplayStats]:
    """Send ``events`` at ``rate`` per second (0: as fast as possible): append each to the user's history
    (stamped now), then publish a trigger if its stream is ``qualifying``. Yields running stats per event."""
    stats, start = ReplayStats(), time.monotonic()
    for i, event in enumerate(events):
        if rate > 0:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                sleep(delay)
        now = int(clock())
        uid = user_id(table, event.user)
        history.append(uid, event.stream, [Event(now, event.ids)])
        stats.events += 1
        if event.stream in qualifying:
            queue.publish(uid, event.stream, now)
            stats.triggers += 1
        stats.seconds = time.monotonic() - start
        yield stats
