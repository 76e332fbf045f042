"""Train/validation splits of a sorted event log: per-user time split and global temporal split.

A split gives every user label *windows*: a request time r_u (history is every event strictly before
it), the window end e_u (label events lie in [r_u, e_u)), and whether the user is eligible.

* ``user_windows`` (per-user time split): r_u is the time of the user's event at index
  ``floor(history_fraction * n_u)``; e_u is unbounded; users with at least ``min_events`` events are
  eligible. Train and validation users are then told apart by ``validation_users`` (a hash of the raw id).
* ``global_windows`` (global temporal split, what production sees): training uses only events before
  T1 (the per-user split applied to them, windows end at T1); validation labels with the events in
  [T1, T2), requesting each user with history before T1 at their first event in it: the history is
  exactly the events before T1, and the time since the last event is measured as in training (where
  a request is at the first label event too), not from T1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duet_sdk.data.events import MAX_TIMESTAMP
from duet_sdk.data.sorting import SortedEvents
from duet_sdk.data.spill import chunks


@dataclass
class Windows:
    """Per user (U,): ``request`` int64 time r_u, ``end`` int64 window end e_u, ``eligible`` bool."""

    request: np.ndarray
    end: np.ndarray
    eligible: np.ndarray


def _counts_before(events: SortedEvents, t: int) -> np.ndarray:
    """(U,) each user's number of events with time < ``t``."""
    out = np.zeros(events.num_users, dtype=np.int64)
    for c in chunks(len(events)):
        out += np.bincount(events.user[c][events.ts[c] < t], minlength=events.num_users)
    return out


def _session_starts(events: SortedEvents, gap: int) -> np.ndarray:
    """Sorted global indices k of events that open a session: the user's previous event is at least
    ``gap`` seconds earlier (a user's first event is not one: it has no history before it)."""
    out = [np.zeros(0, dtype=np.int64)]
    for c in chunks(len(events)):
        lo = max(c.start - 1, 0)
        ts, user = np.asarray(events.ts[lo : c.stop]), np.asarray(events.user[lo : c.stop])
        opens = (np.diff(ts) >= gap) & (np.diff(user) == 0)
        out.append(np.arange(lo + 1, c.stop, dtype=np.int64)[opens])
    return np.concatenate(out)


def _cutoffs(
    events: SortedEvents, counts: np.ndarray, history_fraction: float, default: int, session_gap: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(U,) request times and (U,) bool "is at a session start".

    The request is the time of the user's event at index floor(history_fraction * counts) among their
    first ``counts`` events (``default`` if none). With ``session_gap`` > 0 it is the start of the session
    (an event at least ``session_gap`` s after the one before) nearest that index, where the user has
    one among those events; others keep the fraction cutoff and are flagged False."""
    split = np.minimum(np.floor(history_fraction * counts).astype(np.int64), counts - 1)
    out = np.full(events.num_users, default, dtype=np.int64)
    has = counts > 0
    start = events.offsets[:-1]
    index = start + split
    at_session = np.zeros(events.num_users, dtype=bool)
    if session_gap > 0:
        opens = _session_starts(events, session_gap)
        if len(opens):
            j = np.searchsorted(opens, index)
            below, above = opens[np.maximum(j - 1, 0)], opens[np.minimum(j, len(opens) - 1)]
            in_range = lambda k: (k > start) & (k < start + counts)  # noqa: E731
            ok_below, ok_above = in_range(below) & (j > 0), in_range(above) & (j < len(opens))
            nearest = np.where(ok_below & (~ok_above | (index - below <= above - index)), below, above)
            at_session = has & (ok_below | ok_above)
            index = np.where(at_session, nearest, index)
    out[has] = events.ts[index[has]]
    return out, at_session


def user_windows(
    events: SortedEvents, history_fraction: float, min_events: int, session_gap: int = 0, sessions_only: bool = False
) -> Windows:
    """Per-user time split: labels from each user's events at/after their cutoff (``_cutoffs``;
    ``sessions_only``: users without a session start give no rows)."""
    counts = np.diff(events.offsets)
    request, at_session = _cutoffs(events, counts, history_fraction, MAX_TIMESTAMP - 1, session_gap)
    eligible = (counts >= min_events) & (at_session | (not sessions_only) | (session_gap <= 0))
    return Windows(request, np.full(events.num_users, MAX_TIMESTAMP, dtype=np.int64), eligible)


def global_windows(
    events: SortedEvents,
    t1: int,
    t2: int,
    history_fraction: float,
    min_events: int,
    min_val_history: int = 1,
    session_gap: int = 0,
    sessions_only: bool = False,
) -> tuple[Windows, Windows]:
    """(train, validation) windows of the global temporal split at T1 < T2; users with fewer than
    ``min_val_history`` events before T1 are not validated (0 validates cold-start users too).
    Training requests follow ``_cutoffs`` over the events before T1 (``session_gap``, ``sessions_only``
    as in ``user_windows``)."""
    before = _counts_before(events, t1)
    request, at_session = _cutoffs(events, before, history_fraction, t1, session_gap)
    train = Windows(
        request,
        np.full(events.num_users, t1, dtype=np.int64),
        (before >= min_events) & (at_session | (not sessions_only) | (session_gap <= 0)),
    )
    first = events.offsets[:-1] + before  # each user's first event at/after T1, if any
    has = first < events.offsets[1:]
    request = np.full(events.num_users, t1, dtype=np.int64)
    request[has] = events.ts[first[has]]
    val = Windows(request, np.full(events.num_users, t2, dtype=np.int64), before >= min_val_history)
    return train, val


def time_quantiles(events: SortedEvents, quantiles: tuple[float, float]) -> tuple[int, int]:
    """(T1, T2): event-time quantiles (a quantile of 1.0 is one second past the last event)."""
    t = np.quantile(events.ts, quantiles, method="lower")
    last = int(events.ts.max()) + 1
    return tuple(last if q >= 1.0 else int(v) for q, v in zip(quantiles, t))


def validation_users(user_ids: np.ndarray, fraction: float) -> np.ndarray:
    """(U,) bool: a splitmix64 hash of the raw user id, mapped to [0, 1), is below ``fraction``."""
    with np.errstate(over="ignore"):
        z = user_ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53 < fraction
