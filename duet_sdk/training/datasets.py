"""Event datasets for training: the synthetic default or an event log, with a lineage description."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duet_sdk import serialization
from duet_sdk.data.batching import ACTIVITY_BUCKET
from duet_sdk.data.eventlog import EventLogOptions, load_event_log
from duet_sdk.data.events import EventDataset, EventTable
from duet_sdk.data.spec import EventLogSpec, preset, preset_names
from duet_sdk.data.synthetic import SyntheticConfig, generate
from duet_sdk.data.synthetic_longtail import LongTailConfig, describe, generate_longtail

EVENT_FORMATS = preset_names()  # shipped event-log specs: "movielens", "taobao"
SYNTHETIC_DATASETS = ("synthetic", "longtail")


@dataclass
class LoadedData:
    """A dataset, the JSON-able description that goes into checkpoint lineage, and a report to print."""

    dataset: EventDataset
    description: dict
    report: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def synthetic_data(config: SyntheticConfig) -> LoadedData:
    data = generate(config)
    rows = f"{len(data.click_train)} click / {len(data.conv_train)} conv training rows"
    report = f"synthetic: {config.num_users} users, {rows}"
    return LoadedData(data, {"source": "synthetic", "config": serialization.to_dict(config)}, report)


def longtail_data(config: LongTailConfig) -> LoadedData:
    """The harder long-tail synthetic benchmark (global temporal split)."""
    data = generate_longtail(config)
    shape = ", ".join(f"{k} {v:.3g}" for k, v in describe(data, config).items())
    report = (
        f"longtail: {config.num_users} users, {config.num_items} items, {len(data.click_train)} click / "
        f"{len(data.conv_train)} conv / {len(data.ranker_train)} ranker training rows; {shape}"
    )
    return LoadedData(data, {"source": "longtail", "config": serialization.to_dict(config)}, report)


def event_spec(event_format: str = "taobao", spec_path: Path | None = None) -> EventLogSpec:
    """The spec of ``--event-spec FILE`` if given, else the preset named by ``--event-format``."""
    return EventLogSpec.from_toml(spec_path) if spec_path is not None else preset(event_format)


def without_user_id(data: EventDataset) -> EventDataset:
    """``data`` without the raw ``user_id`` static feature, which lets a model memorise each user.

    Where no other static sparse feature is left, a coarse ``activity_bucket`` takes its place:
    floor(log2(1 + the user's history events)), from the ``log_<stream>_count`` dense features.
    """
    schema = data.schema
    if "user_id" not in schema.static_sparse:
        return data
    keep = [i for i, name in enumerate(schema.static_sparse) if name != "user_id"]
    names, sparse = tuple(schema.static_sparse[i] for i in keep), data.table.static_sparse[:, keep]
    if not names:
        counts = [
            i for i, name in enumerate(schema.static_dense) if name.startswith("log_") and name.endswith("_count")
        ]
        events = np.expm1(data.table.static_dense[:, counts].astype(np.float64)).sum(axis=1)
        names, sparse = (
            (ACTIVITY_BUCKET,),
            np.floor(np.log2(1.0 + events))[:, None],
        )  # batches recount it at each request
    schema = dataclasses.replace(schema, static_sparse=names)
    t = data.table
    table = EventTable(schema, t.user_ids, np.ascontiguousarray(sparse, dtype=np.int64), t.static_dense, t.streams)
    return dataclasses.replace(data, schema=schema, table=table)


def event_log_data(
    path: Path, spec: EventLogSpec | str, options: EventLogOptions, static_user_id: bool = False
) -> LoadedData:
    """Load the event log at ``path`` described by ``spec`` (an ``EventLogSpec`` or a preset name).

    The raw user ID is a static feature only with ``static_user_id`` (opt-in, see ``without_user_id``).
    """
    spec = preset(spec) if isinstance(spec, str) else spec
    data = load_event_log(path, spec, options)
    if not static_user_id:
        data = without_user_id(data)
    description = {
        "static_user_id": static_user_id,
        "source": spec.name,
        "path": str(Path(path).resolve()),
        "sha256": _sha256(Path(path)),
        "spec": serialization.to_dict(spec),
        "options": serialization.to_dict(options),
        "rows_ok": data.report.read.rows_ok,
        "bad_rows": data.report.read.bad_count,
    }
    return LoadedData(data, description, data.report.summary())
