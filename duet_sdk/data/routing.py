"""Domain-aware data routing (DUET §3.1).

* Click/onsite stream (ClickAUN): tasks ``CLICK_TASKS``; negatives downsampled at rate ``w`` (all
  positives kept); predictions are recalibrated with ``q = p / (p + (1 - p) / w)`` before NE is
  computed on unsampled data.
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
