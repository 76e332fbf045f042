"""The event-log spec: presets, TOML files, and typed errors naming the bad field."""

from __future__ import annotations

from pathlib import Path

import pytest

from duet_sdk.data.spec import EventLogSpec, preset, preset_names
from duet_sdk.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MINIMAL = """
name = "shop"
[columns]
user = "uid"
item = "sku"
behavior = "action"
timestamp = "ts"
timestamp_unit = "ms"
extra_ids = ["brand"]
[behaviors]
values = ["view", "buy"]
[streams.click]
behaviors = ["view"]
max_len = 7
[streams.conv]
behaviors = ["buy"]
[labels]
exposure = ["view"]
ctr = ["view"]
attributed_conversion = ["buy"]
"""


def _spec(tmp_path: Path, text: str) -> EventLogSpec:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return EventLogSpec.from_toml(path)


def test_presets_describe_taobao_and_recbole_movielens():
    assert preset_names() == ("movielens", "taobao")
    taobao, movielens = preset("taobao"), preset("movielens")
    assert taobao.csv.header is False and taobao.csv.column_names[3] == "behavior_type"
    assert taobao.stream_behaviors == {"click": ("pv",), "conv": ("cart", "fav", "buy")}
    assert taobao.schema().item_sparse == ("item_id", "category_id")
    assert movielens.csv.delimiter == "\t" and movielens.csv.header is True
    assert movielens.columns() == ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
    assert movielens.behavior_names == ("rated", "liked")
    assert movielens.stream_behaviors == {"click": ("rated", "liked"), "conv": ("liked",)}
    assert movielens.labels["attributed_conversion"] == ("liked",) and "link_click" not in movielens.labels


def test_a_spec_file_becomes_a_schema_with_its_streams_and_fields(tmp_path):
    spec = _spec(tmp_path, MINIMAL)
    assert (
        spec.timestamp_unit == "ms"
        and spec.file_format("x.PARQUET") == "parquet"
        and spec.file_format("x.tsv") == "csv"
    )
    schema = spec.schema()
    assert [(s.name, s.max_len) for s in schema.streams] == [("click", 7), ("conv", 50)]
    assert schema.event_fields == ("item_id", "brand", "behavior")
    assert schema.static_dense == ("log_click_count", "log_conv_count")


def test_side_table_paths_resolve_next_to_the_spec_file():
    spec = EventLogSpec.from_toml(FIXTURES / "movielens_items.toml")
    assert Path(spec.item_table.path) == FIXTURES / "movielens_items.csv"
    assert spec.schema().item_sparse == ("item_id", "genre_id") and spec.schema().item_dense == (
        "log_item_popularity",
        "year",
    )


@pytest.mark.parametrize(
    "old, new, field",
    [
        ('timestamp_unit = "ms"', 'timestamp_unit = "us"', "columns.timestamp_unit"),
        ('item = "sku"', 'item = "uid"', "columns"),
        ('behaviors = ["buy"]\n[labels]', 'behaviors = ["refund"]\n[labels]', "streams.conv.behaviors"),
        ('attributed_conversion = ["buy"]', "", "labels"),
        ('ctr = ["view"]', 'ctr = ["view"]\nwatch_time = ["view"]', "labels.watch_time"),
        ('values = ["view", "buy"]', 'values = ["view", "buy"]\nlevels = [{name = "x", min = 1}]', "behaviors"),
        ("max_len = 7", "max_len = 0", "StreamSpec(click).max_len"),
        ('name = "shop"', 'name = "shop"\nformat = "json"', "format"),
        ('name = "shop"', 'name = "shop"\ncolour = "red"', "event spec"),
        ('name = "shop"', 'name = "shop"\n[csv]\nheader = false', "csv.column_names"),
        ('name = "shop"', 'name = "shop"\nplausible_years = [2000, 2300]', "plausible_years[1]"),
    ],
)
def test_bad_spec_raises_config_error_naming_the_field(tmp_path, old, new, field):
    assert old in MINIMAL
    with pytest.raises(ConfigError) as excinfo:
        _spec(tmp_path, MINIMAL.replace(old, new, 1))
    assert excinfo.value.field == field


def test_numeric_levels_must_increase(tmp_path):
    text = MINIMAL.replace('values = ["view", "buy"]', 'levels = [{name = "view", min = 3}, {name = "buy", min = 1}]')
    with pytest.raises(ConfigError, match="increasing"):
        _spec(tmp_path, text)


def test_unknown_preset_and_unreadable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="movielens"):
        preset("criteo")
    with pytest.raises(ConfigError, match="existing TOML file"):
        EventLogSpec.from_toml(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="valid TOML"):
        _spec(tmp_path, "name = ")
