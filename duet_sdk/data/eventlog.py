"""Load any event log into an ``EventDataset``: read (``reader``), sort (``sorting``), split (``splits``),
label (``labelling``) and route, block by block, in bounded memory.

With ``EventLogOptions.spill_dir`` every array of the log's length goes to a fresh directory under it
and comes back memory-mapped (training reads batches from those maps); without it they stay in memory.
Intermediate files are deleted once used; the dataset's own arrays stay until the caller removes the
directory (``EventLogDataset.spill_path``).

Example:
    >>> ds = load_event_log("ml-100k.inter", preset("movielens"), EventLogOptions(split="global"))  # doctest: +SKIP
    >>> print(ds.report.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import resource
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path

import numpy as np

from duet_sdk.data.events import EventDataset, EventTable, ExampleSet, StreamEvents
from duet_sdk.data.labelling import Block, ItemFeatures, Labeller, item_time_keys
from duet_sdk.data.reader import ReadReport, read_event_log
from duet_sdk.data.routing import CLICK_TASKS, CONV_TASKS, RANKER_TASKS, downsample_negatives, ranker_examples
from duet_sdk.data.side_tables import join_side_table
from duet_sdk.data.sorting import SortedEvents, sort_events
from duet_sdk.data.spec import EventLogSpec
from duet_sdk.data.spill import ArraySink, chunks, release
from duet_sdk.data.splits import Windows, global_windows, time_quantiles, user_windows, validation_users
from duet_sdk.errors import ConfigError, DataError
from duet_sdk.validation import require_int

log = logging.getLogger(__name__)

SPLITS = ("user", "global")
SETS = ("click_train", "click_val", "conv_train", "conv_val", "ranker_train", "ranker_val")
_INT_FIELDS = {
    "min_events": 1, "min_val_history": 0, "negatives_per_positive": 0, "seed": 0, "block_events": 1, "session_gap": 0
}
_FRACTIONS = {
    "history_fraction": (lambda v: 0.0 < v < 1.0, "a number in (0, 1)"),
    "val_fraction": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "downsample_rate": (lambda v: 0.0 < v <= 1.0, "a number in (0, 1]"),
    "max_bad_fraction": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "train_end_quantile": (lambda v: 0.0 < v < 1.0, "a number in (0, 1)"),
    "val_end_quantile": (lambda v: 0.0 < v <= 1.0, "a number in (0, 1]"),
}


@dataclass(frozen=True)
class EventLogOptions:
    """How a log becomes examples.

    ``split="user"``: per-user time split at ``history_fraction`` of each user's events; users with a
    splitmix hash below ``val_fraction`` validate. ``split="global"``: train on events before T1,
    validate on the labels in [T1, T2); T1/T2 are ``train_end``/``val_end`` (Unix s) or else the
    ``train_end_quantile``/``val_end_quantile`` of event times. Users with fewer than ``min_events``
    events (before T1 for the global split) give no training rows; users with fewer than
    ``min_val_history`` events before T1 are not validated (0: cold-start users validate too).
    Sampled negatives avoid the items a user touched before the window end (``negatives_exclude_history``;
    False: only those touched in the label window). A candidate's ``log_item_popularity`` counts the
    item's events before the row's request time (``popularity_at_request``; False: the events in
    users' training history windows, which include events after early training requests; this
    keeps one int64 key per event in memory).
    ``session_gap`` (seconds, 0: off) moves each training request to the start of a session (an event
    at least that long after the user's previous one) nearest the fraction cutoff, so training rows ask
    what validation and serving ask: what a user does on coming back, not how a session they are in
    goes on (docs/training_on_real_data.md: at a fraction cutoff 90 % of MovieLens-100K training
    requests came minutes after the last history event, every validation request days later); users
    without such a start keep the fraction cutoff, or with ``sessions_only`` give no training rows.
    """

    history_fraction: float = 0.8
    min_events: int = 5
    min_val_history: int = 1
    val_fraction: float = 0.1
    negatives_per_positive: int = 4
    session_gap: int = 86_400
    sessions_only: bool = False
    negatives_exclude_history: bool = True
    popularity_at_request: bool = True
    downsample_rate: float = 0.5
    max_bad_fraction: float = 0.01
    seed: int = 0
    split: str = "user"
    train_end: int | None = None
    val_end: int | None = None
    train_end_quantile: float = 0.8
    val_end_quantile: float = 1.0
    spill_dir: str | None = None
    block_events: int = 1 << 20

    def __post_init__(self) -> None:
        for name, low in _INT_FIELDS.items():
            require_int(f"EventLogOptions.{name}", getattr(self, name), low)
        for name, (ok, expected) in _FRACTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok(value):
                raise ConfigError(f"EventLogOptions.{name}", expected, value)
        for name in ("negatives_exclude_history", "popularity_at_request", "sessions_only"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"EventLogOptions.{name}", "a bool", getattr(self, name))
        if self.split not in SPLITS:
            raise ConfigError("EventLogOptions.split", f"one of {SPLITS}", self.split)
        for name in ("train_end", "val_end"):
            if getattr(self, name) is not None:
                require_int(f"EventLogOptions.{name}", getattr(self, name), 0)
        if self.train_end is not None and self.val_end is not None and not self.train_end < self.val_end:
            raise ConfigError("EventLogOptions.val_end", f"a time after train_end={self.train_end}", self.val_end)
        if self.val_end_quantile <= self.train_end_quantile:
            raise ConfigError(
                "EventLogOptions.val_end_quantile",
                f"above train_end_quantile={self.train_end_quantile}",
                self.val_end_quantile,
            )


@dataclass
class LoadReport:
    """What loading did: the reader's report, users and items, the split, rows per example set."""

    read: ReadReport
    users_total: int = 0
    users_eligible: int = 0
    items_total: int = 0
    split: str = "user"
    split_times: tuple[int, int] | None = None
    cold_users_not_validated: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    side_table_missing: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            self.read.summary(),
            f"{self.users_total} users ({self.users_eligible} with enough events to train on), {self.items_total} "
            "items",
        ]
        if self.split_times:
            t1, t2 = (datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") for t in self.split_times)
            lines.append(
                f"global temporal split: train on events before {t1}, validate on labels in [{t1}, {t2}) UTC; "
                f"{self.cold_users_not_validated} users without enough history before T1 not validated"
            )
        else:
            lines.append("per-user time split")
        lines.append("rows: " + ", ".join(f"{k}={v}" for k, v in self.rows.items()))
        lines += [
            f"{name}: {n} ids without a row (side features 0)" for name, n in self.side_table_missing.items() if n
        ]
        return "\n".join(lines)


@dataclass
class EventLogDataset(EventDataset):
    """An event log's dataset, the spec it was read with, the load report and its spill directory."""

    spec: EventLogSpec | None = None
    report: LoadReport | None = None
    spill_path: Path | None = None


class _ExampleSink:
    """One example set, appended block by block."""

    def __init__(
        self, directory: Path | None, name: str, tasks: tuple[str, ...], item_sparse: int, item_dense: int
    ) -> None:
        self.tasks, self.downsample_rate = tasks, 1.0
        k = len(tasks)
        self.fields = {
            "user_index": ArraySink(directory, f"{name}_user_index", np.int64),
            "request_time": ArraySink(directory, f"{name}_request_time", np.int64),
            "item_sparse": ArraySink(directory, f"{name}_item_sparse", np.int64, (item_sparse,)),
            "item_dense": ArraySink(directory, f"{name}_item_dense", np.float32, (item_dense,)),
            "labels": ArraySink(directory, f"{name}_labels", np.float32, (k,)),
            "label_mask": ArraySink(directory, f"{name}_label_mask", np.float32, (k,)),
            "synthetic": ArraySink(directory, f"{name}_synthetic", bool),
        }

    def append(self, examples: ExampleSet) -> None:
        self.downsample_rate = examples.downsample_rate
        for name, sink in self.fields.items():
            sink.append(getattr(examples, name))

    def finish(self) -> ExampleSet:
        return ExampleSet(
            tasks=self.tasks, downsample_rate=self.downsample_rate, **{n: s.finish() for n, s in self.fields.items()}
        )


def _streams(events: SortedEvents, spec: EventLogSpec, history_end: np.ndarray, directory: Path | None):
    """Every stream's events, item popularity (I,) and per-stream history counts per user (U, S)."""
    names = list(spec.streams)
    codes = {name: spec.codes(spec.stream_behaviors[name]) for name in names}
    width = 2 + events.extras.shape[1]
    ts_sinks = {s: ArraySink(directory, f"stream_{s}_ts", np.int64) for s in names}
    id_sinks = {s: ArraySink(directory, f"stream_{s}_ids", np.int64, (width,)) for s in names}
    counts = np.zeros((len(names), events.num_users), dtype=np.int64)
    history = np.zeros((len(names), events.num_users), dtype=np.int64)
    popularity = np.zeros(events.num_items, dtype=np.int64)
    for c in chunks(len(events)):
        user, item, b, ts = events.user[c], events.item[c], events.behavior[c], events.ts[c]
        before = ts < history_end[user]
        popularity += np.bincount(item[before], minlength=events.num_items)
        for s, name in enumerate(names):
            m = np.isin(b, codes[name])
            ts_sinks[name].append(ts[m])
            id_sinks[name].append(np.column_stack([events.item_ids[item[m]], events.extras[c][m], b[m]]))
            counts[s] += np.bincount(user[m], minlength=events.num_users)
            history[s] += np.bincount(user[m & before], minlength=events.num_users)
        release(events.user, events.item, events.behavior, events.ts, events.extras)
    streams = {}
    for s, name in enumerate(names):
        offsets = np.concatenate([[0], np.cumsum(counts[s])]).astype(np.int64)
        streams[name] = StreamEvents(offsets, ts_sinks[name].finish(), id_sinks[name].finish())
    return streams, popularity, history.T


def _user_blocks(offsets: np.ndarray, block_events: int):
    """(first user, end user) ranges of whole users with about ``block_events`` events each."""
    u, num_users = 0, len(offsets) - 1
    while u < num_users:
        end = max(u + 1, int(np.searchsorted(offsets, offsets[u] + block_events, side="right")) - 1)
        yield u, min(end, num_users)
        u = end


def _split_times(events: SortedEvents, options: EventLogOptions) -> tuple[int, int]:
    q1, q2 = time_quantiles(events, (options.train_end_quantile, options.val_end_quantile))
    t1 = options.train_end if options.train_end is not None else q1
    t2 = options.val_end if options.val_end is not None else q2
    if not t1 < t2:
        raise DataError(f"global split: expected T1 < T2, got T1={t1}, T2={t2}")
    return t1, t2


def _label(
    events: SortedEvents,
    labeller: Labeller,
    options: EventLogOptions,
    windows: tuple[Windows, Windows | None],
    sinks: dict[str, _ExampleSink],
) -> None:
    """Label every block of users and route rows into the six example sets."""
    train_windows, val_windows = windows
    is_val = validation_users(events.user_ids, options.val_fraction) if val_windows is None else None
    for i, (u0, u1) in enumerate(_user_blocks(events.offsets, options.block_events)):
        e = slice(int(events.offsets[u0]), int(events.offsets[u1]))
        block = Block(
            np.array(events.user[e]), np.array(events.item[e]), np.array(events.behavior[e]), np.array(events.ts[e])
        )
        release(events.user, events.item, events.behavior, events.ts)
        rng = np.random.default_rng([options.seed, i])
        click, conv = labeller.examples(block, train_windows, rng)
        if val_windows is None:
            val_click, train_click = (
                click.subset(np.flatnonzero(is_val[click.user_index])),
                click.subset(np.flatnonzero(~is_val[click.user_index])),
            )
            val_conv, train_conv = (
                conv.subset(np.flatnonzero(is_val[conv.user_index])),
                conv.subset(np.flatnonzero(~is_val[conv.user_index])),
            )
        else:
            train_click, train_conv = click, conv
            val_click, val_conv = labeller.examples(block, val_windows, rng)
        sinks["click_train"].append(
            downsample_negatives(train_click, options.downsample_rate, options.seed * 1_000_003 + i)
        )
        sinks["click_val"].append(val_click)
        sinks["conv_train"].append(train_conv)
        sinks["conv_val"].append(val_conv)
        sinks["ranker_train"].append(ranker_examples(train_conv))
        sinks["ranker_val"].append(ranker_examples(val_conv))


def _stage(name: str) -> None:
    """Log the end of a loading stage with the process's peak RSS so far."""
    log.info("event log: %s done, peak RSS %.2f GiB", name, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)


def _remove(directory: Path | None, prefix: str) -> None:
    if directory is not None:
        for path in directory.glob(f"{prefix}*.bin"):
            path.unlink()  # a mapping still open keeps its pages until it is dropped


def load_event_log(path: str | PathLike, spec: EventLogSpec, options: EventLogOptions | None = None) -> EventLogDataset:
    """Read ``path`` as described by ``spec`` and build the training dataset.

    Raises:
        DataError: unreadable, empty or malformed input (see ``read_event_log``), or a global split
            whose T1 is not before T2.
    """
    options = options or EventLogOptions()
    root = None
    if options.spill_dir is not None:
        Path(options.spill_dir).mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="events-", dir=options.spill_dir))
    columns, read_report = read_event_log(path, spec, options.max_bad_fraction, root)
    _stage("read")
    events = sort_events(columns, root)
    del columns
    _stage("sort")
    _remove(root, "read_")
    report = LoadReport(read_report, users_total=events.num_users, items_total=events.num_items, split=options.split)
    if options.split == "user":
        windows: tuple[Windows, Windows | None] = (
            user_windows(
                events, options.history_fraction, options.min_events, options.session_gap, options.sessions_only
            ),
            None,
        )
    else:
        report.split_times = _split_times(events, options)
        windows = global_windows(
            events,
            *report.split_times,
            options.history_fraction,
            options.min_events,
            options.min_val_history,
            options.session_gap,
            options.sessions_only,
        )
        first_event = events.ts[events.offsets[:-1]]
        report.cold_users_not_validated = int(np.sum(~windows[1].eligible & (first_event < report.split_times[1])))
    report.users_eligible = int(windows[0].eligible.sum())
    streams, popularity, history_counts = _streams(events, spec, windows[0].request, root)
    _stage("streams")
    user_side, item_side = (
        join_side_table(spec.user_table, events.user_ids),
        join_side_table(spec.item_table, events.item_ids),
    )
    report.side_table_missing = {"user_table": user_side.missing, "item_table": item_side.missing}
    items = ItemFeatures(
        ids=events.item_ids,
        sparse=np.column_stack([events.item_extras, item_side.sparse]).astype(np.int64),
        dense=np.column_stack([np.log1p(popularity), item_side.dense]).astype(np.float32),
        popularity=popularity,
        event_keys=item_time_keys(events.item, events.ts) if options.popularity_at_request else None,
    )
    schema = spec.schema()
    tasks = {"click": CLICK_TASKS, "conv": CONV_TASKS, "ranker": RANKER_TASKS}
    sinks = {
        name: _ExampleSink(root, name, tasks[name.split("_")[0]], len(schema.item_sparse), len(schema.item_dense))
        for name in SETS
    }
    _label(
        events,
        Labeller(spec, items, options.negatives_per_positive, options.negatives_exclude_history),
        options,
        windows,
        sinks,
    )
    _stage("labels")
    user_ids = events.user_ids
    del events
    _remove(root, "sorted_")
    sets = {name: sink.finish() for name, sink in sinks.items()}
    report.rows = {name: len(s) for name, s in sets.items()}
    table = EventTable(
        schema,
        user_ids,
        np.column_stack([user_ids, user_side.sparse]).astype(np.int64),
        np.column_stack([np.log1p(history_counts), user_side.dense]).astype(np.float32),
        streams,
    )
    _stage("table")
    log.info("%s", report.summary())
    return EventLogDataset(schema=schema, table=table, spec=spec, report=report, spill_path=root, **sets)
