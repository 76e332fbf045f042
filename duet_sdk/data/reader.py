"""Read an event log (CSV or Parquet) into typed columns with pyarrow, in record batches.

The reader knows the spec's columns and behaviours, never labels or splits. CSV is parsed by
``pyarrow.csv.open_csv`` (multithreaded; if a row has the wrong number of fields, the file is read
again single-threaded so every line number is exact); Parquet by ``ParquetFile.iter_batches`` per row
group. Each batch is validated column-wise with ``pyarrow.compute``: a bad row is skipped and reported
by location (CSV line, or Parquet row group and row) and reason; past ``max_bad_fraction`` the load
fails. Valid rows go to ``ArraySink``s (in memory or spilled to disk).

Example:
    >>> columns, report = read_event_log("ml-100k.inter", preset("movielens"))  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from duet_sdk.data.spec import TIMESTAMP_UNITS, EventLogSpec
from duet_sdk.data.spill import ArraySink
from duet_sdk.data.values import Parsed, parse_behavior, parse_ids, parse_timestamps
from duet_sdk.errors import DataError

log = logging.getLogger(__name__)

KEPT_BAD_ROWS = 1000  # bad rows kept with location and reason; all are counted
_SHOWN = 5
_CSV_BLOCK = 8 << 20
_PARQUET_BATCH = 1 << 20


@dataclass
class EventColumns:
    """Valid rows in file order: ``user``, ``item`` (N,) int64 raw ids, ``extras`` (N, X) int64,
    ``behavior`` (N,) int8 code (index into ``spec.behavior_names``), ``timestamp`` (N,) int64 Unix s."""

    user: np.ndarray
    item: np.ndarray
    extras: np.ndarray
    behavior: np.ndarray
    timestamp: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


@dataclass
class ReadReport:
    """What the reader saw. ``bad_rows`` keeps the first ``KEPT_BAD_ROWS`` as (location, reason)."""

    path: str
    file_format: str
    rows_read: int = 0
    rows_ok: int = 0
    bad_count: int = 0
    bad_rows: list[tuple[str, str]] = field(default_factory=list)
    bad_by_column: Counter = field(default_factory=Counter)
    unknown_behaviors: Counter = field(default_factory=Counter)
    behavior_counts: dict[str, int] = field(default_factory=dict)
    time_range: tuple[int, int] | None = None

    def add_bad(self, where: str, column: str, reason: str) -> None:
        self.bad_count += 1
        self.bad_by_column[column] += 1
        if len(self.bad_rows) < KEPT_BAD_ROWS:
            self.bad_rows.append((where, reason))

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.behavior_counts.items())
        lines = [
            f"{self.path} ({self.file_format}): {self.rows_ok}/{self.rows_read} rows ok, {self.bad_count} bad; "
            f"behaviours: {counts}"
        ]
        if self.time_range:
            lo, hi = (datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") for t in self.time_range)
            lines.append(f"  events from {lo} to {hi} UTC")
        if self.bad_count:
            lines.append("  bad rows by column: " + ", ".join(f"{c}={n}" for c, n in self.bad_by_column.most_common()))
        if self.unknown_behaviors:
            lines.append(
                "  unknown behaviour values: "
                + ", ".join(f"{v!r}={n}" for v, n in self.unknown_behaviors.most_common(10))
            )
        lines += [f"  {where}: {why}" for where, why in self.bad_rows[:_SHOWN]]
        return "\n".join(lines)


class _NeedLineNumbers(Exception):
    """A multithreaded CSV pass met a row with the wrong field count (pyarrow gives no line number)."""


class _Sinks:
    def __init__(self, directory: Path | None, num_extras: int) -> None:
        self.user = ArraySink(directory, "read_user", np.int64)
        self.item = ArraySink(directory, "read_item", np.int64)
        self.extras = ArraySink(directory, "read_extras", np.int64, (num_extras,))
        self.behavior = ArraySink(directory, "read_behavior", np.int8)
        self.timestamp = ArraySink(directory, "read_timestamp", np.int64)

    def finish(self) -> EventColumns:
        return EventColumns(
            self.user.finish(),
            self.item.finish(),
            self.extras.finish(),
            self.behavior.finish(),
            self.timestamp.finish(),
        )


def _header(path: Path, delimiter: str) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        first = f.readline(1 << 20)
    if not first.strip():
        raise DataError(f"{path}: the event log is empty (expected a header line, got none)")
    return next(csv.reader([first], delimiter=delimiter))


def _csv_batches(
    path: Path, spec: EventLogSpec, report: ReadReport, threads: bool
) -> Iterator[tuple[dict[str, pa.Array], np.ndarray]]:
    """Batches of the spec's columns as strings, with each row's 1-based line number (R,)."""
    layout, needed = spec.csv, spec.columns()
    names = list(layout.column_names) if layout.column_names else None
    if layout.header:
        present = _header(path, layout.delimiter)
        missing = [c for c in needed if c not in present]
        if missing:
            raise DataError(f"{path}: column(s) {missing} missing; the header has {present}")
        first_line = 2
    else:
        first_line = 1
    skipped: list[tuple[int, str]] = []
    unnumbered: list[bool] = []

    def invalid(row: pa_csv.InvalidRow) -> str:
        if row.number is None:  # multithreaded: stop, and read again single-threaded
            unnumbered.append(True)
            return "error"
        skipped.append((row.number, f"expected {row.expected_columns} fields, got {row.actual_columns}"))
        return "skip"

    try:
        reader = pa_csv.open_csv(
            path,
            read_options=pa_csv.ReadOptions(
                use_threads=threads,
                block_size=_CSV_BLOCK,
                column_names=names,
                skip_rows=1 if (names and layout.header) else 0,
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=layout.delimiter, ignore_empty_lines=False, invalid_row_handler=invalid
            ),
            convert_options=pa_csv.ConvertOptions(
                include_columns=list(needed), column_types={c: pa.string() for c in needed}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as exc:
        if unnumbered:
            raise _NeedLineNumbers() from None
        if "Empty CSV file" in str(exc):
            raise DataError(f"{path}: the event log is empty (no rows)") from None
        raise DataError(f"{path}: not readable as CSV: {exc}") from None
    emitted, reported = 0, 0
    for batch in _batches(reader, path, unnumbered):
        rows = np.arange(emitted, emitted + batch.num_rows, dtype=np.int64)
        emitted += batch.num_rows
        lines = sorted(number for number, _ in skipped)
        adjusted = np.asarray(lines, dtype=np.int64) - first_line - np.arange(len(lines))
        line_of_row = first_line + rows + np.searchsorted(adjusted, rows, side="right")
        for number, reason in sorted(skipped)[reported:]:
            report.rows_read += 1
            report.add_bad(f"line {number}", "(fields)", reason)
        reported = len(skipped)
        yield {c: batch.column(c) for c in needed}, line_of_row
    for number, reason in sorted(skipped)[reported:]:
        report.rows_read += 1
        report.add_bad(f"line {number}", "(fields)", reason)


def _batches(reader: pa_csv.CSVStreamingReader, path: Path, unnumbered: list[bool]) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            if unnumbered:
                raise _NeedLineNumbers() from None
            raise DataError(f"{path}: not readable as CSV: {exc}") from None


def _parquet_batches(path: Path, spec: EventLogSpec) -> Iterator[tuple[dict[str, pa.Array], int, int]]:
    """Batches of the spec's columns with their row group and first row in it."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not readable as Parquet: {exc}") from None
    needed = spec.columns()
    present = pf.schema_arrow.names
    missing = [c for c in needed if c not in present]
    if missing:
        raise DataError(f"{path}: column(s) {missing} missing; the file has {present}")
    for group in range(pf.num_row_groups):
        start = 0
        for batch in pf.iter_batches(
            batch_size=_PARQUET_BATCH, row_groups=[group], columns=list(needed), use_threads=True
        ):
            yield {c: batch.column(c) for c in needed}, group, start
            start += batch.num_rows


def _validate(batch: dict[str, pa.Array], spec: EventLogSpec, report: ReadReport, where) -> dict[str, np.ndarray]:
    """Parse every column, report bad rows (the first bad column names a row), return the valid rows."""
    unit, text = TIMESTAMP_UNITS[spec.timestamp_unit], report.file_format == "csv"
    parsed: dict[str, Parsed] = {
        spec.user: parse_ids(batch[spec.user], spec.user, text),
        spec.item: parse_ids(batch[spec.item], spec.item, text),
        spec.behavior: parse_behavior(batch[spec.behavior], spec, text),
        spec.timestamp: parse_timestamps(
            batch[spec.timestamp], spec.timestamp, spec.timestamp_unit, spec.plausible_years, text
        ),
        **{c: parse_ids(batch[c], c, text) for c in spec.extra_ids},
    }
    n = len(batch[spec.user])
    ok = np.ones(n, dtype=bool)
    for column, p in parsed.items():
        bad = np.flatnonzero(ok & ~p.ok)
        for i in bad[: max(0, KEPT_BAD_ROWS - len(report.bad_rows))]:
            report.bad_rows.append((where(int(i)), p.reason(int(i))))
        if len(bad):
            report.bad_count += len(bad)
            report.bad_by_column[column] += len(bad)
        ok &= p.ok
    report.unknown_behaviors.update(parsed[spec.behavior].unknown)
    report.rows_read += n
    report.rows_ok += int(ok.sum())
    out = {c: p.values[ok] for c, p in parsed.items()}
    out[spec.timestamp] = out[spec.timestamp] // unit if unit != 1 else out[spec.timestamp]
    return out


def _read(
    path: Path, spec: EventLogSpec, fmt: str, directory: Path | None, threads: bool
) -> tuple[EventColumns, ReadReport]:
    report = ReadReport(str(path), fmt)
    sinks = _Sinks(directory, len(spec.extra_ids))
    counts = np.zeros(len(spec.behavior_names), dtype=np.int64)
    lo, hi = np.iinfo(np.int64).max, -1
    if fmt == "csv":
        source = (
            (b, (lambda i, lines=lines: f"line {lines[i]}")) for b, lines in _csv_batches(path, spec, report, threads)
        )
    else:
        source = ((b, (lambda i, g=g, s=s: f"row group {g}, row {s + i}")) for b, g, s in _parquet_batches(path, spec))
    for batch, where in source:
        good = _validate(batch, spec, report, where)
        sinks.user.append(good[spec.user])
        sinks.item.append(good[spec.item])
        sinks.extras.append(
            np.column_stack([good[c] for c in spec.extra_ids])
            if spec.extra_ids
            else np.zeros((len(good[spec.user]), 0))
        )
        sinks.behavior.append(good[spec.behavior])
        ts = good[spec.timestamp]
        sinks.timestamp.append(ts)
        counts += np.bincount(good[spec.behavior], minlength=len(counts))
        if len(ts):
            lo, hi = min(lo, int(ts.min())), max(hi, int(ts.max()))
    report.behavior_counts = {name: int(c) for name, c in zip(spec.behavior_names, counts)}
    report.time_range = (lo, hi) if hi >= 0 else None
    return sinks.finish(), report


def read_event_log(
    path: str | PathLike, spec: EventLogSpec, max_bad_fraction: float = 0.01, spill: Path | None = None
) -> tuple[EventColumns, ReadReport]:
    """Read and validate every row of ``path``; valid rows as columns (spilled under ``spill`` if given).

    Raises:
        DataError: the file is missing, unreadable, empty, lacks a column, has a column of the wrong
            type (Parquet), has no valid row, or more than ``max_bad_fraction`` of its rows are bad.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"events: expected an existing event-log file, got {str(path)!r}")
    fmt = spec.file_format(path)
    if fmt == "parquet":
        columns, report = _read(path, spec, fmt, spill, threads=True)
    else:
        try:
            columns, report = _read(path, spec, fmt, spill, threads=True)
        except _NeedLineNumbers:
            log.info("%s: rows with a wrong field count; reading again single-threaded for exact line numbers", path)
            columns, report = _read(path, spec, fmt, spill, threads=False)
    report.bad_rows.sort(key=lambda r: [int(t) for t in r[0].replace(",", "").split() if t.isdigit()])
    if report.rows_read == 0:
        raise DataError(f"{path}: the event log is empty (no rows)")
    if report.bad_count > max_bad_fraction * report.rows_read or report.rows_ok == 0:
        shown = "; ".join(f"{w}: {why}" for w, why in report.bad_rows[:_SHOWN])
        by_column = ", ".join(f"{c}={n}" for c, n in report.bad_by_column.most_common())
        limit = "no valid row" if report.rows_ok == 0 else f"more than max_bad_fraction={max_bad_fraction}"
        every = [c for c, n in report.bad_by_column.items() if n == report.rows_read]
        limit += (
            f"; every row of column {every[0]!r} is bad: is it the right column, of the right type?" if every else ""
        )
        raise DataError(
            f"{path}: {report.bad_count} of {report.rows_read} rows are bad ({limit}; by column: {by_column}); first: "
            f"{shown}"
        )
    log.info("%s", report.summary())
    return columns, report
