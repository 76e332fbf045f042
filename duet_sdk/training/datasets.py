"""Event datasets for training: the synthetic default or an event log, with a lineage description."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from duet_sdk import serialization
from duet_sdk.data.events import EventDataset
from duet_sdk.data.synthetic import SyntheticConfig, generate
from duet_sdk.data.synthetic_longtail import LongTailConfig, describe, generate_longtail
from duet_sdk.data.taobao import TaobaoOptions, load_taobao
from duet_sdk.errors import ConfigError, DataError

EVENT_FORMATS = ("taobao",)
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
    report = f"synthetic: {config.num_users} users, {len(data.click_train)} click / {len(data.conv_train)} conv training rows"
    return LoadedData(data, {"source": "synthetic", "config": serialization.to_dict(config)}, report)


def longtail_data(config: LongTailConfig) -> LoadedData:
    """The harder long-tail synthetic benchmark (global temporal split)."""
    data = generate_longtail(config)
    shape = ", ".join(f"{k} {v:.3g}" for k, v in describe(data, config).items())
    report = (f"longtail: {config.num_users} users, {config.num_items} items, {len(data.click_train)} click / "
              f"{len(data.conv_train)} conv / {len(data.ranker_train)} ranker training rows; {shape}")
    return LoadedData(data, {"source": "longtail", "config": serialization.to_dict(config)}, report)


def event_log_data(path: Path, event_format: str, options: TaobaoOptions) -> LoadedData:
    """Load an event log of ``event_format`` (only "taobao": the UserBehavior CSV layout)."""
    if event_format not in EVENT_FORMATS:
        raise ConfigError("event_format", f"one of {EVENT_FORMATS}", event_format)
    if not Path(path).is_file():
        raise DataError(f"events: expected an existing event-log file, got {str(path)!r}")
    data = load_taobao(path, options)
    description = {
        "source": event_format,
        "path": str(Path(path).resolve()),
        "sha256": _sha256(Path(path)),
        "options": serialization.to_dict(options),
        "rows_ok": data.report.rows_ok,
        "bad_rows": len(data.report.bad_rows),
    }
    return LoadedData(data, description, data.report.summary())
