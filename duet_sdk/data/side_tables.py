"""Static side tables (user or item features) read with pyarrow and joined on raw ids.

A side table has one row per key with int64 ``sparse`` columns and float ``dense`` columns. It is read
whole (a row per user or item, far smaller than the log) and checked strictly: a bad value, a missing
column or a duplicate key is a ``DataError`` naming it. Ids absent from the table get zeros and are
counted in the load report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from duet_sdk.data.spec import SideTable
from duet_sdk.data.values import NUMBER, parse_ids
from duet_sdk.errors import DataError


@dataclass
class Joined:
    """Side features for a list of ids: ``sparse`` (N, S) int64, ``dense`` (N, D) float32, ``missing`` count."""

    sparse: np.ndarray
    dense: np.ndarray
    missing: int


def _read(table: SideTable) -> pa.Table:
    path = Path(table.path)
    if not path.is_file():
        raise DataError(f"side table: expected an existing file, got {str(path)!r}")
    columns = [table.key, *table.sparse, *table.dense]
    fmt = (
        table.format if table.format != "auto" else ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
    )
    try:
        if fmt == "parquet":
            present = pq.ParquetFile(path).schema_arrow.names
        else:
            layout = table.csv
            read = pa_csv.ReadOptions(
                column_names=list(layout.column_names) or None,
                skip_rows=1 if (layout.column_names and layout.header) else 0,
            )
            data = pa_csv.read_csv(
                path,
                read_options=read,
                parse_options=pa_csv.ParseOptions(delimiter=layout.delimiter),
                convert_options=pa_csv.ConvertOptions(column_types={c: pa.string() for c in columns}),
            )
            present = data.column_names
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not readable as {fmt}: {exc}") from None
    missing = [c for c in columns if c not in present]
    if missing:
        raise DataError(f"{path}: column(s) {missing} missing; the table has {present}")
    return pq.read_table(path, columns=columns) if fmt == "parquet" else data.select(columns)


def _dense(array: pa.Array, name: str, path: str) -> np.ndarray:
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if pa.types.is_string(array.type):
        s = pc.utf8_trim_whitespace(array)
        ok = pc.fill_null(pc.match_substring_regex(s, pattern=NUMBER), False).to_numpy(zero_copy_only=False)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise DataError(f"{path}: column {name!r} row {i}: expected a number, got {s[i].as_py()!r}")
        array = pc.cast(s, pa.float64())
    elif not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
        raise DataError(f"{path}: column {name!r}: expected a numeric column, got type {array.type}")
    values = pc.fill_null(array.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    if not np.isfinite(values).all():
        raise DataError(
            f"{path}: column {name!r} row {int(np.flatnonzero(~np.isfinite(values))[0])}: expected a finite number"
        )
    return values.astype(np.float32)


def _ids(array: pa.Array, name: str, path: str) -> np.ndarray:
    parsed = parse_ids(array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array, name)
    if not parsed.ok.all():
        i = int(np.flatnonzero(~parsed.ok)[0])
        raise DataError(f"{path}: row {i}: {parsed.reason(i)}")
    return parsed.values


def join_side_table(table: SideTable | None, ids: np.ndarray) -> Joined:
    """Side features of ``ids`` (N,) raw int64 (zeros for ids the table lacks)."""
    if table is None:
        return Joined(np.zeros((len(ids), 0), np.int64), np.zeros((len(ids), 0), np.float32), 0)
    data = _read(table)
    keys = _ids(data.column(table.key), table.key, table.path)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    duplicate = np.flatnonzero(keys[1:] == keys[:-1])
    if len(duplicate):
        raise DataError(
            f"{table.path}: key {table.key!r}: expected one row per id, got {keys[duplicate[0]]} more than once"
        )
    sparse = (
        np.column_stack([_ids(data.column(c), c, table.path)[order] for c in table.sparse])
        if table.sparse
        else np.zeros((len(keys), 0), np.int64)
    )
    dense = (
        np.column_stack([_dense(data.column(c), c, table.path)[order] for c in table.dense])
        if table.dense
        else np.zeros((len(keys), 0), np.float32)
    )
    at = np.minimum(np.searchsorted(keys, ids), max(len(keys) - 1, 0))
    found = (keys[at] == ids) if len(keys) else np.zeros(len(ids), dtype=bool)
    return Joined(
        np.where(found[:, None], sparse[at], 0),
        np.where(found[:, None], dense[at], 0).astype(np.float32),
        int((~found).sum()),
    )
