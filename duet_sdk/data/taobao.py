"""Loader for event logs in the Taobao UserBehavior layout.

Input: CSV without a header, ``user_id,item_id,category_id,behavior_type,timestamp``, behavior_type
in {pv, cart, fav, buy}, timestamps in Unix seconds. ``pv`` events form the ``click`` stream and
``cart``/``fav``/``buy`` the ``conv`` stream. Each user's log is split in time at a cutoff t_u:
events before t_u are the history (the only events features and model inputs see), events at/after
t_u give the labels, and every example of the user is requested at t_u.

Example:
    >>> ds = load_taobao("UserBehavior.csv", TaobaoOptions(val_fraction=0.1))  # doctest: +SKIP
    >>> print(ds.report.summary())  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress
from os import PathLike
from pathlib import Path

import numpy as np

from duet_sdk.data.events import MAX_TIMESTAMP, EventDataset, EventTable, ExampleSet, StreamEvents
from duet_sdk.data.routing import (
    CLICK_TASKS,
    CONV_TASKS,
    concat_examples,
    downsample_negatives,
    ranker_examples,
    synthetic_conv_examples,
)
from duet_sdk.data.schema import EventSchema, StreamSpec
from duet_sdk.errors import ConfigError, DataError
from duet_sdk.validation import require_int

COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
BEHAVIORS = ("pv", "cart", "fav", "buy")  # event field ``behavior`` holds the index
PV, CART, FAV, BUY = range(4)
MAX_ID = 2**63  # raw ids are int64 in [0, 2**63)
_SHOWN_BAD_ROWS = 5
_MAX_REDRAWS = 64

_INT_FIELDS = {"max_click_len": 1, "max_conv_len": 1, "min_events": 1, "negatives_per_positive": 0, "seed": 0}
_FRACTIONS = {
    "history_fraction": (lambda v: 0.0 < v < 1.0, "a number in (0, 1)"),
    "val_fraction": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "downsample_rate": (lambda v: 0.0 < v <= 1.0, "a number in (0, 1]"),
    "max_bad_fraction": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
}


@dataclass(frozen=True)
class TaobaoOptions:
    """How ``load_taobao`` splits, samples and validates a log (see the module docstring)."""

    max_click_len: int = 50
    max_conv_len: int = 20
    history_fraction: float = 0.8
    min_events: int = 5
    val_fraction: float = 0.1
    negatives_per_positive: int = 4
    downsample_rate: float = 0.5
    max_bad_fraction: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in _INT_FIELDS.items():
            require_int(f"TaobaoOptions.{name}", getattr(self, name), low)
        for name, (ok, expected) in _FRACTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok(value):
                raise ConfigError(f"TaobaoOptions.{name}", expected, value)


def taobao_schema(options: TaobaoOptions) -> EventSchema:
    """Streams ``click`` (pv) and ``conv`` (cart/fav/buy); events carry (item_id, category_id, behavior)."""
    return EventSchema(
        streams=(StreamSpec("click", options.max_click_len), StreamSpec("conv", options.max_conv_len)),
        id_fields=("item_id", "category_id", "behavior"),
        num_semantic_codes=0,
        static_sparse=("user_id",),
        static_dense=("log_pv_count", "log_conv_count"),
        item_sparse=("item_id", "category_id"),
        item_dense=("log_item_popularity",),
    )


@dataclass
class LoadReport:
    """What the loader read: ``bad_rows`` holds (1-based line number, reason) for every skipped row."""

    rows_read: int = 0
    rows_ok: int = 0
    bad_rows: list[tuple[int, str]] = field(default_factory=list)
    behavior_counts: dict[str, int] = field(default_factory=dict)
    users_total: int = 0
    users_skipped_short: int = 0

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.behavior_counts.items())
        lines = [
            f"{self.rows_ok}/{self.rows_read} rows ok, {len(self.bad_rows)} bad; behaviours: {counts}",
            f"{self.users_total} users, {self.users_skipped_short} skipped for too few events",
        ]
        lines += [f"  line {n}: {why}" for n, why in self.bad_rows[:_SHOWN_BAD_ROWS]]
        return "\n".join(lines)


@dataclass
class TaobaoDataset(EventDataset):
    """An event log's dataset plus the loader's report of what it read."""

    report: LoadReport


def _uint_column(cells: np.ndarray, name: str, limit: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse (R,) byte strings as ints in [0, limit): values (R,), bad row positions, their reasons."""
    digits = np.char.isdigit(cells)
    short = digits & (np.char.str_len(cells) <= 18)
    values = np.zeros(len(cells), dtype=np.int64)
    values[short] = cells[short].astype(np.int64)
    ok = short & (values < limit)
    for i in np.flatnonzero(digits & ~short):  # rare: more digits than int64 parses safely
        if int(cells[i]) < limit:
            values[i], ok[i] = int(cells[i]), True
    bad = np.flatnonzero(~ok)
    expected = "Unix seconds in [0, 2**32)" if limit == MAX_TIMESTAMP else "an integer id in [0, 2**63)"
    reasons = []
    for i in bad:
        raw = bytes(cells[i])
        what = "negative" if raw[:1] == b"-" and raw[1:].isdigit() else "out of range" if raw.isdigit() else "not an integer"
        reasons.append(f"{name}: expected {expected}, got {raw.decode(errors='replace')!r} ({what})")
    return values, bad, reasons


def _behavior_column(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Codes (R,) of pv/cart/fav/buy, bad row positions and their reasons."""
    values = np.full(len(cells), -1, dtype=np.int64)
    for code, name in enumerate(BEHAVIORS):
        values[cells == name.encode()] = code
    bad = np.flatnonzero(values < 0)
    expected = ", ".join(BEHAVIORS)
    return values, bad, [f"behavior_type: expected one of {expected}, got {bytes(cells[i]).decode(errors='replace')!r}" for i in bad]


def _parse(path: str | PathLike) -> tuple[np.ndarray, LoadReport]:
    """Valid rows as (N, 5) int64 in ``COLUMNS`` order (behaviour coded) and the report."""
    lines = Path(path).read_bytes().splitlines()
    ncols = np.fromiter((line.count(b",") + 1 if line.strip() else 0 for line in lines), np.int64, len(lines))
    shaped = ncols == len(COLUMNS)
    bad = {int(i): f"expected {len(COLUMNS)} columns ({','.join(COLUMNS)}), got {ncols[i]}" for i in np.flatnonzero(~shaped)}
    rows = np.flatnonzero(shaped)
    cells = np.empty((0, len(COLUMNS)), dtype="S1")
    if len(rows):
        text = b",".join(compress(lines, shaped))
        cells = np.array(text.split(b","), dtype=bytes).reshape(-1, len(COLUMNS))
        cells = np.char.strip(cells) if b" " in text or b"\t" in text else cells  # strip only when needed (slow)
    values = np.zeros(cells.shape, dtype=np.int64)
    ok = np.ones(len(rows), dtype=bool)
    for c, name in enumerate(COLUMNS):
        limit = MAX_TIMESTAMP if name == "timestamp" else MAX_ID
        parsed = _behavior_column(cells[:, c]) if name == "behavior_type" else _uint_column(cells[:, c], name, limit)
        values[:, c], where, reasons = parsed
        for i, reason in zip(where, reasons):
            bad.setdefault(int(rows[i]), reason)  # the first bad column of a row names it
        ok[where] = False
    values = values[ok]
    counts = np.bincount(values[:, 3], minlength=len(BEHAVIORS))
    report = LoadReport(
        rows_read=len(lines),
        rows_ok=len(values),
        bad_rows=[(i + 1, bad[i]) for i in sorted(bad)],
        behavior_counts={name: int(n) for name, n in zip(BEHAVIORS, counts)},
    )
    return values, report


@dataclass
class _Log:
    """Valid events sorted by (user, time): per-event arrays (N,), per-user (U,) and per-item (I,) lookups."""

    user: np.ndarray  # (N,) row of user_ids
    item: np.ndarray  # (N,) row of item_ids
    category: np.ndarray  # (N,) raw category id of the event
    behavior: np.ndarray  # (N,) code, index into BEHAVIORS
    ts: np.ndarray  # (N,) Unix seconds
    history: np.ndarray  # (N,) bool, ts < the user's cutoff
    user_ids: np.ndarray  # (U,) sorted raw ids
    counts: np.ndarray  # (U,) events per user
    cutoff: np.ndarray  # (U,) t_u
    item_ids: np.ndarray  # (I,) sorted raw ids
    item_category: np.ndarray  # (I,) category of the item's first row in the file
    popularity: np.ndarray  # (I,) the item's events in all users' history windows

    def pairs(self, mask: np.ndarray) -> np.ndarray:
        """(M,) int64 keys ``user * I + item`` of the events in ``mask``."""
        return self.user[mask] * len(self.item_ids) + self.item[mask]


def _build_log(values: np.ndarray, history_fraction: float) -> _Log:
    """Sort (N, 5) rows by (user, time) and split each user's events at t_u."""
    user_ids, user = np.unique(values[:, 0], return_inverse=True)
    item_ids, first, item = np.unique(values[:, 1], return_index=True, return_inverse=True)
    order = np.lexsort((values[:, 4], user))
    user, item, v = user[order], item[order], values[order]
    counts = np.bincount(user, minlength=len(user_ids))
    start = np.cumsum(counts) - counts
    split = np.minimum(np.floor(history_fraction * counts).astype(np.int64), counts - 1)
    cutoff = v[start + split, 4]
    history = v[:, 4] < cutoff[user]
    popularity = np.bincount(item[history], minlength=len(item_ids))
    return _Log(user, item, v[:, 2], v[:, 3], v[:, 4], history, user_ids, counts, cutoff, item_ids, values[first, 2], popularity)


def _build_table(log: _Log, schema: EventSchema) -> EventTable:
    """Every user's full click (pv) and conv (cart/fav/buy) streams; static features from history only."""
    num_users = len(log.user_ids)
    ids = np.column_stack([log.item_ids[log.item], log.category, log.behavior])
    streams = {}
    for name, mask in (("click", log.behavior == PV), ("conv", log.behavior != PV)):
        offsets = np.concatenate([[0], np.cumsum(np.bincount(log.user[mask], minlength=num_users))]).astype(np.int64)
        streams[name] = StreamEvents(offsets, log.ts[mask], ids[mask])
    pv = np.bincount(log.user[log.history & (log.behavior == PV)], minlength=num_users)
    conv = np.bincount(log.user[log.history & (log.behavior != PV)], minlength=num_users)
    dense = np.log1p(np.column_stack([pv, conv])).astype(np.float32)
    return EventTable(schema, log.user_ids, log.user_ids[:, None].copy(), dense, streams)


def _sample_negatives(
    log: _Log, rng: np.random.Generator, users: np.ndarray, exclude: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` items per entry of ``users`` (M,), drawn with p ~ 1 + history popularity, never a pair in
    ``exclude``. Returns (user, item) rows, (<= M * count,); slots that keep clashing are dropped."""
    num_items = len(log.item_ids)
    cdf = np.cumsum(log.popularity + 1.0)
    draw = lambda n: np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), num_items - 1)  # noqa: E731
    user = np.repeat(users, count)
    item = draw(len(user))
    clash = np.isin(user * num_items + item, exclude)
    for _ in range(_MAX_REDRAWS):
        if not clash.any():
            break
        item[clash] = draw(int(clash.sum()))
        clash = np.isin(user * num_items + item, exclude)
    return user[~clash], item[~clash]


def _bought_after(keys: np.ndarray, first_pv: np.ndarray, buy_keys: np.ndarray, buy_ts: np.ndarray) -> np.ndarray:
    """(M,) bool: pair ``keys[m]`` (sorted) has a buy at/after ``first_pv[m]``."""
    out = np.zeros(len(keys), dtype=bool)
    if len(keys):
        j = np.minimum(np.searchsorted(keys, buy_keys), len(keys) - 1)
        out[j[(keys[j] == buy_keys) & (buy_ts >= first_pv[j])]] = True
    return out


def _example_set(
    log: _Log, tasks: tuple[str, ...], pairs: np.ndarray, labels: np.ndarray, negatives: tuple[np.ndarray, np.ndarray], mask: list[float]
) -> ExampleSet:
    """Rows for positive ``pairs`` (P,) with ``labels`` (P, K), then all-zero rows for ``negatives``
    ((Q,) users, (Q,) items); every row is requested at its user's cutoff and masked by ``mask`` (K,)."""
    num_items = len(log.item_ids)
    user = np.concatenate([pairs // num_items, negatives[0]]).astype(np.int64)
    item = np.concatenate([pairs % num_items, negatives[1]]).astype(np.int64)
    labels = np.concatenate([labels, np.zeros((len(negatives[0]), labels.shape[1]))]).astype(np.float32)
    return ExampleSet(
        tasks=tasks,
        user_index=user,
        request_time=log.cutoff[user],
        item_sparse=np.column_stack([log.item_ids[item], log.item_category[item]]),
        item_dense=np.log1p(log.popularity[item]).astype(np.float32)[:, None],
        labels=labels,
        label_mask=np.broadcast_to(np.asarray(mask, dtype=np.float32), labels.shape).copy(),
        synthetic=np.zeros(len(user), dtype=bool),
    )


def _viewed_examples(log: _Log, future: np.ndarray, sample: Callable) -> tuple[ExampleSet, ExampleSet]:
    """Click and conv rows for each distinct (user, item) pv'ed in the ``future`` (N,) window, plus the
    negatives ``sample(users)`` draws for them."""
    b, viewed = log.behavior, future & (log.behavior == PV)
    keys, first = np.unique(log.pairs(viewed), return_index=True)  # first = earliest: events are time-sorted
    negatives = sample(keys // len(log.item_ids))
    carted, faved = np.isin(keys, log.pairs(future & (b == CART))), np.isin(keys, log.pairs(future & (b == FAV)))
    bought = _bought_after(keys, log.ts[viewed][first], log.pairs(future & (b == BUY)), log.ts[future & (b == BUY)])
    click = np.column_stack([np.ones(len(keys)), carted | faved])
    conv = np.column_stack([bought, np.zeros(len(keys)), carted, faved])
    return (
        _example_set(log, CLICK_TASKS, keys, click, negatives, [1, 1]),
        _example_set(log, CONV_TASKS, keys, conv, negatives, [1, 0, 1, 1]),
    )


def _make_examples(log: _Log, options: TaobaoOptions, eligible: np.ndarray) -> tuple[ExampleSet, ExampleSet]:
    """Click and conv examples of the ``eligible`` (U,) users, labelled from their future windows."""
    num_items, k, b = len(log.item_ids), options.negatives_per_positive, log.behavior
    future = ~log.history & eligible[log.user]
    touched, rng = np.unique(log.pairs(future)), np.random.default_rng(options.seed)
    sample = lambda users: _sample_negatives(log, rng, users, touched, k)  # noqa: E731
    click, conv = _viewed_examples(log, future, sample)
    buys = np.unique(log.pairs(future & (b == BUY)))
    unviewed = buys[~np.isin(buys, log.pairs(b == PV))]  # never pv'ed, in history or future
    labels = np.zeros((len(unviewed), len(CONV_TASKS)))
    labels[:, CONV_TASKS.index("unattributed_conversion")] = 1.0
    synthetic = synthetic_conv_examples(_example_set(log, CONV_TASKS, unviewed, labels, sample(unviewed // num_items), [0, 1, 0, 0]))
    return click, concat_examples([conv, synthetic])


def _validation_users(user_ids: np.ndarray, fraction: float) -> np.ndarray:
    """(U,) bool: a splitmix64 hash of the raw user id, mapped to [0, 1), is below ``fraction``."""
    with np.errstate(over="ignore"):
        z = user_ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53 < fraction


def _split(examples: ExampleSet, is_val_user: np.ndarray) -> tuple[ExampleSet, ExampleSet]:
    """(train, validation) rows by the user's side of the split."""
    val = is_val_user[examples.user_index]
    return examples.subset(np.flatnonzero(~val)), examples.subset(np.flatnonzero(val))


def load_taobao(path: str | PathLike, options: TaobaoOptions | None = None) -> TaobaoDataset:
    """Read a UserBehavior CSV into an ``EventTable`` plus click/conv train/validation examples.

    Raises:
        DataError: more than ``max_bad_fraction`` of the rows are malformed, or none is valid.
    """
    options = options or TaobaoOptions()
    values, report = _parse(path)
    if len(report.bad_rows) > options.max_bad_fraction * report.rows_read:
        shown = "; ".join(f"line {n}: {why}" for n, why in report.bad_rows[:_SHOWN_BAD_ROWS])
        raise DataError(
            f"{path}: {len(report.bad_rows)} of {report.rows_read} rows are malformed "
            f"(more than max_bad_fraction={options.max_bad_fraction}); first: {shown}"
        )
    if not len(values):
        raise DataError(f"{path}: expected at least one valid row, got none")
    schema = taobao_schema(options)
    log = _build_log(values, options.history_fraction)
    eligible = log.counts >= options.min_events
    report.users_total, report.users_skipped_short = len(log.user_ids), int((~eligible).sum())
    click, conv = _make_examples(log, options, eligible)
    is_val = _validation_users(log.user_ids, options.val_fraction)
    click_train, click_val = _split(click, is_val)
    conv_train, conv_val = _split(conv, is_val)
    return TaobaoDataset(
        schema=schema,
        table=_build_table(log, schema),
        click_train=downsample_negatives(click_train, options.downsample_rate, options.seed),
        click_val=click_val,
        conv_train=conv_train,
        conv_val=conv_val,
        ranker_train=ranker_examples(conv_train),  # the attributed conversion-stream rows
        ranker_val=ranker_examples(conv_val),
        report=report,
    )
