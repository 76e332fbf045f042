"""The pyarrow event-log reader: CSV and Parquet, good and malformed input, typed errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from duet_sdk.data.reader import read_event_log
from duet_sdk.data.spec import preset
from duet_sdk.errors import DataError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MOVIELENS = FIXTURES / "movielens_small.inter"
SPEC = preset("movielens")


def _rows() -> list[tuple[int, int, int, int]]:
    lines = MOVIELENS.read_text().splitlines()[1:]
    return [tuple(int(v) for v in line.split("\t")) for line in lines]


def _parquet(path: Path, table: pa.Table, row_group_size: int = 100) -> Path:
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def _movielens_table(rows=None) -> pa.Table:
    u, i, r, t = map(list, zip(*(rows or _rows())))
    return pa.table(
        {"user_id:token": u, "item_id:token": i, "rating:float": pa.array(r, pa.float64()), "timestamp:float": t}
    )


def test_recbole_movielens_csv_reads_every_row_in_file_order():
    columns, report = read_event_log(MOVIELENS, SPEC)
    rows = _rows()
    assert report.rows_read == report.rows_ok == len(rows) == len(columns) and report.bad_count == 0
    assert columns.user.tolist() == [r[0] for r in rows] and columns.item.tolist() == [r[1] for r in rows]
    assert columns.timestamp.tolist() == [r[3] for r in rows] and columns.timestamp.dtype == np.int64
    assert columns.behavior.tolist() == [int(r[2] >= 4) for r in rows]  # 0 = rated (< 4), 1 = liked
    assert report.behavior_counts == {"rated": sum(r[2] < 4 for r in rows), "liked": sum(r[2] >= 4 for r in rows)}
    assert report.time_range == (min(r[3] for r in rows), max(r[3] for r in rows))


def test_parquet_gives_the_same_columns_as_csv(tmp_path):
    csv_columns, _ = read_event_log(MOVIELENS, SPEC)
    columns, report = read_event_log(_parquet(tmp_path / "ml.parquet", _movielens_table()), SPEC)
    assert report.file_format == "parquet" and report.bad_count == 0
    for name in ("user", "item", "behavior", "timestamp"):
        assert np.array_equal(getattr(columns, name), getattr(csv_columns, name)), name


def test_parquet_timestamp_type_and_milliseconds_convert_to_seconds(tmp_path):
    rows = _rows()[:50]
    table = _movielens_table(rows).set_column(
        3, "timestamp:float", pa.array([r[3] * 1000 for r in rows], pa.timestamp("ms"))
    )
    columns, _ = read_event_log(_parquet(tmp_path / "ts.parquet", table), SPEC)
    assert columns.timestamp.tolist() == [r[3] for r in rows]


def test_spilled_columns_are_memory_mapped_and_equal(tmp_path):
    in_memory, _ = read_event_log(MOVIELENS, SPEC)
    spilled, _ = read_event_log(MOVIELENS, SPEC, spill=tmp_path)
    assert isinstance(spilled.user.base, np.memmap) and not spilled.user.flags.writeable
    assert np.array_equal(spilled.timestamp, in_memory.timestamp) and np.array_equal(
        spilled.behavior, in_memory.behavior
    )


def test_bad_csv_rows_name_their_line_and_reason_even_after_a_short_row(tmp_path):
    lines = MOVIELENS.read_text().splitlines()
    bad = {
        3: "5\t7",
        11: "5\tseven\t4\t881250949",
        20: "5\t7\t0.2\t881250949",
        30: "5\t7\tgood\t881250949",
        40: "5\t7\t4\t881250949000",
    }
    for number in sorted(bad):
        lines.insert(number - 1, bad[number])
    path = tmp_path / "bad.inter"
    path.write_text("\n".join(lines) + "\n")
    columns, report = read_event_log(path, SPEC, max_bad_fraction=0.05)
    assert len(columns) == len(_rows()) and report.bad_count == len(bad)
    got = dict(report.bad_rows)
    assert list(got) == [f"line {n}" for n in sorted(bad)]  # exact although line 3 forced a re-read
    assert got["line 3"] == "expected 4 fields, got 2"
    assert "item_id:token" in got["line 11"] and "not an integer" in got["line 11"]
    assert "rating:float" in got["line 20"] and "below the lowest level 'rated'" in got["line 20"]
    assert "expected a number" in got["line 30"]
    assert "milliseconds given as seconds" in got["line 40"]
    assert report.bad_by_column["rating:float"] == 2


def test_more_bad_rows_than_the_allowed_fraction_fail_the_load(tmp_path):
    path = tmp_path / "ms.inter"
    rows = _rows()
    path.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{r}\t{t * 1000}\n" for u, i, r, t in rows)
    )
    with pytest.raises(
        DataError, match=r"736 of 736 rows are bad.*no valid row.*line 2: timestamp:float.*set timestamp_unit = \"ms\""
    ):
        read_event_log(path, SPEC)
    lines = MOVIELENS.read_text().splitlines()
    lines[5] = "1\t2\t3\tyesterday"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"1 of 736 rows are bad \(more than max_bad_fraction=0.001"):
        read_event_log(path, SPEC, max_bad_fraction=0.001)
    assert read_event_log(path, SPEC, max_bad_fraction=0.01)[1].bad_rows == [
        ("line 6", "timestamp:float: expected a whole number of s since 1970 (>= 0), got 'yesterday'")
    ]


def test_unknown_behaviour_values_are_counted_and_reported(tmp_path):
    lines = [f"1,{k},3,pv,{1511539200 + k}" for k in range(200)] + [
        "1,2,3,click,1511539200",
        "1,2,3,Buy,1511539200",
        "1,2,3,click,1511539201",
    ]
    path = tmp_path / "taobao.csv"
    path.write_text("\n".join(lines) + "\n")
    _, report = read_event_log(path, preset("taobao"), max_bad_fraction=0.05)
    assert report.unknown_behaviors == {"click": 2, "Buy": 1}
    assert report.bad_rows[0] == (
        "line 201",
        "behavior_type: unknown behaviour 'click', expected one of pv, cart, fav, buy",
    )


def test_missing_column_and_empty_logs_are_reported(tmp_path):
    no_rating = tmp_path / "no_rating.inter"
    no_rating.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t881250949\n")
    with pytest.raises(DataError, match=r"\['rating:float'\] missing"):
        read_event_log(no_rating, SPEC)
    for name, text in (
        ("empty.inter", ""),
        ("header_only.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"),
    ):
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match="empty"):
            read_event_log(tmp_path / name, SPEC)
    with pytest.raises(DataError, match="existing event-log file"):
        read_event_log(tmp_path / "nope.inter", SPEC)


def test_parquet_column_of_the_wrong_type_is_named(tmp_path):
    table = _movielens_table().set_column(0, "user_id:token", pa.array([f"u{r[0]}" for r in _rows()]))
    with pytest.raises(DataError, match=r"column 'user_id:token': expected an integer id column, got type string"):
        read_event_log(_parquet(tmp_path / "strings.parquet", table), SPEC)
    taobao = pa.table(
        {"user_id": [1], "item_id": [2], "category_id": [3], "behavior_type": [1], "timestamp": [1511539200]}
    )
    with pytest.raises(DataError, match=r"column 'behavior_type': expected a string behaviour column"):
        read_event_log(_parquet(tmp_path / "codes.parquet", taobao), preset("taobao"))
    with pytest.raises(DataError, match=r"\['category_id'\] missing"):
        read_event_log(_parquet(tmp_path / "short.parquet", taobao.drop(["category_id"])), preset("taobao"))


def test_bad_parquet_rows_name_their_row_group_and_row(tmp_path):
    rows = _rows()
    users = pa.array([None if k == 150 else r[0] for k, r in enumerate(rows)], pa.int64())
    items = pa.array([-4 if k == 7 else r[1] for k, r in enumerate(rows)], pa.int64())
    ratings = pa.array([float("nan") if k == 420 else float(r[2]) for k, r in enumerate(rows)])
    table = pa.table(
        {
            "user_id:token": users,
            "item_id:token": items,
            "rating:float": ratings,
            "timestamp:float": [r[3] for r in rows],
        }
    )
    columns, report = read_event_log(_parquet(tmp_path / "bad.parquet", table), SPEC, max_bad_fraction=0.01)
    assert len(columns) == len(rows) - 3
    assert [w for w, _ in report.bad_rows] == ["row group 0, row 7", "row group 1, row 50", "row group 4, row 20"]
    assert "item_id:token" in report.bad_rows[0][1] and "-4" in report.bad_rows[0][1]
    assert "user_id:token" in report.bad_rows[1][1] and "null" in report.bad_rows[1][1]
    assert "rating:float" in report.bad_rows[2][1]


@pytest.mark.parametrize("short_row", [False, True])
def test_line_numbers_stay_exact_across_many_record_batches(tmp_path, monkeypatch, short_row):
    from duet_sdk.data import reader

    monkeypatch.setattr(reader, "_CSV_BLOCK", 2048)  # ~70 rows per batch: dozens of batches
    lines = [f"{k % 17},{k},{k % 5},pv,{1511539200 + k}" for k in range(3000)]
    bad = {1500: "1,2,3,pv,soon", 2999: "1,2,3,purchase,1511539200"} | ({40: "1,2,3"} if short_row else {})
    for number in sorted(bad):
        lines.insert(number - 1, bad[number])
    path = tmp_path / "many.csv"
    path.write_text("\n".join(lines) + "\n")
    columns, report = reader.read_event_log(path, preset("taobao"))
    assert [w for w, _ in report.bad_rows] == [f"line {n}" for n in sorted(bad)]
    assert len(columns) == 3000 and columns.item.tolist() == list(range(3000))
