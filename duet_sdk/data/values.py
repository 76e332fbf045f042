"""Column-wise parsing of event-log values with ``pyarrow.compute``: ids, behaviours, timestamps.

Each parser takes one batch column (CSV: strings; Parquet: its stored type) and returns ``Parsed``:
the values (R,), a validity mask (R,) and a function that explains why row ``i`` is bad. Explaining
touches only bad rows; the good path has no Python loop over rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duet_sdk.data.events import MAX_TIMESTAMP
from duet_sdk.data.spec import TIMESTAMP_UNITS, EventLogSpec
from duet_sdk.errors import DataError

INT64_MAX = str(2**63 - 1)
NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
SECONDS_PER_YEAR = 365.2425 * 86400


@dataclass
class Parsed:
    """One column of a batch: ``values`` (R,), ``ok`` (R,) bool, ``reason(i)`` for a bad row."""

    values: np.ndarray
    ok: np.ndarray
    reason: Callable[[int], str]
    unknown: Counter = field(default_factory=Counter)


def _np(array: pa.Array, fill) -> np.ndarray:
    return pc.fill_null(array, fill).to_numpy(zero_copy_only=False)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _plain(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A single array with dictionaries decoded."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _type_error(name: str, expected: str, got: pa.DataType) -> DataError:
    return DataError(f"column {name!r}: expected {expected}, got type {got}")


def _text(array: pa.Array, i: int) -> str:
    value = array[i].as_py()
    return "null" if value is None else repr(value)


def _string_ints(s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed decimal strings as int64 in [0, 2**63): values, ok."""
    digits = pc.fill_null(pc.ascii_is_decimal(s), False)
    n = pc.utf8_length(s)
    fits = pc.or_(pc.less_equal(n, 18), pc.and_(pc.equal(n, 19), pc.less_equal(s, INT64_MAX)))
    ok = pc.fill_null(pc.and_(digits, fits), False)
    return _np(pc.cast(pc.if_else(ok, s, "0"), pa.int64()), 0), _np(ok, False)


def parse_ids(array: pa.Array, name: str, text: bool = True) -> Parsed:
    """Integer ids in [0, 2**63): strings (``text``: a CSV column) or any integer type."""
    array = _plain(array)
    if text and _is_string(array.type):
        s = pc.utf8_trim_whitespace(array)
        values, ok = _string_ints(s)

        def reason(i: int) -> str:
            raw = s[i].as_py()
            what = (
                "empty"
                if not raw
                else "negative"
                if raw[:1] == "-" and raw[1:].isdigit()
                else "out of range"
                if raw.isdigit()
                else "not an integer"
            )
            return f"{name}: expected an integer id in [0, 2**63), got {raw!r} ({what})"

        return Parsed(values, ok, reason)
    if not pa.types.is_integer(array.type):
        raise _type_error(name, "an integer id column", array.type)
    valid = _np(array.is_valid(), False)
    if pa.types.is_unsigned_integer(array.type):
        ok = valid & _np(pc.less_equal(array, 2**63 - 1), False)
        values = _np(pc.if_else(ok, array, 0).cast(pa.int64()), 0)
    else:
        values = _np(array.cast(pa.int64()), 0)
        ok = valid & (values >= 0)
    return Parsed(values, ok, lambda i: f"{name}: expected an integer id in [0, 2**63), got {_text(array, i)}")


def parse_behavior(array: pa.Array, spec: EventLogSpec, text: bool = True) -> Parsed:
    """Behaviour codes (int8, index into ``spec.behavior_names``) from values or numeric levels."""
    name, array = spec.behavior, _plain(array)
    if spec.behaviors:
        if not _is_string(array.type):
            raise _type_error(name, "a string behaviour column (values " + ", ".join(spec.behaviors) + ")", array.type)
        s = pc.utf8_trim_whitespace(array)
        codes = pc.index_in(s, value_set=pa.array(spec.behaviors, type=s.type))
        ok = _np(codes.is_valid(), False)
        unknown = Counter()
        if not ok.all():
            for entry in pc.value_counts(s.filter(pa.array(~ok))).to_pylist():
                unknown["null" if entry["values"] is None else entry["values"]] += entry["counts"]
        expected = ", ".join(spec.behaviors)
        return Parsed(
            _np(codes, 0).astype(np.int8),
            ok,
            lambda i: f"{name}: unknown behaviour {_text(s, i)}, expected one of {expected}",
            unknown,
        )
    if text and _is_string(array.type):
        s = pc.utf8_trim_whitespace(array)
        number = _np(pc.match_substring_regex(s, pattern=NUMBER), False)
        values = _np(pc.cast(pc.if_else(pa.array(number), s, "0"), pa.float64()), 0.0)
    elif pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
        s, values = array, _np(array.cast(pa.float64()), np.nan)
        number = np.isfinite(values)
    else:
        raise _type_error(name, "a numeric behaviour column (levels)", array.type)
    mins = np.array([level.min for level in spec.behavior_levels])
    codes = np.searchsorted(mins, values, side="right") - 1
    ok = number & (codes >= 0)
    lowest = spec.behavior_levels[0]

    def reason(i: int) -> str:
        if not number[i]:
            return f"{name}: expected a number, got {_text(s, i)}"
        return f"{name}: {values[i]:g} is below the lowest level {lowest.name!r} (min {lowest.min:g})"

    return Parsed(np.maximum(codes, 0).astype(np.int8), ok, reason)


def parse_timestamps(array: pa.Array, name: str, unit: str, years: tuple[int, int], text: bool = True) -> Parsed:
    """Whole-number timestamps in ``unit`` (Parquet timestamp types carry their own unit) whose years
    lie in ``years``. Values stay in the file's unit; the reader divides."""
    array = _plain(array)
    scale = TIMESTAMP_UNITS[unit]
    if pa.types.is_timestamp(array.type):  # stored unit -> the spec's unit
        per_second = {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}[array.type.unit]
        array = (
            pc.divide(array.cast(pa.int64()), per_second // scale)
            if per_second >= scale
            else pc.multiply(array.cast(pa.int64()), scale // per_second)
        )
    if text and _is_string(array.type):
        s = pc.utf8_trim_whitespace(array)
        values, ok = _string_ints(s)
        decimal = ~ok & _np(pc.match_substring_regex(s, pattern=NUMBER), False)
        if decimal.any():  # "874965758.0", "1.5e9": whole numbers written as decimals
            as_float = _np(pc.cast(pc.if_else(pa.array(decimal), s, "0"), pa.float64()), 0.0)
            whole = decimal & (as_float == np.floor(as_float)) & (as_float >= 0) & (as_float < 2**62)
            values = values.copy()  # arrow buffers are read-only
            values[whole], ok = as_float[whole].astype(np.int64), ok | whole
    elif pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
        s, raw = array, _np(array.cast(pa.float64(), safe=False), np.nan)
        ok = np.isfinite(raw) & (raw >= 0) & (raw == np.floor(raw)) & (raw < 2**62)
        values = (
            np.where(ok, raw, 0).astype(np.int64)
            if pa.types.is_floating(array.type)
            else _np(array.cast(pa.int64(), safe=False), 0)
        )
    else:
        raise _type_error(name, "an integer, float or timestamp column", array.type)
    first = int((np.datetime64(f"{years[0]}-01-01", "s") - np.datetime64(0, "s")).astype(np.int64))
    end = min(
        MAX_TIMESTAMP, int((np.datetime64(f"{years[1] + 1}-01-01", "s") - np.datetime64(0, "s")).astype(np.int64))
    )
    seconds = values // scale
    plausible = ok & (seconds >= first) & (seconds < end)

    def reason(i: int) -> str:
        if not ok[i]:
            return f"{name}: expected a whole number of {unit} since 1970 (>= 0), got {_text(s, i)}"
        year = 1970 + seconds[i] / SECONDS_PER_YEAR
        hint = ""
        if unit == "s" and year > years[1] and 1970 + seconds[i] / 1000 / SECONDS_PER_YEAR >= years[0]:
            hint = '; milliseconds given as seconds? set timestamp_unit = "ms"'
        elif unit == "ms" and year < years[0] and 1970 + seconds[i] * 1000 / SECONDS_PER_YEAR <= years[1]:
            hint = '; seconds given as milliseconds? set timestamp_unit = "s"'
        plausible = f"{years[0]}..{years[1]}"
        return f"{name}: {values[i]} {unit} is in the year {int(year)}, outside the plausible years {plausible}{hint}"

    return Parsed(values, plausible, reason)
