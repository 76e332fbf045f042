"""Event-log spec: what the columns of a log mean, which behaviours feed which stream and label which task.

A spec is written as TOML (``EventLogSpec.from_toml``) and validates itself. The reader
(``duet_sdk.data.reader``) uses the file layout, the column names and the behaviour definition; example
construction (``duet_sdk.data.examples``) uses streams and labels. Presets ship beside this module:
``preset("taobao")`` (UserBehavior CSV) and ``preset("movielens")`` (RecBole's atomic ``.inter`` files).

Example:
    >>> spec = preset("movielens")
    >>> spec.behavior_names, spec.stream_behaviors["conv"]
    (('rated', 'liked'), ('liked',))
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from duet_sdk.data.routing import CLICK_TASKS, CONV_TASKS
from duet_sdk.data.schema import EventSchema, StreamSpec
from duet_sdk.errors import ConfigError
from duet_sdk.validation import require_int

PRESET_DIR = Path(__file__).resolve().parent / "specs"
FORMATS = ("auto", "csv", "parquet")
TIMESTAMP_UNITS = {"s": 1, "ms": 1000}
LABEL_TASKS = CLICK_TASKS + CONV_TASKS
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _strings(field_name: str, value: Any, allow_empty: bool = True) -> tuple[str, ...]:
    if (
        isinstance(value, str)
        or not isinstance(value, (list, tuple))
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise ConfigError(field_name, "a list of non-empty strings", value)
    if not allow_empty and not value:
        raise ConfigError(field_name, "at least one name", value)
    if len(set(value)) != len(value):
        raise ConfigError(field_name, "distinct names", value)
    return tuple(value)


def _column(field_name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(field_name, "a column name (non-empty string)", value)


@dataclass(frozen=True)
class CsvLayout:
    """CSV/TSV layout: ``delimiter``, whether line 1 is a header, else the ``column_names`` in order."""

    delimiter: str = ","
    header: bool = True
    column_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.delimiter, str) or len(self.delimiter) != 1 or self.delimiter in '\r\n"':
            raise ConfigError("csv.delimiter", "one character (not a quote or line break)", self.delimiter)
        if not isinstance(self.header, bool):
            raise ConfigError("csv.header", "true or false", self.header)
        names = _strings("csv.column_names", list(self.column_names))
        if not self.header and not names:
            raise ConfigError(
                "csv.column_names", "the file's column names in order (csv.header is false)", self.column_names
            )


@dataclass(frozen=True)
class BehaviorLevel:
    """A numeric behaviour column's level: an event is the highest level whose ``min`` <= its value."""

    name: str
    min: float

    def __post_init__(self) -> None:
        if not isinstance(self.min, (int, float)) or isinstance(self.min, bool) or not math.isfinite(self.min):
            raise ConfigError(f"behaviors.levels[{self.name}].min", "a finite number", self.min)


@dataclass(frozen=True)
class SideTable:
    """A static table keyed by user or item id: ``sparse`` int64 ID columns, ``dense`` float columns.
    A relative ``path`` is relative to the spec file (or the working directory for a spec built in code)."""

    path: str
    key: str
    sparse: tuple[str, ...] = ()
    dense: tuple[str, ...] = ()
    format: str = "auto"
    csv: CsvLayout = field(default_factory=CsvLayout)

    def __post_init__(self) -> None:
        _column("side_table.path", self.path)
        _column("side_table.key", self.key)
        cols = _strings("side_table.sparse", list(self.sparse)) + _strings("side_table.dense", list(self.dense))
        if not cols:
            raise ConfigError("side_table", "at least one sparse or dense column", cols)
        if self.format not in FORMATS:
            raise ConfigError("side_table.format", f"one of {FORMATS}", self.format)


@dataclass(frozen=True)
class EventLogSpec:
    """The meaning of an event log's columns and behaviours.

    Args:
        name: a label for reports and checkpoint lineage.
        user, item, behavior, timestamp: column names in the file.
        timestamp_unit: "s" or "ms" (Unix epoch); ``plausible_years`` bounds the years events may fall in.
        extra_ids: further int64 ID columns (category, author, ...): carried per event and, from an
            item's first row in the file, as candidate attributes.
        behaviors: values of a categorical behaviour column (e.g. pv, cart, fav, buy); or
        behavior_levels: for a numeric behaviour column (e.g. a rating), named levels by minimum value.
        streams: stream name -> (behaviours routed to it, max events a model sees).
        exposure: behaviours that make a (user, item) pair a candidate row in a label window.
        labels: task (of the click and conv streams' tasks) -> behaviours that make it positive; a task
            absent here does not apply (label mask 0).
        format / csv: the file layout (format "auto": by suffix, .parquet/.pq is Parquet).
        user_table / item_table: optional static side tables.
    """

    name: str
    user: str
    item: str
    behavior: str
    timestamp: str
    streams: dict[str, tuple[tuple[str, ...], int]]
    exposure: tuple[str, ...]
    labels: dict[str, tuple[str, ...]]
    behaviors: tuple[str, ...] = ()
    behavior_levels: tuple[BehaviorLevel, ...] = ()
    timestamp_unit: str = "s"
    extra_ids: tuple[str, ...] = ()
    format: str = "auto"
    csv: CsvLayout = field(default_factory=CsvLayout)
    plausible_years: tuple[int, int] = (1990, 2100)
    user_table: SideTable | None = None
    item_table: SideTable | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", "a non-empty string", self.name)
        for role in ("user", "item", "behavior", "timestamp"):
            _column(f"columns.{role}", getattr(self, role))
        extra = _strings("columns.extra_ids", list(self.extra_ids))
        used = (self.user, self.item, self.behavior, self.timestamp) + extra
        if len(set(used)) != len(used):
            raise ConfigError("columns", "a distinct column for each role", used)
        if self.timestamp_unit not in TIMESTAMP_UNITS:
            raise ConfigError("columns.timestamp_unit", f"one of {tuple(TIMESTAMP_UNITS)}", self.timestamp_unit)
        if self.format not in FORMATS:
            raise ConfigError("format", f"one of {FORMATS}", self.format)
        if self.csv.column_names and not set(used) <= set(self.csv.column_names):
            raise ConfigError(
                "csv.column_names", f"every column the spec uses {sorted(set(used))}", self.csv.column_names
            )
        self._check_behaviors()
        self._check_routes()
        low, high = (
            self.plausible_years
            if isinstance(self.plausible_years, (list, tuple)) and len(self.plausible_years) == 2
            else (None, None)
        )
        require_int("plausible_years[0]", low, 1970)
        require_int("plausible_years[1]", high, low)
        if high > 2105:
            raise ConfigError("plausible_years[1]", "a year <= 2105 (timestamps are below 2**32 seconds)", high)

    def _check_behaviors(self) -> None:
        if bool(self.behaviors) == bool(self.behavior_levels):
            raise ConfigError(
                "behaviors",
                "either values (a categorical column) or levels (a numeric column)",
                self.behaviors or self.behavior_levels,
            )
        if self.behaviors:
            _strings("behaviors.values", list(self.behaviors), allow_empty=False)
        else:
            mins = [level.min for level in self.behavior_levels]
            if mins != sorted(set(mins)):
                raise ConfigError("behaviors.levels", "levels in increasing order of min", mins)
        for name in self.behavior_names:
            if not _NAME.match(name):
                raise ConfigError("behaviors", "lower_snake_case behaviour names", name)

    def _check_routes(self) -> None:
        known = set(self.behavior_names)

        def behaviours(field_name: str, names: Any, allow_empty: bool = False) -> None:
            unknown = set(_strings(field_name, list(names), allow_empty)) - known
            if unknown:
                raise ConfigError(field_name, f"behaviours among {self.behavior_names}", sorted(unknown))

        if not isinstance(self.streams, dict) or not self.streams:
            raise ConfigError("streams", "at least one stream", self.streams)
        for name, (names, max_len) in self.streams.items():
            StreamSpec(name, max_len)
            behaviours(f"streams.{name}.behaviors", names)
        behaviours("labels.exposure", self.exposure)
        for task, names in self.labels.items():
            if task not in LABEL_TASKS:
                raise ConfigError(f"labels.{task}", f"a task among {LABEL_TASKS}", task)
            behaviours(f"labels.{task}", names)
        if not self.labels.get(CLICK_TASKS[0]) or not self.labels.get(CONV_TASKS[0]):
            raise ConfigError(
                "labels",
                f"behaviours for the primary tasks {CLICK_TASKS[0]!r} and {CONV_TASKS[0]!r}",
                sorted(self.labels),
            )

    @property
    def behavior_names(self) -> tuple[str, ...]:
        """Behaviour names in code order (an event's ``behavior`` field holds the index)."""
        return self.behaviors or tuple(level.name for level in self.behavior_levels)

    @property
    def stream_behaviors(self) -> dict[str, tuple[str, ...]]:
        return {name: names for name, (names, _) in self.streams.items()}

    def codes(self, names: tuple[str, ...]) -> list[int]:
        """Behaviour codes of ``names``."""
        return [self.behavior_names.index(n) for n in names]

    def columns(self) -> tuple[str, ...]:
        """The log columns the reader needs: user, item, behaviour, timestamp, extra IDs."""
        return (self.user, self.item, self.behavior, self.timestamp) + tuple(self.extra_ids)

    def file_format(self, path: str | PathLike) -> str:
        """ "csv" or "parquet" for ``path`` (by suffix when ``format`` is "auto")."""
        if self.format != "auto":
            return self.format
        return "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else "csv"

    def schema(self) -> EventSchema:
        """The EBF schema of the dataset this log becomes (streams, event/static/item fields)."""
        extra = tuple(_field_name(c) for c in self.extra_ids)
        user_side, item_side = self.user_table, self.item_table
        return EventSchema(
            streams=tuple(StreamSpec(name, max_len) for name, (_, max_len) in self.streams.items()),
            id_fields=("item_id",) + extra + ("behavior",),
            num_semantic_codes=0,
            static_sparse=("user_id",) + (tuple(_field_name(c) for c in user_side.sparse) if user_side else ()),
            static_dense=tuple(f"log_{s}_count" for s in self.streams)
            + (tuple(_field_name(c) for c in user_side.dense) if user_side else ()),
            item_sparse=("item_id",) + extra + (tuple(_field_name(c) for c in item_side.sparse) if item_side else ()),
            item_dense=("log_item_popularity",) + (tuple(_field_name(c) for c in item_side.dense) if item_side else ()),
        )

    @classmethod
    def from_dict(cls, doc: dict, base: Path | None = None) -> EventLogSpec:
        """Build from a parsed TOML document (layout in ``duet_sdk/data/specs/*.toml``)."""
        return _from_dict(doc, base)

    @classmethod
    def from_toml(cls, path: str | PathLike) -> EventLogSpec:
        """Read a spec file; relative side-table paths are resolved against its directory."""
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("event_spec", "an existing TOML file", str(path)) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError("event_spec", "valid TOML", f"{path}: {exc}") from None
        return cls.from_dict(doc, path.parent)


def _field_name(column: str) -> str:
    """A schema field name for a file column: ``category_id:token`` -> ``category_id``."""
    name = re.sub(r"[^a-z0-9_]", "_", column.split(":")[0].lower()).strip("_")
    return name if _NAME.match(name) else f"f_{name}"


def _table(doc: dict, key: str) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(key, "a table", value)
    return value


def _known_keys(where: str, table: dict, allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(where, f"keys among {sorted(allowed)}", sorted(unknown))


def _csv_layout(table: dict, where: str) -> CsvLayout:
    _known_keys(where, table, {"delimiter", "header", "column_names"})
    return CsvLayout(
        table.get("delimiter", ","),
        table.get("header", True),
        tuple(_strings(f"{where}.column_names", table.get("column_names", []))),
    )


def _side_table(doc: dict, key: str, base: Path | None) -> SideTable | None:
    if key not in doc:
        return None
    table = _table(doc, key)
    _known_keys(key, table, {"path", "key", "sparse", "dense", "format", "csv"})
    path = table.get("path")
    if isinstance(path, str) and base is not None and not Path(path).is_absolute():
        path = str(base / path)
    return SideTable(
        path=path,
        key=table.get("key"),
        sparse=_strings(f"{key}.sparse", table.get("sparse", [])),
        dense=_strings(f"{key}.dense", table.get("dense", [])),
        format=table.get("format", "auto"),
        csv=_csv_layout(_table(table, "csv"), f"{key}.csv"),
    )


def _from_dict(doc: dict, base: Path | None) -> EventLogSpec:
    _known_keys(
        "event spec",
        doc,
        {
            "name",
            "format",
            "csv",
            "columns",
            "behaviors",
            "streams",
            "labels",
            "plausible_years",
            "user_table",
            "item_table",
        },
    )
    columns, behaviors, labels = _table(doc, "columns"), _table(doc, "behaviors"), dict(_table(doc, "labels"))
    _known_keys("columns", columns, {"user", "item", "behavior", "timestamp", "timestamp_unit", "extra_ids"})
    _known_keys("behaviors", behaviors, {"values", "levels"})
    levels = behaviors.get("levels", [])
    if not isinstance(levels, list) or not all(isinstance(v, dict) and set(v) == {"name", "min"} for v in levels):
        raise ConfigError("behaviors.levels", "a list of {name, min} tables", levels)
    streams = {}
    for name, stream in _table(doc, "streams").items():
        if not isinstance(stream, dict):
            raise ConfigError(f"streams.{name}", "a table {behaviors, max_len}", stream)
        _known_keys(f"streams.{name}", stream, {"behaviors", "max_len"})
        streams[name] = (_strings(f"streams.{name}.behaviors", stream.get("behaviors", [])), stream.get("max_len", 50))
    exposure = labels.pop("exposure", [])
    years = doc.get("plausible_years", [1990, 2100])
    return EventLogSpec(
        name=doc.get("name", "events"),
        user=columns.get("user"),
        item=columns.get("item"),
        behavior=columns.get("behavior"),
        timestamp=columns.get("timestamp"),
        timestamp_unit=columns.get("timestamp_unit", "s"),
        extra_ids=_strings("columns.extra_ids", columns.get("extra_ids", [])),
        behaviors=_strings("behaviors.values", behaviors.get("values", [])),
        behavior_levels=tuple(BehaviorLevel(v["name"], v["min"]) for v in levels),
        streams=streams,
        exposure=_strings("labels.exposure", exposure),
        labels={task: _strings(f"labels.{task}", names) for task, names in labels.items()},
        format=doc.get("format", "auto"),
        csv=_csv_layout(_table(doc, "csv"), "csv"),
        plausible_years=tuple(years) if isinstance(years, list) else years,
        user_table=_side_table(doc, "user_table", base),
        item_table=_side_table(doc, "item_table", base),
    )


def preset_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in PRESET_DIR.glob("*.toml")))


def preset(name: str) -> EventLogSpec:
    """A shipped spec by name: "taobao" or "movielens" (``duet_sdk/data/specs/<name>.toml``)."""
    if name not in preset_names():
        raise ConfigError("event_format", f"one of {preset_names()}", name)
    return EventLogSpec.from_toml(PRESET_DIR / f"{name}.toml")
