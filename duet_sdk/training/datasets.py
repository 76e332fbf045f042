"""Event datasets for training: the synthetic default or an event log, with a lineage description."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from duet_sdk import serialization
from duet_sdk.data.eventlog import EventLogOptions, load_event_log
from duet_sdk.data.events import EventDataset
from duet_sdk.data.spec import EventLogSpec, preset, preset_names
from duet_sdk.data.synthetic import SyntheticConfig, generate

EVENT_FORMATS = preset_names()  # shipped event-log specs: "movielens", "taobao"


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
    report = f"synthetic: {config.num_users} users, {len(data.click_train)} click / {len(data.conv_train)} conv training rows"
    return LoadedData(data, {"source": "synthetic", "config": serialization.to_dict(config)}, report)


def event_spec(event_format: str = "taobao", spec_path: Path | None = None) -> EventLogSpec:
    """The spec of ``--event-spec FILE`` if given, else the preset named by ``--event-format``."""
    return EventLogSpec.from_toml(spec_path) if spec_path is not None else preset(event_format)


def event_log_data(path: Path, spec: EventLogSpec | str, options: EventLogOptions) -> LoadedData:
    """Load the event log at ``path`` described by ``spec`` (an ``EventLogSpec`` or a preset name)."""
    spec = preset(spec) if isinstance(spec, str) else spec
    data = load_event_log(path, spec, options)
    description = {
        "source": spec.name,
        "path": str(Path(path).resolve()),
        "sha256": _sha256(Path(path)),
        "spec": serialization.to_dict(spec),
        "options": serialization.to_dict(options),
        "rows_ok": data.report.read.rows_ok,
        "bad_rows": data.report.read.bad_count,
    }
    return LoadedData(data, description, data.report.summary())
