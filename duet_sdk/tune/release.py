"""Write the tuner's choice as a new release V+1 through ``duet-publish``'s own path (atomic staging,
digest checks, ``repository.json`` last), from the export the tuned release was published from.

The release under tuning is never touched. Components the tuner did not tune (the guards, models of
pipelines not tuned) keep the settings they have in the tuned release. Before publishing, the export's
artifact digests must equal the tuned release's (else the measured artifacts are not the ones that
would be published); after, each new config is read back and must hold exactly the chosen settings
before the release is made the target.
"""

from __future__ import annotations

from pathlib import Path

from duet_sdk import interface as api
from duet_sdk.export.manifest import MANIFEST, read_manifest
from duet_sdk.serving import releases
from duet_sdk.serving.config import ServingPolicy, read_config
from duet_sdk.serving.repository import Published, publish, request_rollback
from duet_sdk.tune.search import TuneError
from duet_sdk.tune.settings import ModelSettings, policy_for, read_settings


def export_of(entry: dict, export: Path | None) -> Path:
    """The export directory of release ``entry`` (``export`` if given); TuneError if it is gone or differs."""
    directory = Path(export) if export else Path(entry["export_manifest"]).parent
    if not (directory / MANIFEST).is_file():
        raise TuneError(f"--export: expected the duet-export output release {entry['version']} was published from "
                        f"(with {MANIFEST}), got {directory}")
    records = {(r["model"], r["format"]): r for r in read_manifest(directory).get("artifacts", [])}
    for model, info in entry["models"].items():
        record = records.get((model, info["format"]))
        if record is None or record.get("sha256") != info["sha256"]:
            raise TuneError(f"--export {directory}: its {model} ({info['format']}) artifacts differ from release "
                            f"{entry['version']}'s; tuning measured release {entry['version']}, so only its own export "
                            "may be published with the result")
    return directory


def publish_tuned(repo: Path, version: int, chosen: dict[str, ModelSettings], export: Path | None = None,
                  activate: bool = True, base: ServingPolicy | None = None) -> Published:
    """Publish release ``version``'s export again with ``chosen`` settings (model -> settings) as a new release."""
    repo = Path(repo)
    entry = releases.usable(releases.read_index(repo), version)
    directory = export_of(entry, export)
    base = base or ServingPolicy()
    current = {m: read_settings(read_config(repo / name / "config.pbtxt"))
               for m in [*entry["models"], *entry.get("guards", [])]
               for name in [api.release_model(m, version)]}
    unknown = sorted(set(chosen) - set(entry["models"]))
    if unknown:
        raise TuneError(f"chosen settings name models release {version} does not have: {unknown}")
    settings = current | chosen
    formats = tuple(dict.fromkeys(info["format"] for info in entry["models"].values()))
    published = publish(directory, repo, entry["target"], base, formats=formats, activate=False,
                        policies={m: policy_for(s, base) for m, s in settings.items()})
    for model, want in chosen.items():
        got = read_settings(read_config(repo / api.release_model(model, published.version) / "config.pbtxt"))
        if got != want:
            raise TuneError(f"release {published.version}: {model} was written with {got.describe()}, "
                            f"not the chosen {want.describe()}; it was not made the target")
    if activate:  # only once every config is verified: duet-serve swaps to it
        request_rollback(repo, published.version)
    return published
