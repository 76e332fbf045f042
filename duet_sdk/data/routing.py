"""Domain-aware data routing (DUET §3.1).

* Click/onsite stream (ClickAUN): tasks ``CLICK_TASKS``; rows without any positive label are kept
  at rate ``w``; predictions are recalibrated (``recalibrate_tasks``) before NE is computed on
  unsampled data.
* Offsite-conversion stream (ConvAUN): tasks ``CONV_TASKS``; never downsampled; synthetic rows made
  from unattributed conversions are flagged and labelled only for ``unattributed_conversion``.
* Downstream ranker: the attributed rows of the conversion stream, tasks ``RANKER_TASKS``
  (offsite conversion primary, link and button clicks auxiliary).
"""

from __future__ import annotations

import numpy as np

from duet_sdk.data.events import ExampleSet
from duet_sdk.errors import DataError

CLICK_TASKS = ("ctr", "onsite_conversion")
CONV_TASKS = ("attributed_conversion", "unattributed_conversion", "link_click", "button_click")
SYNTHETIC_TASK = "unattributed_conversion"
RANKER_TASKS = ("offsite_conversion", "link_click", "button_click")
_RANKER_SOURCE = {
    "offsite_conversion": "attributed_conversion",
    "link_click": "link_click",
    "button_click": "button_click",
}


def downsample_negatives(examples: ExampleSet, rate: float, seed: int) -> ExampleSet:
    """Keep every row with a positive label and each all-negative row with probability ``rate``."""
    if not 0.0 < rate <= 1.0:
        raise DataError(f"downsample rate: expected in (0, 1], got {rate}")
    positive = ((examples.labels * examples.label_mask) > 0).any(axis=1)
    keep = positive | (np.random.default_rng(seed).random(len(examples)) < rate)
    kept = examples.subset(np.flatnonzero(keep))
    kept.downsample_rate = examples.downsample_rate * rate
    return kept


def recalibrate(p: np.ndarray, rate: float) -> np.ndarray:
    """Undo negative downsampling at rate ``w``: ``q = p / (p + (1 - p) / w)``."""
    p = np.asarray(p, dtype=np.float64)
    return p / (p + (1.0 - p) / rate)


def recalibrate_tasks(p: np.ndarray, rate: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Undo ``downsample_negatives`` for every task of (N, K) probabilities ``p`` (``mask`` (N, K): 1
    where a task applies).

    A row was kept with probability 1 when any applicable task was positive, else ``w``; so a task's
    negatives were kept at ``w`` only on rows without another positive, and per task
    ``q_k = p_k w / (1 - (1 - w) p_any)``, with ``p_any`` the sampled probability of any positive. It is
    taken as the largest applicable ``p_k``: exact where tasks nest (a conversion implies a click, as
    ``onsite_conversion`` implies ``ctr``), where the outer task's ``q`` is ``recalibrate``'s. Applying
    ``recalibrate`` to an inner task instead treats its kept negatives as all sampled and underrates it.
    """
    p = np.asarray(p, dtype=np.float64)
    applies = np.ones_like(p) if mask is None else np.asarray(mask) > 0
    p_any = np.where(applies, p, 0.0).max(axis=1, keepdims=True) if p.shape[1] else np.zeros((len(p), 1))
    return np.clip(p * rate / (1.0 - (1.0 - rate) * p_any), 0.0, 1.0)


def synthetic_conv_examples(examples: ExampleSet) -> ExampleSet:
    """Mark rows as synthetic: only the ``unattributed_conversion`` label applies to them."""
    if SYNTHETIC_TASK not in examples.tasks:
        raise DataError(f"tasks: expected {SYNTHETIC_TASK!r} among {examples.tasks}")
    out = examples.subset(np.arange(len(examples)))
    column = examples.tasks.index(SYNTHETIC_TASK)
    out.label_mask = np.zeros_like(out.label_mask)
    out.label_mask[:, column] = 1.0
    out.synthetic = np.ones(len(out), dtype=bool)
    return out


def concat_examples(parts: list[ExampleSet]) -> ExampleSet:
    """Rows of several example sets with the same tasks and downsample rate, in order."""
    first = parts[0]
    for part in parts[1:]:
        if part.tasks != first.tasks or part.downsample_rate != first.downsample_rate:
            raise DataError("concat_examples: expected the same tasks and downsample rate in every part")
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    return ExampleSet(
        tasks=first.tasks,
        user_index=cat("user_index"),
        request_time=cat("request_time"),
        item_sparse=cat("item_sparse"),
        item_dense=cat("item_dense"),
        labels=cat("labels"),
        label_mask=cat("label_mask"),
        synthetic=cat("synthetic"),
        downsample_rate=first.downsample_rate,
    )


def ranker_examples(conv: ExampleSet) -> ExampleSet:
    """The downstream ranker's rows: the attributed (non-synthetic) rows of a conversion-stream set."""
    columns = [conv.tasks.index(_RANKER_SOURCE[t]) for t in RANKER_TASKS]
    rows = conv.subset(np.flatnonzero(~conv.synthetic))
    rows.tasks = RANKER_TASKS
    rows.labels = rows.labels[:, columns]
    rows.label_mask = rows.label_mask[:, columns]
    return rows
