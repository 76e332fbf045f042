"""Labelled examples of the click and conversion streams from label windows of a sorted log.

Works on one block of whole users at a time (their events are contiguous after sorting), so memory
stays bounded by the block. For each eligible user, the events in the window [r_u, e_u) label:

* candidate rows: each distinct (user, item) pair with an ``exposure`` behaviour in the window, plus
  ``negatives_per_positive`` sampled negatives per row (items drawn with p ~ 1 + history popularity,
  never one the user touched in the window nor, with ``exclude_history``, before it: an item the user
  already has in their history is no "not interested" signal, and on a log where each pair occurs
  once, such as MovieLens ratings, it is a certain negative that only punishes affinity to the
  history; slots that keep clashing are dropped);
* click tasks: a task is 1 when the pair has one of its behaviours in the window;
* conversion tasks: ``attributed_conversion`` counts its behaviours at/after the pair's first exposure
  in the window; other tasks any time in the window; ``unattributed_conversion`` makes synthetic rows
  from pairs with its behaviours that were never exposed before the window end.
A task without behaviours in the spec has label mask 0. Every row is requested at r_u.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duet_sdk.data.events import ExampleSet
from duet_sdk.data.routing import CLICK_TASKS, CONV_TASKS, SYNTHETIC_TASK, concat_examples, synthetic_conv_examples
from duet_sdk.data.spec import EventLogSpec
from duet_sdk.data.splits import Windows

_MAX_REDRAWS = 64
ATTRIBUTED_TASK = CONV_TASKS[0]


_TS_BITS = 33  # event keys: item code << 33 | Unix seconds (times before the year 2242)


def item_time_keys(item: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """(N,) sorted int64 keys ``item << 33 | ts`` of every event: ``ItemFeatures.event_keys``."""
    return np.sort(
        (np.asarray(item, dtype=np.int64) << _TS_BITS) | np.clip(np.asarray(ts, dtype=np.int64), 0, (1 << _TS_BITS) - 1)
    )


@dataclass
class ItemFeatures:
    """Per item (I,): raw ``ids``, ``sparse`` (I, S) candidate ids after the item id, ``dense`` (I, D)
    float32 (log popularity first), ``popularity`` events in users' history windows (the negative
    sampling weights). With ``event_keys`` (``item_time_keys`` of the log), a row's log popularity
    is the item's events strictly before the row's request time, as serving would count it; without,
    the history-window count (which on a temporal split counts events after early training requests)."""

    ids: np.ndarray
    sparse: np.ndarray
    dense: np.ndarray
    popularity: np.ndarray
    event_keys: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.cdf = np.cumsum(self.popularity + 1.0)

    def dense_at(self, item: np.ndarray, request_time: np.ndarray) -> np.ndarray:
        """(M, D) float32 dense features of ``item`` (M,) for rows requested at ``request_time`` (M,)."""
        dense = self.dense[item].astype(np.float32)
        if self.event_keys is not None and len(item):
            base = np.asarray(item, dtype=np.int64) << _TS_BITS
            t = np.clip(np.asarray(request_time, dtype=np.int64), 0, (1 << _TS_BITS) - 1)
            count = np.searchsorted(self.event_keys, base | t) - np.searchsorted(self.event_keys, base)
            dense[:, 0] = np.log1p(count)
        return dense


@dataclass
class Block:
    """Events of a block of users, sorted by (user, time): ``user``/``item`` codes, ``behavior``, ``ts``."""

    user: np.ndarray
    item: np.ndarray
    behavior: np.ndarray
    ts: np.ndarray


def _member(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """(Q,) bool: ``query`` values present in ``sorted_keys`` (binary search, no sort of the query)."""
    if not len(sorted_keys):
        return np.zeros(len(query), dtype=bool)
    return sorted_keys[np.minimum(np.searchsorted(sorted_keys, query), len(sorted_keys) - 1)] == query


def _marked(sorted_keys: np.ndarray, events: np.ndarray) -> np.ndarray:
    """(K,) bool: entries of ``sorted_keys`` that occur among ``events`` (any order)."""
    out = np.zeros(len(sorted_keys), dtype=bool)
    if len(sorted_keys) and len(events):
        j = np.minimum(np.searchsorted(sorted_keys, events), len(sorted_keys) - 1)
        out[j[sorted_keys[j] == events]] = True
    return out


def _sample_negatives(
    items: ItemFeatures, rng: np.random.Generator, users: np.ndarray, exclude: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` items per entry of ``users`` (M,), never a pair (user * I + item) in ``exclude``."""
    num_items, cdf = len(items.ids), items.cdf
    draw = lambda n: np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), num_items - 1)  # noqa: E731
    user = np.repeat(users, count)
    item = draw(len(user))
    clash = _member(exclude, user * num_items + item)
    for _ in range(_MAX_REDRAWS):
        if not clash.any():
            break
        item[clash] = draw(int(clash.sum()))
        clash[clash] = _member(exclude, user[clash] * num_items + item[clash])
    return user[~clash], item[~clash]


def _after_exposure(
    keys: np.ndarray, exposed_at: np.ndarray, event_keys: np.ndarray, event_ts: np.ndarray
) -> np.ndarray:
    """(M,) bool: pair ``keys[m]`` (sorted) has an event at/after ``exposed_at[m]``."""
    out = np.zeros(len(keys), dtype=bool)
    if len(keys) and len(event_keys):
        j = np.minimum(np.searchsorted(keys, event_keys), len(keys) - 1)
        out[j[(keys[j] == event_keys) & (event_ts >= exposed_at[j])]] = True
    return out


class Labeller:
    """Builds click and conversion examples for blocks of users under one spec."""

    def __init__(
        self, spec: EventLogSpec, items: ItemFeatures, negatives_per_positive: int, exclude_history: bool = True
    ) -> None:
        self.spec, self.items, self.k, self.exclude_history = spec, items, negatives_per_positive, exclude_history
        self.exposure = spec.codes(spec.exposure)
        self.task_codes = {task: spec.codes(names) for task, names in spec.labels.items()}

    def _rows(
        self,
        tasks: tuple[str, ...],
        keys: np.ndarray,
        labels: np.ndarray,
        negatives: tuple[np.ndarray, np.ndarray],
        mask: np.ndarray,
        request: np.ndarray,
    ) -> ExampleSet:
        """Rows for positive pairs ``keys`` (P,) with ``labels`` (P, K), then all-zero rows for negatives."""
        num_items = len(self.items.ids)
        user = np.concatenate([keys // num_items, negatives[0]]).astype(np.int64)
        item = np.concatenate([keys % num_items, negatives[1]]).astype(np.int64)
        labels = np.concatenate([labels, np.zeros((len(negatives[0]), labels.shape[1]))]).astype(np.float32)
        return ExampleSet(
            tasks=tasks,
            user_index=user,
            request_time=request[user],
            item_sparse=np.column_stack([self.items.ids[item], self.items.sparse[item]]).astype(np.int64),
            item_dense=self.items.dense_at(item, request[user]),
            labels=labels,
            label_mask=np.broadcast_to(mask.astype(np.float32), labels.shape).copy(),
            synthetic=np.zeros(len(user), dtype=bool),
        )

    def _has(self, task: str, keys: np.ndarray, pairs) -> np.ndarray:
        if task not in self.task_codes:
            return np.zeros(len(keys), dtype=bool)
        return _marked(keys, pairs(self.task_codes[task]))

    def examples(self, block: Block, windows: Windows, rng: np.random.Generator) -> tuple[ExampleSet, ExampleSet]:
        """(click, conv) examples of the block's eligible users; conv includes the synthetic rows."""
        num_items = len(self.items.ids)
        b, user = block.behavior, block.user
        window = (block.ts >= windows.request[user]) & (block.ts < windows.end[user]) & windows.eligible[user]
        keys_of = lambda mask: user[mask].astype(np.int64) * num_items + block.item[mask]  # noqa: E731
        in_window = lambda codes: keys_of(window & np.isin(b, codes))  # noqa: E731
        exposed = window & np.isin(b, self.exposure)
        keys, first = np.unique(keys_of(exposed), return_index=True)  # events are time-sorted: first = earliest
        before_end = (block.ts < windows.end[user]) & windows.eligible[user]
        touched = np.unique(keys_of(before_end if self.exclude_history else window))  # pairs never sampled as negatives
        sample = lambda users: _sample_negatives(self.items, rng, users, touched, self.k)  # noqa: E731
        negatives = sample(keys // num_items)
        click = np.column_stack([self._has(t, keys, in_window) for t in CLICK_TASKS])
        conv = np.column_stack([self._has(t, keys, in_window) for t in CONV_TASKS])
        codes = self.task_codes[ATTRIBUTED_TASK]
        converted = window & np.isin(b, codes)
        conv[:, 0] = _after_exposure(keys, block.ts[exposed][first], keys_of(converted), block.ts[converted])
        conv[:, CONV_TASKS.index(SYNTHETIC_TASK)] = False
        click_mask = np.array([t in self.task_codes for t in CLICK_TASKS])
        conv_mask = np.array([t in self.task_codes and t != SYNTHETIC_TASK for t in CONV_TASKS])
        click_rows = self._rows(CLICK_TASKS, keys, click, negatives, click_mask, windows.request)
        conv_rows = self._rows(CONV_TASKS, keys, conv, negatives, conv_mask, windows.request)
        if SYNTHETIC_TASK not in self.task_codes:
            return click_rows, conv_rows
        conversions = np.unique(in_window(self.task_codes[SYNTHETIC_TASK]))
        ever_exposed = keys_of((block.ts < windows.end[user]) & np.isin(b, self.exposure))
        unexposed = conversions[~_member(np.unique(ever_exposed), conversions)]
        labels = np.zeros((len(unexposed), len(CONV_TASKS)))
        labels[:, CONV_TASKS.index(SYNTHETIC_TASK)] = 1.0
        synthetic_mask = np.array([t == SYNTHETIC_TASK for t in CONV_TASKS])
        synthetic = synthetic_conv_examples(
            self._rows(CONV_TASKS, unexposed, labels, sample(unexposed // num_items), synthetic_mask, windows.request)
        )
        return click_rows, concat_examples([conv_rows, synthetic])
